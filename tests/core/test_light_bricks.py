"""Light bricks (a brick reads a stage of the common module, not the image) on every path:
fused training and inference, brick files, attach rules, assembly of any subset, the four
export formats, resume, grow and DEPARA."""

from __future__ import annotations

import copy
import json
import shutil

import pytest
import torch
from test_fused import _outputs_diff, _scramble_batchnorm

from kfstudio.assembly.build import build_from_files
from kfstudio.assembly.rules import StageNotOffered, can_attach, check_attach
from kfstudio.core.students.brick_input import channels_to_read, light_backbone, stage_mismatch
from kfstudio.core.checkpoint import check_resume_config
from kfstudio.core.measures.cost import count_macs
from kfstudio.core.measures.depara import brick_layer
from kfstudio.core.errors import ConfigError
from kfstudio.core.factorize import FactorizeConfig, factorize
from kfstudio.core.students.fused import FrozenNetwork
from kfstudio.core.grow import GrowConfig, new_brick
from kfstudio.core.students.backbones import list_backbones
from kfstudio.core.students.factor_network import FactorNetwork
from kfstudio.core.students.networks import ArchSpec, BrickSpec, CommonModule, TaskBrick
from kfstudio.core.tasks import Task
from kfstudio.io.bricks import list_bricks, load_brick, load_common, save_factorization
from kfstudio.io.export import export_network, load_exported
from kfstudio.io.grow_run import iter_add_brick

ARCHS = [e.name for e in list_backbones()]


def _light_network(arch: str, reads: str, fused: bool = True, n: int = 3) -> FactorNetwork:
    torch.manual_seed(0)
    common = CommonModule(ArchSpec(arch, 0.25, 3))
    channels = channels_to_read(reads, common.offered_stages)
    bricks = {f"t{i}": TaskBrick(BrickSpec(ArchSpec(arch, 0.25, 3), common.z_dim, 1 + i % 2, False, reads, channels))
              for i in range(n)}
    net = FactorNetwork(common, bricks, fused=fused)
    _scramble_batchnorm(net, 1)
    return net


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("reads", ["stage1", "stage2"])
def test_fused_light_bricks_train_and_run_as_one_by_one(arch, reads):
    fused = _light_network(arch, reads)
    unfused = copy.deepcopy(fused)
    unfused.fused = False
    x = torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    _, out_f = fused.train().forward_train(x)
    _, out_u = unfused.train().forward_train(x)
    assert _outputs_diff(out_f, out_u) <= 1e-5
    # Running statistics written back into each brick, as one by one.
    for t in fused.task_names:
        assert torch.allclose(fused.brick(t).backbone.entry[1].running_mean, unfused.brick(t).backbone.entry[1].running_mean)
    fused.eval(), unfused.eval()
    want = unfused(x)
    frozen = FrozenNetwork(fused.common.backbone, 3, [fused.brick(t) for t in fused.task_names])(x)
    assert max(float((f - want[t]).detach().abs().max()) for f, t in zip(frozen, fused.task_names)) <= 1e-5
    assert max(float((fused(x)[t] - want[t]).detach().abs().max()) for t in want) <= 1e-5


def test_a_light_brick_skips_its_own_stem_and_early_stages():
    image = TaskBrick(BrickSpec(ArchSpec("tiny", 0.5, 3), 32, 2))
    light = TaskBrick(BrickSpec(ArchSpec("tiny", 0.5, 3), 32, 2, reads="stage2", read_channels=16))
    assert not hasattr(light.backbone, "stem") and len(light.backbone.stages) == 1
    assert light.backbone.entry[0].in_channels == 16
    assert sum(p.numel() for p in light.parameters()) < sum(p.numel() for p in image.parameters())
    z_c = torch.zeros(1, 32)
    image_macs = count_macs(lambda: image(torch.zeros(1, 3, 32, 32), z_c), image)
    assert count_macs(lambda: light(torch.zeros(1, 16, 16, 16), z_c), light) < image_macs / 2
    with pytest.raises(ConfigError, match="has 3 stages, so it cannot start after stage 3"):
        light_backbone("tiny", 0.5, 3, "stage3", 16)
    with pytest.raises(ConfigError, match="the image or a stage"):
        BrickSpec(ArchSpec("tiny", 0.5, 3), 32, 2, reads="middle", read_channels=16)


def test_the_refusals_say_which_stage_in_words():
    assert stage_mismatch("stage2", 32, [16]) == ("reads stage 2 of its common module; this common module has only "
                                                  "1 stage")
    assert "stage 1 has 16" in stage_mismatch("stage1", 8, [16, 32])
    assert stage_mismatch("image", None, []) is None and stage_mismatch("stage1", 16, [16, 32]) is None
    with pytest.raises(ConfigError, match="has only 3 stages"):
        channels_to_read("stage4", [8, 16, 32])


def test_old_brick_descriptions_read_the_image():
    old = {"arch": "tiny", "width": 0.5, "in_channels": 1, "z_dim": 32, "num_outputs": 1}
    assert BrickSpec.from_dict(old).reads == "image"
    light = BrickSpec(ArchSpec("tiny", 0.5, 1), 32, 1, reads="stage1", read_channels=8)
    assert BrickSpec.from_dict(light.to_dict()) == light


# ---------------------------------------------------------------- a real light run, end to end

@pytest.fixture(scope="module")
def light_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("light_run")
    config = FactorizeConfig(teacher="builtin:digits", data="builtin:digits", epochs=1, common_width=0.5,
                             task_width=0.25, device="cpu", brick_input="stage1", checkpoint=str(out / "checkpoint.pt"))
    result = factorize(config)
    save_factorization(result, out)
    return result, out


@pytest.fixture(scope="module")
def light_files(light_run):
    out = light_run[1]
    return load_common(out / "common.safetensors"), {b.task.name: b for b in map(load_brick, list_bricks(out))}


def test_light_brick_files_say_what_they_read(light_run, light_files, tmp_path):
    result, out = light_run
    manifest = json.loads((out / "bricks" / "3.json").read_text())
    assert manifest["architecture"]["reads"] == "stage1" and manifest["architecture"]["read_channels"] == 8
    assert json.loads((out / "run.json").read_text())["config"]["brick_input"] == "stage1"
    common, bricks = light_files
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        want = result.network.eval()(x)["3"]
        got = common.module.encode(x).run(bricks["3"].module)
    assert (got - want).abs().max() <= 1e-5


def test_a_subset_of_light_bricks_gives_the_full_networks_outputs(light_run, light_files):
    result, _ = light_run
    common, bricks = light_files
    x = torch.randn(6, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    reference = copy.deepcopy(result.network).eval()
    reference.fused = False          # the full network, brick by brick
    with torch.no_grad():
        full = reference(x)
        for subset in (["3"], ["0", "7"], [str(d) for d in range(10)]):
            net = build_from_files(common, [bricks[t] for t in subset])
            fused, unfused = net(x), net.forward_unfused(x)
            for t in subset:
                assert (fused[t] - full[t]).abs().max() <= 1e-5
                assert torch.equal(unfused[t], full[t])


def test_a_light_brick_attaches_only_where_its_stage_is_offered(light_files, digits_common):
    common, bricks = light_files
    assert can_attach(common, [], bricks["3"])
    # The digits fixture's common module is of the same width but another run: its stage 1 has 8 channels too,
    # so the fingerprint refuses; a wider one offers 16 and the stage rule says so in words.
    wide = copy.copy(digits_common)
    wide.module = CommonModule(ArchSpec("tiny", 1.0, 1), z_dim=32)   # the same latent size: the stage decides
    with pytest.raises(StageNotOffered, match="reads stage 1 of its common module with 8 channels; this common "
                                              "module's stage 1 has 16"):
        check_attach(wide, [], bricks["3"])


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".ts.pt"), ("pt2", ".pt2"),
                                        ("safetensors", ".safetensors")])
def test_light_assemblies_export_in_every_format(fmt, suffix, light_files, tmp_path):
    common, bricks = light_files
    net = build_from_files(common, [bricks[t] for t in "017"])
    path = export_network(net, tmp_path / f"light{suffix}").path
    x = net.example_input(4)
    with torch.no_grad():
        want = net.forward_unfused(x)
    got = load_exported(path).task_logits(x)
    assert max(float((got[t] - want[t]).abs().max()) for t in "017") <= 1e-5


def test_resuming_with_another_brick_input_is_refused(light_run):
    saved = {"config": json.dumps(light_run[0].config.to_dict())}
    with pytest.raises(ConfigError, match="brick_input was 'stage1', now 'image'"):
        check_resume_config(saved, FactorizeConfig(**{**light_run[0].config.to_dict(), "imb": light_run[0].config.imb,
                                                      "brick_input": "image"}))
    old = {"config": json.dumps({k: v for k, v in light_run[0].config.to_dict().items() if k != "brick_input"})}
    check_resume_config(old, FactorizeConfig(**{**light_run[0].config.to_dict(), "imb": light_run[0].config.imb,
                                                "brick_input": "image"}))   # old checkpoints trained image bricks


def test_a_grown_brick_reads_what_the_runs_bricks_read(light_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(light_run[1], run)
    gen = iter_add_brick(run, GrowConfig(data="builtin:digits", task="low=0,1,2", epochs=1, batch_size=64,
                                         device="cpu", seed=0))
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            added = stop.value
            break
    assert added.result.brick.spec.reads == "stage1"
    common = load_common(run / "common.safetensors")
    grown = load_brick(run / "bricks" / "low.safetensors")
    assert can_attach(common, [], grown)
    with pytest.raises(ConfigError, match="has only 3 stages"):
        new_brick(common.module, Task.from_dict(grown.manifest["task"]), ArchSpec("resnet", 0.25, 1), reads="stage4")


def test_depara_reads_light_bricks(light_files):
    common, bricks = light_files
    out = brick_layer(bricks["3"].module, common.module)(torch.randn(3, 1, 8, 8))
    assert out.shape == (3, 1)
