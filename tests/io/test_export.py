"""Every export format: written, self-tested, runnable in a fresh process without kfstudio."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from kfstudio.assembly.build import build_from_files
from kfstudio.core.data.sources import load_data, prepare
from kfstudio.core.errors import FileFormatError
from kfstudio.io import export as export_mod
from kfstudio.io.bundle import graph_from_bundle, load_bundle_network
from kfstudio.io.export import ExportError, export_format_for, export_network, list_export_formats, load_exported

SUFFIXES = {"torchscript": ".ts.pt", "pt2": ".pt2", "onnx": ".onnx", "safetensors": ".safetensors"}


@pytest.fixture(scope="module")
def network(digits_common, digits_bricks):
    return build_from_files(digits_common, [digits_bricks[t] for t in "017"])


@pytest.fixture(scope="module")
def exported(network, tmp_path_factory):
    """Every format written once: name -> path."""
    folder = tmp_path_factory.mktemp("exports")
    return {name: export_network(network, folder / f"net{suffix}").path for name, suffix in SUFFIXES.items()}


def test_the_registry_knows_every_format():
    assert {f.name for f in list_export_formats()} == set(SUFFIXES)
    for name, suffix in SUFFIXES.items():
        assert export_format_for(f"model{suffix}").name == name
    assert export_format_for("model.bin", "onnx").name == "onnx"
    with pytest.raises(ExportError, match="Cannot tell the export format"):
        export_format_for("model.bin")
    with pytest.raises(ExportError, match="no export format 'tflite'"):
        export_format_for("model.onnx", "tflite")


@pytest.mark.parametrize("fmt", sorted(SUFFIXES))
def test_round_trip_and_manifest(fmt, exported, network):
    path = exported[fmt]
    manifest = json.loads(path.with_name(path.name + ".json").read_text())
    assert manifest["format"] == fmt and manifest["self_test"]["passed"]
    assert manifest["output_names"] == ["digit_0", "digit_1", "digit_7", "digit_prediction"]
    assert manifest["input"]["shape"] == ["batch", 1, 8, 8] and manifest["input"]["mean"] == [0.3054]
    assert manifest["teacher"]["ref"] == "builtin:digits" and len(manifest["bricks"]) == 3
    assert manifest["class_names"]["digit_7"] == ["7"] and manifest["outputs"][-1]["classes"] == [0, 1, 7, -1]
    loaded = load_exported(path)
    x = network.example_input(5)
    want = network(x)
    got = loaded.outputs(x)
    for task in ("0", "1", "7"):
        assert (loaded.task_logits(x)[task] - want[task]).abs().max() <= 1e-5
    assert torch.equal(got["digit_prediction"], want["digit_prediction"])
    # Calibrated 0/1/7 bricks answer "none of these" (-1) in every format, as the network does.
    images = prepare(load_data("builtin:digits").test, network.input_spec).x[:64]
    answers = loaded.outputs(images)["digit_prediction"]
    assert torch.equal(answers, network(images)["digit_prediction"]) and bool((answers == -1).any())


FRESH_TORCH = textwrap.dedent("""
    import sys, numpy as np, torch
    x = torch.from_numpy(np.load(sys.argv[1]))
    torch.set_grad_enabled(False)
    out = {}
    out["ts"] = [t.numpy() for t in torch.jit.load(sys.argv[2])(x)]
    out["pt2"] = [t.numpy() for t in torch.export.load(sys.argv[3]).module()(x)]
    assert "kfstudio" not in sys.modules, "kfstudio was imported"
    np.savez(sys.argv[4], **{f"{k}{i}": a for k, v in out.items() for i, a in enumerate(v)})
""")

FRESH_ONNX = textwrap.dedent("""
    import sys, numpy as np, onnxruntime as ort
    s = ort.InferenceSession(sys.argv[2], providers=["CPUExecutionProvider"])
    res = s.run(None, {s.get_inputs()[0].name: np.load(sys.argv[1])})
    assert [o.name for o in s.get_outputs()][-1] == "digit_prediction"
    assert "kfstudio" not in sys.modules and "torch" not in sys.modules
    np.savez(sys.argv[3], **{f"onnx{i}": a for i, a in enumerate(res)})
""")


def _fresh(script: str, args: list, cwd) -> None:
    """Run in an isolated interpreter (-I: no user site, no cwd or PYTHONPATH on sys.path)."""
    done = subprocess.run([sys.executable, "-I", "-c", script, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_exports_run_in_a_fresh_process_without_kfstudio(exported, network, tmp_path):
    x = network.example_input(4)
    np.save(tmp_path / "x.npy", x.numpy())
    _fresh(FRESH_TORCH, [tmp_path / "x.npy", exported["torchscript"], exported["pt2"], tmp_path / "t.npz"], tmp_path)
    _fresh(FRESH_ONNX, [tmp_path / "x.npy", exported["onnx"], tmp_path / "o.npz"], tmp_path)
    results = {**np.load(tmp_path / "t.npz"), **np.load(tmp_path / "o.npz")}
    with torch.no_grad():
        want = [v.numpy() for v in network(x).values()]
    for prefix in ("ts", "pt2", "onnx"):
        for i, w in enumerate(want[:3]):
            assert np.abs(results[f"{prefix}{i}"] - w).max() <= 1e-5
        assert (results[f"{prefix}3"] == want[3]).all() and results[f"{prefix}3"].shape == (4,)


def test_a_fused_ten_brick_assembly_agrees_with_its_bricks_in_every_format(digits_common, digits_bricks, tmp_path):
    ten = build_from_files(digits_common, [digits_bricks[str(d)] for d in range(10)])
    assert ten.fused and len(ten.fused_runner.groups) == 1          # ten bricks, one fused network
    paths = {name: export_network(ten, tmp_path / f"ten{suffix}").path for name, suffix in SUFFIXES.items()}
    x = ten.example_input(4)
    np.save(tmp_path / "x.npy", x.numpy())
    _fresh(FRESH_TORCH, [tmp_path / "x.npy", paths["torchscript"], paths["pt2"], tmp_path / "t.npz"], tmp_path)
    _fresh(FRESH_ONNX, [tmp_path / "x.npy", paths["onnx"], tmp_path / "o.npz"], tmp_path)
    results = {**np.load(tmp_path / "t.npz"), **np.load(tmp_path / "o.npz")}
    with torch.no_grad():
        want = [v.numpy() for v in ten.forward_unfused(x).values()]    # brick by brick: the reference
        bundle_out = list(load_exported(paths["safetensors"]).outputs(x).values())
    for got in ([results[f"{p}{i}"] for i in range(11)] for p in ("ts", "pt2", "onnx")):
        assert max(np.abs(g - w).max() for g, w in zip(got[:10], want[:10])) <= 1e-5
        assert (got[10] == want[10]).all()
    assert max(float((g - torch.from_numpy(w)).abs().max()) for g, w in zip(bundle_out[:10], want[:10])) <= 1e-5
    # The TorchScript file is frozen: its weights are constants of the graph, not module attributes.
    loaded = torch.jit.load(str(paths["torchscript"]))
    assert not list(loaded.parameters()) and not list(loaded.buffers())


def test_the_bundle_rebuilds_an_editable_canvas(exported, network):
    graph = graph_from_bundle(exported["safetensors"])
    assert [graph.title(n) for n in graph.attached_ids()] == ["digit 0", "digit 1", "digit 7"]
    assert graph.common.fingerprint == network.provenance.common_manifest["fingerprint"]
    rebuilt = load_bundle_network(exported["safetensors"])
    x = network.example_input(3)
    assert (rebuilt(x)["7"] - network(x)["7"]).abs().max() == 0


def test_a_failed_self_test_leaves_nothing_behind(network, tmp_path, monkeypatch):
    fmt = export_mod._FORMATS["torchscript"]
    broken = lambda path, manifest: (lambda x: [t + 1 if t.is_floating_point() else t for t in fmt.load(path, manifest)(x)])
    monkeypatch.setitem(export_mod._FORMATS, "torchscript", export_mod.ExportFormat(
        fmt.name, fmt.suffix, fmt.description, fmt.runtime, fmt.write, broken))
    (tmp_path / "keep.ts.pt").write_bytes(b"old")
    with pytest.raises(ExportError, match="differs from the network"):
        export_network(network, tmp_path / "keep.ts.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.ts.pt"]
    assert (tmp_path / "keep.ts.pt").read_bytes() == b"old"


@pytest.mark.parametrize("fmt", ["onnx", "safetensors", "pt2"])
def test_a_truncated_export_is_reported(fmt, exported, tmp_path):
    src = exported[fmt]
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    (tmp_path / (src.name + ".json")).write_text(src.with_name(src.name + ".json").read_text())
    with pytest.raises(FileFormatError, match="truncated"):
        load_exported(bad)


def test_a_manifest_from_a_newer_kfstudio_is_refused(exported, tmp_path):
    src = exported["onnx"]
    (tmp_path / src.name).write_bytes(src.read_bytes())
    manifest = json.loads(src.with_name(src.name + ".json").read_text())
    (tmp_path / (src.name + ".json")).write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(FileFormatError, match="newer KF Studio"):
        load_exported(tmp_path / src.name)
