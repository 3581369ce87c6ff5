"""Student architectures: every registered backbone, the common module, task bricks, factor networks."""

from __future__ import annotations

import pytest
import torch

from kfstudio.core.errors import ConfigError
from kfstudio.core.students.backbones import create_backbone, list_backbones, register_backbone
from kfstudio.core.students.factor_network import FactorNetwork
from kfstudio.core.students.networks import ArchSpec, BrickOutputs, BrickSpec, CommonModule, TaskBrick, count_parameters

BACKBONES = [entry.name for entry in list_backbones()]
WIDTH = 0.25  # keeps the paper-sized backbones (ResNet-18, MobileNetV2) fast on a CPU


def _x(n=2, c=3, size=16, seed=0):
    return torch.randn(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def test_the_registry_holds_the_paper_architectures():
    assert {"tiny", "resnet", "mobilenetv2"} <= set(BACKBONES)
    assert all(entry.description for entry in list_backbones())


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("in_channels", [1, 3])
def test_backbone_builds_and_returns_its_stages(name, in_channels):
    torch.manual_seed(0)
    backbone = create_backbone(name, in_channels, WIDTH)
    feats = backbone(_x(c=in_channels))
    assert isinstance(feats, list) and len(feats) == len(backbone.stage_channels) >= 2
    for f, channels in zip(feats, backbone.stage_channels):
        assert f.dim() == 4 and f.shape[:2] == (2, channels)
        assert torch.isfinite(f).all()
    sizes = [f.shape[-1] for f in feats]
    assert sizes == sorted(sizes, reverse=True) and sizes[-1] < 16  # shallow to deep, downsampled


@pytest.mark.parametrize("name", BACKBONES)
def test_width_scales_the_backbone(name):
    narrow = create_backbone(name, 3, 0.25)
    wide = create_backbone(name, 3, 0.5)
    assert count_parameters(wide) > count_parameters(narrow)
    assert all(c % 4 == 0 and c >= 4 for c in narrow.stage_channels)


@pytest.mark.parametrize("name", BACKBONES)
def test_common_module_pools_every_stage(name):
    torch.manual_seed(0)
    common = CommonModule(ArchSpec(name, WIDTH, 3)).eval()
    assert common.stage_dims == list(common.backbone.stage_channels)
    assert common.z_dim == common.stage_dims[-1]
    x = _x()
    z_c, pooled = common(x)
    assert [tuple(p.shape) for p in pooled] == [(2, d) for d in common.stage_dims]
    assert z_c is pooled[-1]
    torch.testing.assert_close(pooled[-1], common.backbone(x)[-1].mean(dim=(2, 3)))


@pytest.mark.parametrize("name", BACKBONES)
@pytest.mark.parametrize("gaussian", [False, True])
def test_task_brick_of_every_backbone(name, gaussian):
    torch.manual_seed(0)
    spec = BrickSpec(ArchSpec(name, WIDTH, 3), z_dim=12, num_outputs=4, gaussian=gaussian)
    brick = TaskBrick(spec)
    x, z_c = _x(n=3), torch.randn(3, 12)
    out = brick.forward_train(x, z_c)
    assert isinstance(out, BrickOutputs)
    assert out.logits.shape == (3, 4) and out.task_logits.shape == (3, 4) and out.z.shape == (3, 12)
    assert (out.mu is not None) == gaussian and (out.logvar is not None) == gaussian
    brick.eval()
    z, _, _ = brick.represent(x)
    torch.testing.assert_close(brick(x, z_c), brick.head(z_c + z))  # logit = W (z_c + z_k) + b


def test_plain_brick_heads_and_projection():
    torch.manual_seed(0)
    brick = TaskBrick(BrickSpec(ArchSpec("tiny", WIDTH, 1), z_dim=8, num_outputs=1)).eval()
    assert brick.project.bias is None  # the TSN projection is bias-free
    assert brick.project.out_features == 8
    x, z_c = _x(n=3, c=1), torch.randn(3, 8)
    out = brick.forward_train(x, z_c)
    torch.testing.assert_close(out.task_logits, brick.task_head(out.z))  # the task-only head reads z_k alone
    torch.testing.assert_close(out.logits, brick.head(z_c + out.z))
    torch.testing.assert_close(brick(x, z_c), out.logits)
    assert out.mu is None and out.logvar is None


def test_gaussian_brick_samples_in_training_and_uses_mu_otherwise():
    torch.manual_seed(0)
    brick = TaskBrick(BrickSpec(ArchSpec("tiny", WIDTH, 1), z_dim=6, num_outputs=2, gaussian=True))
    assert brick.project.out_features == 12  # mu and logvar
    x = _x(n=4, c=1)
    brick.train()
    torch.manual_seed(1)
    z1, mu1, logvar1 = brick.represent(x)
    torch.manual_seed(2)
    z2, mu2, _ = brick.represent(x)
    assert mu1.shape == logvar1.shape == z1.shape == (4, 6)
    assert not torch.allclose(z1, z2)  # a fresh sample each time
    torch.testing.assert_close(mu1, mu2)  # BatchNorm in train mode, same batch: same mu
    brick.eval()
    z, mu, logvar = brick.represent(x)
    torch.testing.assert_close(z, mu)
    assert logvar is not None


@pytest.mark.parametrize("name", BACKBONES)
def test_factor_network_runs_the_common_module_once_and_each_brick_on_it(name):
    torch.manual_seed(0)
    common = CommonModule(ArchSpec(name, WIDTH, 3))
    names = ["shape", "digit 7", "a.b"]
    bricks = {n: TaskBrick(BrickSpec(ArchSpec("tiny", WIDTH, 3), common.z_dim, k)) for n, k in zip(names, (3, 1, 2))}
    net = FactorNetwork(common, bricks).eval()
    assert net.task_names == names
    x = _x(n=3)
    out = net(x)
    assert list(out) == names
    z_c, _ = common(x)
    for n in names:
        assert net.brick(n) is bricks[n]
        torch.testing.assert_close(out[n], bricks[n](x, z_c))
    stages, train_out = net.forward_train(x)
    assert len(stages) == len(common.stage_dims)
    assert {n: o.logits.shape[1] for n, o in train_out.items()} == {"shape": 3, "digit 7": 1, "a.b": 2}


def test_factor_network_keys_do_not_collide():
    common = CommonModule(ArchSpec("tiny", WIDTH, 1))
    spec = BrickSpec(ArchSpec("tiny", WIDTH, 1), common.z_dim, 1)
    names = ["a.b", "a_b", "a b", "a-b"]
    net = FactorNetwork(common, {n: TaskBrick(spec) for n in names})
    assert len(net.bricks) == 4
    assert len({id(net.brick(n)) for n in names}) == 4
    state = net.state_dict()  # keys with no dots of their own: saving and loading round-trips
    FactorNetwork(common, {n: TaskBrick(spec) for n in names}).load_state_dict(state)


def test_unknown_architecture_is_a_config_error_listing_the_choices():
    with pytest.raises(ConfigError) as info:
        create_backbone("vgg16", 3)
    message = str(info.value)
    assert "'vgg16'" in message
    for name in BACKBONES:
        assert name in message
    with pytest.raises(ConfigError):
        CommonModule(ArchSpec("vgg16", 1.0, 3))


@pytest.mark.parametrize("width", [0.0, 0.01, 9.0])
def test_width_out_of_range(width):
    with pytest.raises(ConfigError, match="width"):
        create_backbone("tiny", 3, width)


def test_specs_round_trip_and_reject_incomplete_dicts():
    arch = ArchSpec("resnet", 0.5, 3)
    assert ArchSpec.from_dict(arch.to_dict()) == arch
    brick = BrickSpec(arch, 64, 10, gaussian=True)
    assert BrickSpec.from_dict(brick.to_dict()) == brick
    with pytest.raises(ConfigError, match="incomplete"):
        ArchSpec.from_dict({"arch": "tiny"})
    with pytest.raises(ConfigError, match="incomplete"):
        BrickSpec.from_dict({**arch.to_dict(), "z_dim": "many", "num_outputs": 3})


def test_a_registered_backbone_is_built_by_name():
    from kfstudio.core.students import backbones as students

    @register_backbone("test-only-linear", "for this test")
    def _build(in_channels, width, stem_stride):
        return students.StagedBackbone(students.conv_bn_relu(in_channels, 4, stride=stem_stride),
                                       [students.conv_bn_relu(4, 4, stride=2), students.conv_bn_relu(4, 8, stride=2)],
                                       [4, 8])

    try:
        assert "test-only-linear" in [e.name for e in list_backbones()]
        common = CommonModule(ArchSpec("test-only-linear", 1.0, 1))
        assert common.z_dim == 8
    finally:
        students._BACKBONES.pop("test-only-linear", None)
