"""int8 export: a quantized ONNX file that onnxruntime runs, agrees with the float network, and says so."""

from __future__ import annotations

import json

import onnx
import pytest
import torch

from kfstudio.assembly.build import build_from_files
from kfstudio.core.data.sources import load_data, prepare
from kfstudio.io import int8 as Q
from kfstudio.io.bricks import list_bricks, load_brick, load_common
from kfstudio.io.export import load_exported


@pytest.fixture(scope="module")
def digits_network(digits_run):
    common = load_common(digits_run[1] / "common.safetensors")
    return build_from_files(common, [load_brick(p) for p in list_bricks(digits_run[1])]).eval()


@pytest.fixture(scope="module")
def digits_int8(digits_network):
    return Q.int8_data(load_data("builtin:digits"), digits_network)


def test_int8_file_runs_and_agrees_with_the_float_network(digits_network, digits_int8, tmp_path):
    import onnxruntime as ort

    out = tmp_path / "digits-int8.onnx"
    report = Q.export_int8(digits_network, out, digits_int8)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["digits-int8.onnx", "digits-int8.onnx.json"]
    ops = {n.op_type for n in onnx.load(str(out)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # really quantized, not the float graph renamed

    test = load_data("builtin:digits").test
    x = prepare(test, digits_network.input_spec).x
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    int8_choice = torch.from_numpy(session.run(["digit_prediction"], {"input": x.numpy()})[0])
    with torch.no_grad():
        float_choice = digits_network(x)["digit_prediction"]
    agreement = float((int8_choice == float_choice).float().mean())
    assert agreement >= 0.97

    manifest = json.loads(out.with_name("digits-int8.onnx.json").read_text())
    recorded = manifest["int8"]
    assert recorded["format"] == Q.QUANT_FORMAT and recorded["calibration_images"] == 300
    assert recorded["images"] == len(x) and recorded["data"] == "builtin:digits"
    assert recorded["tasks"]["digit"]["agreement"] == pytest.approx(agreement, abs=1e-6)
    float_accuracy = float((float_choice == test.labels["digit"]).float().mean())
    int8_accuracy = float((int8_choice == test.labels["digit"]).float().mean())
    assert recorded["worst_accuracy_difference"] == pytest.approx(int8_accuracy - float_accuracy, abs=1e-6)
    assert 0 < recorded["max_logit_difference"] < 1.0
    assert manifest["sha256"] and report.int8 == recorded
    assert "checked on 360 test images" in report.describe() and "points against the float network" in report.describe()
    exported = load_exported(out)   # the manifest describes this file: evaluate and the studio open it
    assert set(exported.task_logits(x[:2])) == {str(d) for d in range(10)}


def test_a_failing_quantizer_is_a_sentence_and_leaves_nothing(digits_network, digits_int8, tmp_path, monkeypatch):
    from onnxruntime import quantization

    def broken(*_args, **_kwargs):
        raise RuntimeError("Unsupported operator Foo\nmore detail")

    monkeypatch.setattr(quantization, "quantize_static", broken)
    with pytest.raises(Q.Int8Error) as failed:
        Q.export_int8(digits_network, tmp_path / "net.onnx", digits_int8)
    assert "onnxruntime's quantizer could not make an int8 version" in str(failed.value)
    assert "Unsupported operator Foo" in str(failed.value) and "\n" not in str(failed.value)
    assert list(tmp_path.iterdir()) == []


def test_int8_refuses_another_format(digits_network, digits_int8, tmp_path):
    with pytest.raises(Q.Int8Error, match="int8 export is an ONNX file"):
        Q.export_int8(digits_network, tmp_path / "net.pt2", digits_int8)
    assert list(tmp_path.iterdir()) == []
