"""``--z-dim``: a small shared latent, end to end. A run trains with it, its files record it and
load back with the projection, it assembles, grows and exports (outputs match eager), and a
brick of another latent size is refused in words."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest
import torch

from kfstudio.assembly.build import build_from_files
from kfstudio.assembly.rules import DifferentCommonModule, LatentSizeMismatch, check_attach
from kfstudio.cli.app import main
from kfstudio.core.checkpoint import check_resume_config
from kfstudio.core.errors import ConfigError
from kfstudio.core.factorize import FactorizeConfig
from kfstudio.core.students.fused import FrozenNetwork
from kfstudio.core.grow import FrozenCommonWithBrick, new_brick
from kfstudio.core.students.networks import ArchSpec
from kfstudio.core.tasks import Task
from kfstudio.io.bricks import list_bricks, load_brick, load_common, read_run_json
from kfstudio.io.bundle import load_bundle_network
from kfstudio.io.export import export_network, load_exported

Z = 8


@pytest.fixture(scope="module")
def z_run(tmp_path_factory):
    """One real ``kfstudio factorize --z-dim 8`` of the digits demo (one 10-way brick): its folder."""
    out = tmp_path_factory.mktemp("zdim") / "run"
    before = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = main(["factorize", "--out", str(out), "--tasks", "heads", "--z-dim", str(Z), "--epochs", "1",
                         "--batch-size", "64", "--common-width", "0.5", "--task-width", "0.25", "--threads", "1",
                         "--device", "cpu", "--quiet"])
    finally:
        torch.set_num_threads(before)
    assert code == 0
    return out


@pytest.fixture(scope="module")
def z_network(z_run):
    return build_from_files(load_common(z_run / "common.safetensors"), [load_brick(p) for p in list_bricks(z_run)])


def test_a_run_with_a_small_latent_trains_and_its_files_record_it(z_run):
    common = json.loads((z_run / "common.json").read_text())
    assert common["z_dim"] == Z and common["z_projection"] is True
    brick = json.loads(next((z_run / "bricks").glob("*.json")).read_text())
    assert brick["architecture"]["z_dim"] == Z
    run = read_run_json(z_run / "run.json")
    assert run["config"]["z_dim"] == Z
    assert run["metrics"]["tasks"]["digit"]["accuracy"] > 0.3  # ten classes: chance is 0.1
    loaded = load_common(z_run / "common.safetensors").module
    assert loaded.z_dim == Z and tuple(loaded.project.weight.shape) == (Z, loaded.stage_dims[-1])
    z_c, stages = loaded(torch.zeros(2, 1, 8, 8))
    assert z_c.shape == (2, Z) and stages[-1].shape == (2, loaded.stage_dims[-1])  # InfoMax reads the stages


def test_files_without_a_latent_size_load_as_before(digits_common):
    assert digits_common.module.project is None and not digits_common.manifest.get("z_projection")
    assert digits_common.module.z_dim == digits_common.module.stage_dims[-1]


def test_the_assembled_network_runs_fused_like_brick_by_brick_and_grows(z_network, z_run):
    x = z_network.example_input(6)
    fused, plain = z_network(x), z_network.forward_unfused(x)
    assert (fused["digit"] - plain["digit"]).abs().max() <= 1e-5
    common = load_common(z_run / "common.safetensors").module
    task = Task("parity", "digit", (0,), ("odd",), "one-vs-rest")
    brick = new_brick(common, task, ArchSpec("tiny", 0.25, 1))
    assert brick.spec.z_dim == Z and FrozenCommonWithBrick(common, "parity", brick).logits(x).shape == (6, 1)


@pytest.mark.parametrize("suffix", [".safetensors", ".onnx"])
def test_exports_with_a_small_latent_match_eager(z_network, tmp_path, suffix):
    report = export_network(z_network, tmp_path / f"net{suffix}")  # self-tested on two batch sizes
    x = z_network.example_input(5)
    with torch.no_grad():
        want = z_network.forward_unfused(x)["digit"]
    got = load_exported(report.path).task_logits(x)["digit"]  # .onnx: run by onnxruntime
    assert np.abs(np.asarray(got.detach() if hasattr(got, 'detach') else got) - want.numpy()).max() <= 1e-4
    if suffix == ".safetensors":
        rebuilt = load_bundle_network(report.path)
        assert rebuilt.common.z_dim == Z and (rebuilt.forward_unfused(x)["digit"] - want).abs().max() == 0


def test_a_brick_of_another_latent_size_is_refused_in_words(z_run, digits_common, digits_bricks):
    small = load_brick(list_bricks(z_run)[0])
    with pytest.raises(LatentSizeMismatch, match=f"shared latent of size {Z}.*common module's is "
                       f"{digits_common.module.z_dim}"):
        check_attach(digits_common, [], small)
    with pytest.raises(DifferentCommonModule, match="latent of size .*another common module"):
        check_attach(load_common(z_run / "common.safetensors"), [], digits_bricks["0"])  # a LatentSizeMismatch
    with pytest.raises(ConfigError, match="expects a shared latent of size"):
        FrozenNetwork(digits_common.module.backbone, 1, [small.module])


def test_resuming_with_another_latent_size_is_refused():
    state = {"config": json.dumps(FactorizeConfig(z_dim=Z).to_dict())}
    with pytest.raises(ConfigError, match="z_dim was 8, now None"):
        check_resume_config(state, FactorizeConfig())
    check_resume_config(state, FactorizeConfig(z_dim=Z))
    with pytest.raises(ConfigError, match="latent size of 0"):
        FactorizeConfig(z_dim=0)


@pytest.mark.parametrize("value,words", [("0", "out of range"), ("eight", "not a latent size")])
def test_the_z_dim_flag_is_range_checked(capsys, value, words):
    assert main(["factorize", "--out", "unused", "--z-dim", value]) == 2
    assert words in capsys.readouterr().err


def test_a_common_manifest_that_misstates_its_latent_is_refused(z_run, tmp_path):
    from kfstudio.core.errors import FileFormatError

    folder = tmp_path / "run"
    shutil.copytree(z_run, folder)
    manifest = json.loads((folder / "common.json").read_text())
    del manifest["z_dim"]
    (folder / "common.json").write_text(json.dumps(manifest))
    with pytest.raises(FileFormatError, match="does not say which"):
        load_common(folder / "common.safetensors")
    manifest.update(z_dim=Z, z_projection=False)  # the weights hold a projection the manifest denies
    (folder / "common.json").write_text(json.dumps(manifest))
    with pytest.raises(FileFormatError, match="do not match the architecture"):
        load_common(folder / "common.safetensors")
