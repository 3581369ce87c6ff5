"""Fused bricks compute what the bricks compute one by one: logits, training steps, running
statistics, for every student architecture, Gaussian bricks, N = 1, 2, 3, 10 and mixed
architectures."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from kfstudio.core.errors import ConfigError
from kfstudio.core.students.fused import FrozenNetwork, FusedBricks, group_by_architecture
from kfstudio.core.students.backbones import list_backbones
from kfstudio.core.students.factor_network import FactorNetwork
from kfstudio.core.students.networks import ArchSpec, BrickSpec, CommonModule, TaskBrick

ARCHS = [e.name for e in list_backbones()]
TOL = 1e-5


def _scramble_batchnorm(module: nn.Module, seed: int) -> None:
    """Non-trivial BatchNorm statistics and affine terms, so folding and stacking are really tested."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d):
                for t, lo, hi in ((m.running_mean, -0.5, 0.5), (m.running_var, 0.5, 2.0), (m.weight, 0.5, 1.5),
                                  (m.bias, -0.3, 0.3)):
                    t.copy_(torch.rand(t.shape, generator=g) * (hi - lo) + lo)


def _network(archs: list[str], gaussian: list[bool] | bool = False, outputs: list[int] | None = None,
             fused: bool = True, seed: int = 0) -> FactorNetwork:
    torch.manual_seed(seed)
    common = CommonModule(ArchSpec("tiny", 0.25, 3))
    gaussian = gaussian if isinstance(gaussian, list) else [gaussian] * len(archs)
    outputs = outputs or [1 + i % 3 for i in range(len(archs))]
    bricks = {f"task {i}": TaskBrick(BrickSpec(ArchSpec(a, 0.25, 3), common.z_dim, o, g))
              for i, (a, g, o) in enumerate(zip(archs, gaussian, outputs))}
    net = FactorNetwork(common, bricks, fused=fused)
    _scramble_batchnorm(net, seed + 1)
    return net


def _pair(*args, **kwargs) -> tuple[FactorNetwork, FactorNetwork]:
    """The same network twice (same weights and statistics): fused and brick by brick."""
    fused = _network(*args, **kwargs)
    unfused = copy.deepcopy(fused)
    unfused.fused = False
    return fused, unfused


def _x(n: int = 3, size: int = 12, seed: int = 5) -> torch.Tensor:
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _max_diff(a: dict, b: dict) -> float:
    assert list(a) == list(b)
    return max(float((a[k] - b[k]).detach().abs().max()) for k in a)


def _outputs_diff(a: dict, b: dict) -> float:
    worst = 0.0
    for k in a:
        for field in ("logits", "task_logits", "z", "mu", "logvar"):
            u, v = getattr(a[k], field), getattr(b[k], field)
            assert (u is None) == (v is None)
            if u is not None:
                assert u.shape == v.shape
                worst = max(worst, float((u - v).detach().abs().max()))
    return worst


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("gaussian", [False, True])
@pytest.mark.parametrize("n", [1, 2, 3, 10])
def test_fused_logits_match_the_bricks_in_train_and_eval(arch, gaussian, n):
    fused, unfused = _pair([arch] * n, gaussian)
    x = _x()
    fused.eval(), unfused.eval()
    with torch.no_grad():
        assert _max_diff(fused(x), unfused(x)) <= TOL
    fused.train(), unfused.train()
    torch.manual_seed(7)
    stages_f, out_f = fused.forward_train(x)
    torch.manual_seed(7)
    stages_u, out_u = unfused.forward_train(x)
    assert _outputs_diff(out_f, out_u) <= TOL
    assert all(torch.equal(a, b) for a, b in zip(stages_f, stages_u))
    if gaussian:   # training draws noise: mu and z differ, as they do brick by brick
        assert all((o.z - o.mu).abs().max() > 0 for o in out_f.values())


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("gaussian", [False, True])
def test_frozen_fused_network_matches_the_bricks_in_eval(arch, gaussian):
    _, unfused = _pair([arch] * 3, gaussian)
    unfused.eval()
    bricks = [unfused.brick(t) for t in unfused.task_names]
    frozen = FrozenNetwork(unfused.common.backbone, 3, bricks)
    x = _x()
    with torch.no_grad():
        want = unfused(x)
        got = dict(zip(unfused.task_names, frozen(x)))
    assert _max_diff(got, want) <= TOL
    # BatchNorm was folded into the convolutions: no BatchNorm or affine layer is left.
    kinds = {type(m).__name__ for m in frozen.modules()}
    assert "_FrozenAffine" not in kinds and not any(isinstance(m, nn.BatchNorm2d) for m in frozen.modules())


def test_mixed_architectures_run_as_one_fused_group_each():
    archs = ["tiny", "resnet", "tiny", "mobilenetv2", "resnet", "tiny"]
    gaussian = [False, False, True, False, False, False]
    fused, unfused = _pair(archs, gaussian, outputs=[1, 2, 3, 1, 1, 2])
    bricks = [fused.brick(t) for t in fused.task_names]
    assert group_by_architecture(bricks) == [[0, 5], [1, 4], [2], [3]]
    assert len(fused.fused_groups) == 4
    x = _x()
    fused.eval(), unfused.eval()
    with torch.no_grad():
        assert _max_diff(fused(x), unfused(x)) <= TOL
        frozen = FrozenNetwork(unfused.common.backbone, 3, [unfused.brick(t) for t in unfused.task_names])
        assert _max_diff(dict(zip(unfused.task_names, frozen(x))), unfused(x)) <= TOL
    fused.train(), unfused.train()
    torch.manual_seed(3)
    _, out_f = fused.forward_train(x)
    torch.manual_seed(3)
    _, out_u = unfused.forward_train(x)
    assert list(out_f) == fused.task_names and _outputs_diff(out_f, out_u) <= TOL


def _loss(outputs: dict, stages: list) -> torch.Tensor:
    total = sum(s.pow(2).mean() for s in stages)
    for o in outputs.values():
        total = total + o.logits.logsumexp(1).mean() + o.task_logits.pow(2).mean() + o.z.pow(2).mean()
        if o.mu is not None:
            total = total + o.logvar.exp().mean() + o.mu.abs().mean()
    return total


def _train_steps(net: FactorNetwork, steps: int) -> torch.optim.Optimizer:
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net.train()
    for step in range(steps):
        torch.manual_seed(100 + step)
        stages, outputs = net.forward_train(_x(4, seed=step))
        opt.zero_grad(set_to_none=True)
        _loss(outputs, stages).backward()
        opt.step()
    return opt


@pytest.mark.parametrize("archs, gaussian", [(["tiny"] * 10, False), (["resnet"] * 2, True),
                                             (["mobilenetv2"] * 2, False), (["tiny", "resnet", "tiny"], True)])
def test_a_training_step_gives_the_same_parameters_and_statistics(archs, gaussian):
    fused, unfused = _pair(archs, gaussian)
    before = {k: v.clone() for k, v in fused.state_dict().items()}
    opt_f, opt_u = _train_steps(fused, 1), _train_steps(unfused, 1)
    state_f, state_u = fused.state_dict(), unfused.state_dict()
    assert list(state_f) == list(state_u) == list(before)          # checkpoints keep their keys
    for key, value in state_f.items():
        assert (value.float() - state_u[key].float()).abs().max() <= TOL, key
    for key in fused._keys:   # every brick got its own gradient, from the image-side conv to the heads
        stem = next(n for n, _ in fused.bricks[key].named_parameters())
        for name in (stem, "project.weight", "head.weight", "task_head.weight"):
            assert not torch.equal(before[f"bricks.{key}.{name}"], state_f[f"bricks.{key}.{name}"]), name
    means = [k for k in before if k.startswith("bricks.") and k.endswith("running_mean")]
    assert means and all(not torch.equal(before[k], state_f[k]) for k in means)  # statistics written back
    assert all(int(state_f[k]) == 1 for k in before if k.endswith("num_batches_tracked"))
    # The optimizer state is per brick parameter, exactly as brick by brick.
    assert len(opt_f.state) == len(opt_u.state) == len(list(fused.parameters()))


def test_checkpoints_move_between_fused_and_unfused_networks():
    fused, _ = _pair(["tiny"] * 3)
    _train_steps(fused, 1)
    other = _network(["tiny"] * 3, fused=False, seed=9)
    other.load_state_dict(fused.state_dict())
    other.fused = True                       # the same network, now run fused
    fused.eval(), other.eval()
    x = _x()
    with torch.no_grad():
        assert _max_diff(fused(x), other(x)) == 0


def test_fused_runner_adds_no_weights_of_its_own():
    net = _network(["tiny"] * 3)
    for runner in net.fused_groups:
        assert not list(runner.parameters()) and not list(runner.buffers())
    assert sum(p.numel() for p in net.parameters()) == sum(p.numel() for p in _network(["tiny"] * 3, fused=False).parameters())


def test_bricks_of_different_architectures_cannot_share_one_runner():
    net = _network(["tiny", "resnet"], fused=False)
    with pytest.raises(ConfigError, match="one architecture"):
        FusedBricks([net.brick(t) for t in net.task_names])
