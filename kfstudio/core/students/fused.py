"""Fused bricks: N task bricks of one architecture run as one batched network.

Bricks of one common module usually share one architecture, so their backbones can run
as a single network whose weights are theirs stacked: the convolution that reads the
image concatenates the bricks' output channels, every later convolution becomes a
grouped one (``groups = N``, or ``N x groups`` for depthwise), BatchNorm runs over the
concatenated channels, and the projections and heads become batched products. It is the
same arithmetic, reordered, in a tenth of the operator calls: per-op dispatch, not
multiply-adds, is what N small backbones run one after another cost. Light bricks
(``kfstudio.core.students.brick_input``) fuse the same way: their 1x1 entry reads the common module's
stage map as the others read the image.

Two runners:

- ``FusedBricks`` (training and evaluation while factorizing) holds no weights of its own:
  every call stacks the bricks' own parameters (``torch.cat`` is differentiable, so each
  brick's slice gets its gradient) and writes the BatchNorm running statistics back into
  each brick, exactly as the bricks run one by one would. Brick state_dicts, optimizer
  state and checkpoints stay per brick.
- ``FrozenBricks`` / ``freeze_backbone`` (assembled networks, exports) copy the eval-mode
  weights once, pre-stacked, with BatchNorm folded into the convolutions and projection and
  head folded into one matrix.

Public API: ``fuse_key``, ``group_by_architecture``, ``FusedBricks``, ``FrozenBricks``,
``freeze_backbone``, ``FrozenBackbone``.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from kfstudio.core.students.brick_input import offered_stages, stage_mismatch, stage_number
from kfstudio.core.errors import ConfigError
from kfstudio.core.students.backbones import Backbone, global_pool
from kfstudio.core.students.networks import BrickOutputs, TaskBrick

PROBE_SIZE = 16          # every registered backbone accepts a 16x16 image (small: fusing runs at every build)
FOLD_TOLERANCE = 1e-4    # a folded backbone that strays further than this from the live one is not used


def fuse_key(brick: TaskBrick) -> tuple:
    """Bricks with equal keys can run as one fused network (their outputs may differ)."""
    s = brick.spec
    return (s.net.arch, s.net.width, s.net.in_channels, s.z_dim, s.gaussian, s.reads, s.read_channels)


def group_by_architecture(bricks: Sequence[TaskBrick]) -> list[list[int]]:
    """Indices of ``bricks`` grouped by architecture, groups in order of first appearance."""
    groups: dict[tuple, list[int]] = {}
    for i, brick in enumerate(bricks):
        groups.setdefault(fuse_key(brick), []).append(i)
    return list(groups.values())


# ---------------------------------------------------------------- walking the backbone

def _probe(backbone: nn.Module, in_channels: int) -> tuple[set[str], dict[str, str]]:
    """Run ``backbone`` once (eval, no grad) to learn which convolutions read the image itself
    and which BatchNorm reads which convolution's output directly (those fold)."""
    x = torch.zeros(1, in_channels, PROBE_SIZE, PROBE_SIZE, device=_device_of(backbone))
    shared, folds, produced = set(), {}, {}
    handles = []
    for name, m in backbone.named_modules():
        if isinstance(m, nn.Conv2d):
            def conv_hook(_m, inputs, output, name=name):
                if inputs[0] is x:
                    shared.add(name)
                produced[id(output)] = (name, output)   # holding the output keeps its id unique
            handles.append(m.register_forward_hook(conv_hook))
        elif isinstance(m, nn.BatchNorm2d):
            def bn_hook(_m, inputs, _output, name=name):
                if id(inputs[0]) in produced:
                    folds[name] = produced[id(inputs[0])][0]
            handles.append(m.register_forward_hook(bn_hook))
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            backbone(x)
    finally:
        backbone.train(was_training)
        for h in handles:
            h.remove()
    return shared, folds


def _device_of(module: nn.Module) -> torch.device:
    for t in module.parameters():
        return t.device
    return torch.device("cpu")


def _check_leaf(name: str, module: nn.Module) -> None:
    if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
        return
    if module._parameters or module._buffers:
        raise ConfigError(f"Bricks with a '{type(module).__name__}' layer ({name}) cannot run fused; "
                          "only convolutions, BatchNorm and weight-free layers can.")


def _rebuild(backbones: Sequence[nn.Module], make: Callable[[str, list[nn.Module]], nn.Module]) -> nn.Module:
    """A copy of the first backbone's structure (its forward code) whose convolutions and
    BatchNorms are replaced by ``make(name, [that layer of every backbone])``."""
    # The structure only: the layers that hold tensors are all replaced, so their tensors are not copied.
    template = copy.deepcopy(backbones[0], {id(t): None for t in (*backbones[0].parameters(), *backbones[0].buffers())})
    layers = [dict(b.named_modules()) for b in backbones]
    for name, module in list(template.named_modules()):
        _check_leaf(name, module)
        if isinstance(module, (nn.Conv2d, nn.BatchNorm2d)):
            parent, _, child = name.rpartition(".")
            setattr(template.get_submodule(parent) if parent else template, child, make(name, [l[name] for l in layers]))
    return template


def _conv_groups(conv: nn.Conv2d, n: int, shared_input: bool) -> int:
    if conv.padding_mode != "zeros":
        raise ConfigError("Bricks whose convolutions pad other than with zeros cannot run fused.")
    if shared_input:
        if conv.groups != 1:
            raise ConfigError("Bricks whose first convolution is grouped cannot run fused.")
        return 1
    return conv.groups * n


# ---------------------------------------------------------------- live layers (training)

class _LiveConv(nn.Module):
    """The bricks' convolutions as one (grouped) convolution over their stacked weights."""

    def __init__(self, convs: list[nn.Conv2d], shared_input: bool) -> None:
        super().__init__()
        self._layers = tuple(convs)   # a tuple, not submodules: the weights stay the bricks' own
        c = convs[0]
        self.stride, self.padding, self.dilation = c.stride, c.padding, c.dilation
        self.groups = _conv_groups(c, len(convs), shared_input)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self._layers
        weight = torch.cat([c.weight for c in layers])
        bias = None if layers[0].bias is None else torch.cat([c.bias for c in layers])
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class _LiveBatchNorm(nn.Module):
    """The bricks' BatchNorms over the concatenated channels; in training the running statistics
    are updated on the concatenation and copied back into each brick."""

    def __init__(self, bns: list[nn.BatchNorm2d]) -> None:
        super().__init__()
        b = bns[0]
        for other in bns:
            if not (other.affine and other.track_running_stats) or other.momentum is None:
                raise ConfigError("Bricks with BatchNorm that is not affine, keeps no running statistics or "
                                  "uses a cumulative average cannot run fused.")
            if (other.eps, other.momentum) != (b.eps, b.momentum):
                raise ConfigError("Bricks whose BatchNorm settings differ cannot run fused.")
        self._layers = tuple(bns)
        self.eps, self.momentum = b.eps, b.momentum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        layers = self._layers
        training = layers[0].training
        mean = torch.cat([b.running_mean for b in layers])
        var = torch.cat([b.running_var for b in layers])
        out = F.batch_norm(x, mean, var, torch.cat([b.weight for b in layers]), torch.cat([b.bias for b in layers]),
                           training, self.momentum, self.eps)
        if training:
            with torch.no_grad():
                n = layers[0].num_features
                torch._foreach_copy_([b.running_mean for b in layers] + [b.running_var for b in layers],
                                     list(mean.split(n)) + list(var.split(n)))
                torch._foreach_add_([b.num_batches_tracked for b in layers], 1)
        return out


def fuse_backbone(backbones: Sequence[Backbone], in_channels: int) -> nn.Module:
    """One module that runs ``backbones`` (same architecture) at once on the same image; its
    stage maps hold the backbones' channels side by side, brick-major."""
    shared, _ = _probe(backbones[0], in_channels)

    def make(name: str, layers: list[nn.Module]) -> nn.Module:
        if isinstance(layers[0], nn.Conv2d):
            return _LiveConv(layers, name in shared)
        return _LiveBatchNorm(layers)

    return _rebuild(backbones, make)


class FusedBricks(nn.Module):
    """Bricks of one architecture run as one network, on their own parameters (see module doc)."""

    def __init__(self, bricks: Sequence[TaskBrick]) -> None:
        super().__init__()
        keys = {fuse_key(b) for b in bricks}
        if len(keys) != 1:
            raise ConfigError("Only bricks of one architecture run as one fused network.")
        self._bricks = tuple(bricks)
        spec = bricks[0].spec
        self.n, self.z_dim, self.gaussian, self.reads = len(bricks), spec.z_dim, spec.gaussian, spec.reads
        self.channels = bricks[0].backbone.stage_channels[-1]
        self.outputs = [b.spec.num_outputs for b in bricks]
        self.backbone = fuse_backbone([b.backbone for b in bricks], spec.source_channels)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Every brick's projection of its pooled features, stacked: (N, batch, z_dim or 2 z_dim)."""
        f = global_pool(self.backbone(x)[-1])
        f = f.view(f.shape[0], self.n, self.channels).transpose(0, 1)
        w = torch.stack([b.project.weight for b in self._bricks])
        return torch.bmm(f, w.transpose(1, 2))

    def draws_noise(self) -> bool:
        return self.gaussian and self._bricks[0].training

    def noise(self, h: torch.Tensor, k: int) -> torch.Tensor:
        """Brick k's sampling noise, drawn as that brick alone draws it."""
        return torch.randn_like(h[k, :, : self.z_dim])

    def represent(self, h: torch.Tensor, noise: Sequence[torch.Tensor] | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """z (and mu, logvar for Gaussian bricks) from ``project``'s output; a training Gaussian brick
        samples z with ``noise`` (drawn here, brick by brick in order, when not given)."""
        if not self.gaussian:
            return h, None, None
        mu, logvar = h[..., : self.z_dim], h[..., self.z_dim :]
        if self.draws_noise():
            noise = noise if noise is not None else [self.noise(h, k) for k in range(self.n)]
            return mu + torch.stack(list(noise)) * torch.exp(0.5 * logvar), mu, logvar
        return mu, mu, logvar

    def _heads(self, attr: str, u: torch.Tensor) -> list[torch.Tensor]:
        """Each brick's ``attr`` head applied to its slice of ``u`` (N, batch, z_dim)."""
        heads = [getattr(b, attr) for b in self._bricks]
        if len(set(self.outputs)) == 1:
            w = torch.stack([h.weight for h in heads])
            bias = torch.stack([h.bias for h in heads]).unsqueeze(1)
            return list(torch.baddbmm(bias, u, w.transpose(1, 2)).unbind(0))
        flat = u.transpose(0, 1).reshape(u.shape[1], -1)
        out = F.linear(flat, torch.block_diag(*[h.weight for h in heads]), torch.cat([h.bias for h in heads]))
        return list(out.split(self.outputs, dim=1))

    def forward(self, x: torch.Tensor, z_c: torch.Tensor) -> list[torch.Tensor]:
        z, _, _ = self.represent(self.project(x))
        return self._heads("head", z_c.unsqueeze(0) + z)

    def forward_train(self, x: torch.Tensor, z_c: torch.Tensor) -> list[BrickOutputs]:
        return self.outputs_train(self.project(x), z_c)

    def outputs_train(self, h: torch.Tensor, z_c: torch.Tensor,
                      noise: Sequence[torch.Tensor] | None = None) -> list[BrickOutputs]:
        """What each brick computes in training, from ``project``'s output."""
        z, mu, logvar = self.represent(h, noise)
        logits = self._heads("head", z_c.unsqueeze(0) + z)
        task_logits = self._heads("task_head", z)
        mus = mu.unbind(0) if mu is not None else [None] * self.n
        logvars = logvar.unbind(0) if logvar is not None else [None] * self.n
        return [BrickOutputs(*o) for o in zip(logits, task_logits, z.unbind(0), mus, logvars)]


# ---------------------------------------------------------------- frozen layers (inference, export)

class _FrozenConv(nn.Module):
    """A convolution over fixed, pre-stacked weights (BatchNorm folded in where it followed)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, conv: nn.Conv2d, groups: int) -> None:
        super().__init__()
        # channels_last: oneDNN runs these small (grouped) convolutions ~1.4x faster at batch 1.
        self.register_buffer("weight", weight.contiguous(memory_format=torch.channels_last), persistent=False)
        self.register_buffer("bias", None if bias is None else bias.contiguous(), persistent=False)
        self.stride, self.padding, self.dilation, self.groups = conv.stride, conv.padding, conv.dilation, groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class _FrozenAffine(nn.Module):
    """An eval-mode BatchNorm that could not be folded: a per-channel scale and shift."""

    def __init__(self, scale: torch.Tensor, shift: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.view(1, -1, 1, 1).contiguous(), persistent=False)
        self.register_buffer("shift", shift.view(1, -1, 1, 1).contiguous(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift, x, self.scale)


def _bn_scale_shift(bns: list[nn.BatchNorm2d]) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval BatchNorm as y = x * scale + shift, stacked over the bricks, in float64."""
    mean = torch.cat([b.running_mean for b in bns]).double()
    var = torch.cat([b.running_var for b in bns]).double()
    scale = torch.cat([b.weight for b in bns]).double() / torch.sqrt(var + bns[0].eps)
    return scale, torch.cat([b.bias for b in bns]).double() - mean * scale


class FrozenBackbone(nn.Module):
    """Backbones of one architecture as one network over fixed weights; ``forward`` -> the pooled
    last stage, (batch, N x channels), brick-major."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return global_pool(self.body(x)[-1])

    def all_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body.all_stages(x)


@torch.no_grad()
def _frozen_body(backbones: Sequence[Backbone], in_channels: int, fold: bool) -> nn.Module:
    shared, folds = _probe(backbones[0], in_channels)
    folds = folds if fold else {}
    folded_into = {conv: bn for bn, conv in folds.items()}
    layers = [dict(b.named_modules()) for b in backbones]

    def make(name: str, group: list[nn.Module]) -> nn.Module:
        if isinstance(group[0], nn.BatchNorm2d):
            if name in folds:
                return nn.Identity()
            return _FrozenAffine(*(t.float() for t in _bn_scale_shift(group)))
        weight = torch.cat([c.weight for c in group]).double()
        bias = None if group[0].bias is None else torch.cat([c.bias for c in group]).double()
        if name in folded_into:
            scale, shift = _bn_scale_shift([l[folded_into[name]] for l in layers])
            weight = weight * scale.view(-1, 1, 1, 1)
            bias = shift if bias is None else bias * scale + shift
        dtype = group[0].weight.dtype
        return _FrozenConv(weight.to(dtype), None if bias is None else bias.to(dtype), group[0],
                           _conv_groups(group[0], len(group), name in shared))

    return _rebuild(backbones, make).eval()


@torch.no_grad()
def freeze_backbone(backbones: Sequence[Backbone], in_channels: int) -> FrozenBackbone:
    """The eval-mode backbones as one frozen network with BatchNorm folded into the convolutions.
    The folded network is checked against the backbones on a probe image; should folding ever not
    hold (a BatchNorm whose convolution's output is also used elsewhere), BatchNorm stays separate."""
    folded = FrozenBackbone(_frozen_body(backbones, in_channels, fold=True))
    if _max_error(folded, backbones, in_channels) <= FOLD_TOLERANCE:
        return folded
    return FrozenBackbone(_frozen_body(backbones, in_channels, fold=False))


def _max_error(frozen: FrozenBackbone, backbones: Sequence[Backbone], in_channels: int) -> float:
    x = torch.randn(2, in_channels, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
    x = x.to(_device_of(backbones[0]))
    modes = [b.training for b in backbones]
    try:
        for b in backbones:
            b.eval()
        want = torch.cat([global_pool(b(x)[-1]) for b in backbones], dim=1)
    finally:
        for b, mode in zip(backbones, modes):
            b.train(mode)
    return float((frozen(x) - want).abs().max())


class FrozenBricks(nn.Module):
    """Eval-mode bricks of one architecture over fixed weights: ``forward(x, z_c)`` -> each brick's
    logits. Projection and head fold into one matrix: ``W_k (z_c + P_k f_k) + b_k`` is
    ``[blockdiag(W_k P_k) | W] [f; z_c] + b``."""

    @torch.no_grad()
    def __init__(self, bricks: Sequence[TaskBrick]) -> None:
        super().__init__()
        if len({fuse_key(b) for b in bricks}) != 1:
            raise ConfigError("Only bricks of one architecture run as one fused network.")
        spec = bricks[0].spec
        self.reads = stage_number(spec.reads)   # 0: the image, k: the common module's stage k
        self.backbone = freeze_backbone([b.backbone for b in bricks], spec.source_channels)
        self.outputs = [b.spec.num_outputs for b in bricks]
        z = spec.z_dim
        heads = [b.head.weight.double() for b in bricks]
        through = [w @ b.project.weight[:z].double() for w, b in zip(heads, bricks)]   # mu rows for Gaussian bricks
        dtype = bricks[0].head.weight.dtype
        weight = torch.cat([torch.block_diag(*through), torch.cat(heads)], dim=1).to(dtype)
        self.register_buffer("weight", weight.contiguous(), persistent=False)
        self.register_buffer("bias", torch.cat([b.head.bias for b in bricks]).detach().clone(), persistent=False)

    def forward(self, x: torch.Tensor, z_c: torch.Tensor) -> list[torch.Tensor]:
        f = self.backbone(x)
        return list(F.linear(torch.cat([f, z_c], dim=1), self.weight, self.bias).split(self.outputs, dim=1))


class FrozenNetwork(nn.Module):
    """A common module and its bricks, eval-mode, frozen and fused: the common backbone once
    (BatchNorm folded), then the common module's projection to its latent size if it has one
    (``projection``), each architecture's bricks as one ``FrozenBricks`` fed what they read (the
    image or a stage map of the common backbone); ``forward(x)`` -> the bricks' logits in the order given."""

    @torch.no_grad()
    def __init__(self, common_backbone: Backbone, in_channels: int, bricks: Sequence[TaskBrick],
                 projection: nn.Linear | None = None) -> None:
        super().__init__()
        self.common = freeze_backbone([common_backbone], in_channels)
        z_dim = projection.out_features if projection is not None else common_backbone.stage_channels[-1]
        wrong = [b.spec.z_dim for b in bricks if b.spec.z_dim != z_dim]
        if wrong:
            raise ConfigError(f"A brick expects a shared latent of size {wrong[0]}, but the common module gives "
                              f"{z_dim}; a brick runs only with a common module of its own latent size.")
        offered = offered_stages(common_backbone)
        for why in filter(None, (stage_mismatch(b.spec.reads, b.spec.read_channels, offered) for b in bricks)):
            raise ConfigError(f"A brick {why}; it cannot run on it.")
        # A frozen copy (weights as a buffer, like the rest of the runner): exports carry it once.
        self.register_buffer("z_weight", None if projection is None else projection.weight.detach().clone(),
                             persistent=False)
        groups = group_by_architecture(bricks)
        self.groups = nn.ModuleList([FrozenBricks([bricks[i] for i in g]) for g in groups])
        flat = [i for g in groups for i in g]
        self._order = [flat.index(i) for i in range(len(bricks))]   # brick i's place in the groups' outputs

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        maps = self.common.all_stages(x)
        z_c = global_pool(maps[-1])
        if self.z_weight is not None:
            z_c = F.linear(z_c, self.z_weight)
        sources = [x, *maps]
        flat = [out for group in self.groups for out in group(sources[group.reads], z_c)]
        return [flat[i] for i in self._order]
