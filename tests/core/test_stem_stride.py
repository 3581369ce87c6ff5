"""The students' stem stride: 2 halves a large image before the first stage ("auto" from 32 px up),
so a cost budget buys wider layers; it travels through manifests, fusing, assembly, export and grow."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from test_fused import _outputs_diff, _scramble_batchnorm

from kfstudio.assembly.build import build_from_files
from kfstudio.core.errors import ConfigError
from kfstudio.core.factorize import FactorizeConfig, factorize
from kfstudio.core.students.backbones import create_backbone, list_backbones, resolve_stem_stride
from kfstudio.core.students.factor_network import FactorNetwork
from kfstudio.core.students.networks import ArchSpec, BrickSpec, CommonModule, TaskBrick
from kfstudio.io.bricks import list_bricks, load_brick, load_common, save_factorization
from kfstudio.io.export import export_network, load_exported
from kfstudio.io.grow_run import brick_architecture
from kfstudio.io.manifests import ARCH
from kfstudio.io.schema import Invalid

ARCHS = [e.name for e in list_backbones()]


@pytest.mark.parametrize(("choice", "height", "width", "stride"), [
    ("auto", 32, 32, 2), ("auto", 31, 64, 1), ("auto", 8, 8, 1), ("auto", 224, 224, 2), (1, 64, 64, 1), (2, 8, 8, 2)])
def test_auto_halves_images_of_32_px_or_more(choice, height, width, stride):
    assert resolve_stem_stride(choice, height, width) == stride


@pytest.mark.parametrize("bad", [0, 3, "2", True, None])
def test_other_strides_are_refused_in_words(bad):
    with pytest.raises(ConfigError, match="stem stride is 1"):
        resolve_stem_stride(bad, 32, 32)
    with pytest.raises(ConfigError, match="stem stride"):
        FactorizeConfig(stem_stride=bad)


@pytest.mark.parametrize("arch", ARCHS)
def test_a_stride_of_two_halves_every_stage(arch):
    x = torch.randn(2, 3, 32, 32)
    full, half = (create_backbone(arch, 3, 0.25, s).eval().all_stages(x) for s in (1, 2))
    assert [f.shape[-1] for f in full] == [2 * h.shape[-1] for h in half]
    assert [f.shape[1] for f in full] == [h.shape[1] for h in half]


def test_architecture_descriptions_keep_old_files_as_they_were():
    assert ArchSpec("tiny", 0.5, 3).to_dict() == {"arch": "tiny", "width": 0.5, "in_channels": 3}
    strided = ArchSpec("tiny", 0.5, 3, 2)
    assert ArchSpec.from_dict(strided.to_dict()) == strided
    assert ArchSpec.from_dict({"arch": "tiny", "width": 0.5, "in_channels": 3}).stem_stride == 1
    with pytest.raises(ConfigError):
        ArchSpec("tiny", 0.5, 3, "auto")
    for bad in (3, 0, True, "2"):
        with pytest.raises(Invalid, match="stem_stride"):
            ARCH({"arch": "tiny", "width": 0.5, "in_channels": 3, "stem_stride": bad}, "architecture")


@pytest.mark.parametrize("arch", ARCHS)
def test_strided_image_bricks_fuse_to_the_same_outputs(arch):
    torch.manual_seed(0)
    net = ArchSpec(arch, 0.25, 3, 2)
    common = CommonModule(net)
    bricks = {f"t{i}": TaskBrick(BrickSpec(net, common.z_dim, 2)) for i in range(3)}
    fused = FactorNetwork(common, bricks, fused=True)
    _scramble_batchnorm(fused, 2)
    unfused = copy.deepcopy(fused)
    unfused.fused = False
    x = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    assert _outputs_diff(fused.train().forward_train(x)[1], unfused.train().forward_train(x)[1]) <= 1e-5
    fused.eval(), unfused.eval()
    want, got = unfused(x), fused(x)
    assert max(float((got[t] - want[t]).detach().abs().max()) for t in want) <= 1e-5


# ---------------------------------------------------------------- a real 32x32 run, end to end

@pytest.fixture(scope="module")
def strided_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("strided_run")
    config = FactorizeConfig(teacher="builtin:shapes-hard", data="builtin:shapes-hard", epochs=1, common_width=0.5,
                             task_width=0.25, device="cpu", brick_input="image", stem_stride="auto",
                             checkpoint=str(out / "checkpoint.pt"))
    result = factorize(config)
    save_factorization(result, out)
    return result, out


def test_a_32px_run_starts_at_half_resolution_and_says_so(strided_run):
    result, out = strided_run
    assert json.loads((out / "common.json").read_text())["architecture"]["stem_stride"] == 2
    brick = json.loads(next(iter(list_bricks(out))).with_suffix(".json").read_text())
    assert brick["architecture"]["stem_stride"] == 2
    assert json.loads((out / "run.json").read_text())["config"]["stem_stride"] == 2   # what "auto" chose
    assert result.network.common.backbone.stem[0].stride == (2, 2)


def test_strided_files_assemble_and_export_to_the_trained_networks_outputs(strided_run, tmp_path):
    result, out = strided_run
    common = load_common(out / "common.safetensors")
    bricks = [load_brick(p) for p in list_bricks(out)]
    network = build_from_files(common, bricks[:2])
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        want = result.network.eval()(x)
        got = network(x)
    for brick in bricks[:2]:
        assert (got[brick.task.name] - want[brick.task.name]).abs().max() <= 1e-4
    path = export_network(network, tmp_path / "net.onnx", "onnx").path
    exported = load_exported(path).task_logits(x)
    assert max(float((exported[b.task.name] - got[b.task.name]).abs().max()) for b in bricks[:2]) <= 1e-4


def test_a_brick_grown_on_a_run_without_bricks_starts_as_its_common_module(strided_run, tmp_path):
    _, out = strided_run
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("common.json", "common.safetensors", "run.json"):
        (bare / name).write_bytes((out / name).read_bytes())
    net, _gaussian, reads = brick_architecture(bare)
    assert net.stem_stride == 2 and reads == "image"
