"""Student architectures: the common-knowledge module and the task bricks.

Backbones live in a small registry (``register_backbone`` / ``create_backbone`` /
``list_backbones``, as timm does). A backbone maps an image to a list of stage feature
maps; the common module pools each stage (the InfoMax term reads them all) and its last
pooled stage, or a linear projection of it to a chosen latent size, is the common feature
``z_c``. A task brick runs its own small backbone on the same image, projects to
``dim(z_c)`` and classifies ``z_c + z_k`` with its own head (Yang et al., ECCV 2022, section 3).
A light brick reads a stage of the common module instead of the image (``kfstudio.core.students.brick_input``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from kfstudio.core.errors import ConfigError

BackboneBuilder = Callable[[int, float], "Backbone"]


@dataclass(frozen=True)
class BackboneEntry:
    name: str
    description: str
    build: BackboneBuilder


_BACKBONES: dict[str, BackboneEntry] = {}


def register_backbone(name: str, description: str) -> Callable[[BackboneBuilder], BackboneBuilder]:
    def decorator(build: BackboneBuilder) -> BackboneBuilder:
        _BACKBONES[name] = BackboneEntry(name, description, build)
        return build

    return decorator


def list_backbones() -> list[BackboneEntry]:
    return list(_BACKBONES.values())


def create_backbone(name: str, in_channels: int, width: float = 1.0) -> "Backbone":
    if name not in _BACKBONES:
        known = ", ".join(sorted(_BACKBONES))
        raise ConfigError(f"There is no student architecture called '{name}'; choose one of: {known}.")
    if not 0.05 <= width <= 8:
        raise ConfigError(f"A student width of {width} is out of range (0.05 to 8).")
    return _BACKBONES[name].build(in_channels, width)


def _ch(base: int, width: float) -> int:
    """Scale a channel count, keeping it a positive multiple of 4."""
    return max(4, int(round(base * width / 4)) * 4)


class Backbone(nn.Module):
    """A network that returns its stage feature maps, shallow to deep."""

    stage_channels: list[int]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def all_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Every stage map, also those ``forward`` does not expose (what light bricks may read)."""
        return self(x)


def conv_bn_relu(cin: int, cout: int, stride: int = 1, groups: int = 1, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class StagedBackbone(Backbone):
    def __init__(self, stem: nn.Module, stages: list[nn.Module], stage_channels: list[int]) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.stage_channels = list(stage_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


@register_backbone("tiny", "Three small conv stages (16/32/64 channels at width 1): fast demos on a CPU.")
def tiny_backbone(in_channels: int, width: float) -> Backbone:
    c1, c2, c3 = _ch(16, width), _ch(32, width), _ch(64, width)
    stages = [
        nn.Sequential(conv_bn_relu(c1, c1)),
        nn.Sequential(conv_bn_relu(c1, c2, stride=2), conv_bn_relu(c2, c2)),
        nn.Sequential(conv_bn_relu(c2, c3, stride=2), conv_bn_relu(c3, c3)),
    ]
    return StagedBackbone(conv_bn_relu(in_channels, c1), stages, [c1, c2, c3])


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@register_backbone("resnet", "ResNet-18 with the CIFAR stem (64..512 channels at width 1), as in the paper.")
def resnet_backbone(in_channels: int, width: float) -> Backbone:
    widths = [_ch(c, width) for c in (64, 128, 256, 512)]
    stages, cin = [], widths[0]
    for i, cout in enumerate(widths):
        stride = 1 if i == 0 else 2
        stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
        cin = cout
    # The paper taps the last three stages (128/256/512); the first stage still runs.
    backbone = StagedBackbone(conv_bn_relu(in_channels, widths[0]), stages, widths)
    return _LastStages(backbone, 3)


class _LastStages(Backbone):
    """Expose only the last ``n`` stages of a backbone to the InfoMax term."""

    def __init__(self, inner: StagedBackbone, n: int) -> None:
        super().__init__()
        self.inner = inner
        self.n = n
        self.stage_channels = inner.stage_channels[-n:]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.inner(x)[-self.n :]

    def all_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.inner(x)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_relu(cin, hidden, kernel=1))
        layers += [
            conv_bn_relu(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


# (expansion, channels, repeats, stride) with the CIFAR-style strides the authors use.
_MOBILENET_V2 = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


@register_backbone("mobilenetv2", "MobileNetV2 (inverted residuals, 1280 features at width 1), as in the paper.")
def mobilenetv2_backbone(in_channels: int, width: float) -> Backbone:
    cin = _ch(32, width)
    blocks: list[nn.Module] = []
    taps = []
    for expand, c, repeats, stride in _MOBILENET_V2:
        cout = _ch(c, width)
        for i in range(repeats):
            blocks.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expand))
            cin = cout
        taps.append(len(blocks))
    last = _ch(1280, max(width, 1.0))
    # Stages end after the 160- and 320-channel blocks and after the final 1x1 conv.
    stages = [
        nn.Sequential(*blocks[: taps[5]]),
        nn.Sequential(*blocks[taps[5] : taps[6]]),
        conv_bn_relu(cin, last, kernel=1),
    ]
    return StagedBackbone(conv_bn_relu(in_channels, _ch(32, width)), stages, [_ch(160, width), cin, last])


def global_pool(feature_map: torch.Tensor) -> torch.Tensor:
    return feature_map.mean(dim=(2, 3))


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild a student network; stored in every manifest."""

    arch: str
    width: float
    in_channels: int

    def to_dict(self) -> dict:
        return {"arch": self.arch, "width": self.width, "in_channels": self.in_channels}

    @classmethod
    def from_dict(cls, d: dict) -> "ArchSpec":
        try:
            return cls(str(d["arch"]), float(d["width"]), int(d["in_channels"]))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"The architecture description {d!r} is incomplete.") from None


MAX_Z_DIM = 16_384  # the largest shared latent a manifest may ask for (io.manifests)


def check_z_dim(z_dim: int | None) -> None:
    if z_dim is not None and not 1 <= z_dim <= MAX_Z_DIM:
        raise ConfigError(f"A latent size of {z_dim} is out of range (1 to {MAX_Z_DIM:,}).")


class CommonModule(nn.Module):
    """The common-knowledge network: a full backbone whose pooled stages feed InfoMax.

    ``z_dim`` None (the default): z_c is the pooled last stage itself. A size: z_c is a learned
    linear projection of it to ``z_dim`` (``project``), the paper's small shared latent; InfoMax
    still reads the pooled stages.
    """

    def __init__(self, spec: ArchSpec, z_dim: int | None = None) -> None:
        super().__init__()
        check_z_dim(z_dim)
        self.spec = spec
        self.backbone = create_backbone(spec.arch, spec.in_channels, spec.width)
        self.stage_dims = list(self.backbone.stage_channels)
        self.project = nn.Linear(self.stage_dims[-1], z_dim, bias=False) if z_dim is not None else None
        self.z_dim = z_dim if z_dim is not None else self.stage_dims[-1]

    @property
    def projected(self) -> bool:
        return self.project is not None

    @property
    def offered_stages(self) -> list[int]:
        """The channels of each stage a light brick may read (stage k is item k-1)."""
        from kfstudio.core.students.brick_input import offered_stages

        return offered_stages(self.backbone)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return the common feature z_c and every pooled stage (z_c is the last, or its projection)."""
        encoded = self.encode(x)
        return encoded.z_c, encoded.pooled

    def encode(self, x: torch.Tensor) -> "Encoded":
        """One run of the common module: z_c, the pooled stages InfoMax reads, and every stage map."""
        maps = self.backbone.all_stages(x)
        pooled = [global_pool(f) for f in maps[len(maps) - len(self.stage_dims):]]
        z_c = pooled[-1] if self.project is None else self.project(pooled[-1])
        return Encoded(x, z_c, pooled, maps)


@dataclass
class Encoded:
    """What one run of the common module gives its bricks: the image, z_c and the stage maps."""

    image: torch.Tensor
    z_c: torch.Tensor
    pooled: list[torch.Tensor]
    maps: list[torch.Tensor]

    def source(self, reads: str) -> torch.Tensor:
        """What a brick that reads ``reads`` ("image" or "stage<k>") is fed."""
        from kfstudio.core.students.brick_input import stage_number

        k = stage_number(reads)
        return self.image if k == 0 else self.maps[k - 1]

    def run(self, brick: "TaskBrick") -> torch.Tensor:
        return brick(self.source(brick.spec.reads), self.z_c)


@dataclass(frozen=True)
class BrickSpec:
    """A task brick's architecture: its own backbone, the shared feature size, its outputs, and
    what it reads: the image, or stage k of its common module (``reads`` "stage<k>", of
    ``read_channels`` channels; ``kfstudio.core.students.brick_input``)."""

    net: ArchSpec
    z_dim: int
    num_outputs: int
    gaussian: bool = False
    reads: str = "image"
    read_channels: int | None = None

    def __post_init__(self) -> None:
        from kfstudio.core.students.brick_input import IMAGE, check_brick_input

        check_brick_input(self.reads)
        if (self.reads == IMAGE) != (self.read_channels is None):
            raise ConfigError("A brick that reads a stage of its common module must say how many channels it reads "
                              "(and one that reads the image must not).")

    @property
    def source_channels(self) -> int:
        """The channels of what the brick's backbone reads."""
        return self.net.in_channels if self.read_channels is None else self.read_channels

    def to_dict(self) -> dict:
        light = {} if self.read_channels is None else {"read_channels": self.read_channels}
        return {**self.net.to_dict(), "z_dim": self.z_dim, "num_outputs": self.num_outputs, "gaussian": self.gaussian,
                "reads": self.reads, **light}

    @classmethod
    def from_dict(cls, d: dict) -> "BrickSpec":
        """Files written before light bricks have no ``reads``: they are image bricks."""
        try:
            channels = d.get("read_channels")
            return cls(ArchSpec.from_dict(d), int(d["z_dim"]), int(d["num_outputs"]), bool(d.get("gaussian", False)),
                       str(d.get("reads", "image")), None if channels is None else int(channels))
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"The brick architecture description {d!r} is incomplete.") from None


@dataclass
class BrickOutputs:
    """What a brick computes in training: both heads' logits and its representation."""

    logits: torch.Tensor
    task_logits: torch.Tensor
    z: torch.Tensor
    mu: torch.Tensor | None = None
    logvar: torch.Tensor | None = None


class TaskBrick(nn.Module):
    """A task-specific network plus its head: ``logit = W (z_c + z_k) + b``.

    The second head (``W' z_k + b'``) serves the ``loss_task`` term in training only.
    A Gaussian brick predicts (mu, logvar) and samples z_k in training; it uses mu otherwise.
    """

    def __init__(self, spec: BrickSpec) -> None:
        super().__init__()
        from kfstudio.core.students.brick_input import light_backbone

        self.spec = spec
        net = spec.net
        self.backbone = (create_backbone(net.arch, net.in_channels, net.width) if spec.read_channels is None
                         else light_backbone(net.arch, net.width, net.in_channels, spec.reads, spec.read_channels))
        out_dim = spec.z_dim * (2 if spec.gaussian else 1)
        self.project = nn.Linear(self.backbone.stage_channels[-1], out_dim, bias=False)
        self.head = nn.Linear(spec.z_dim, spec.num_outputs)
        self.task_head = nn.Linear(spec.z_dim, spec.num_outputs)

    def represent(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        h = self.project(global_pool(self.backbone(x)[-1]))
        if not self.spec.gaussian:
            return h, None, None
        mu, logvar = h.chunk(2, dim=1)
        if self.training:
            return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar), mu, logvar
        return mu, mu, logvar

    def forward(self, x: torch.Tensor, z_c: torch.Tensor) -> torch.Tensor:
        """``x`` is what the brick reads (``spec.reads``): the image or a stage map of the common module."""
        z, _, _ = self.represent(x)
        return self.head(z_c + z)

    def forward_train(self, x: torch.Tensor, z_c: torch.Tensor) -> BrickOutputs:
        z, mu, logvar = self.represent(x)
        return BrickOutputs(self.head(z_c + z), self.task_head(z), z, mu, logvar)


class FactorNetwork(nn.Module):
    """A common module with task bricks: runs the common module once, each brick on it.

    ``forward`` returns ``{task name: logits}`` in the order the bricks were given. With
    ``fused`` (the default) bricks of one architecture run as one batched network
    (``kfstudio.core.students.fused.FusedBricks``) over the bricks' own parameters, so the state_dict,
    the optimizer state and checkpoints are the same as with ``fused=False``, which runs the
    bricks one after another.
    """

    def __init__(self, common: CommonModule, bricks: dict[str, TaskBrick], fused: bool = True) -> None:
        super().__init__()
        from kfstudio.core.students.fused import FusedBricks, group_by_architecture  # fused builds on this module

        self.common = common
        self.task_names = list(bricks)
        self.bricks = nn.ModuleDict({module_key(n): b for n, b in bricks.items()})
        self._keys = [module_key(n) for n in self.task_names]
        self.fused = fused
        modules = list(bricks.values())
        self._groups = group_by_architecture(modules)
        self._places = sorted(((g, k) for g, group in enumerate(self._groups) for k in range(len(group))),
                              key=lambda place: self._groups[place[0]][place[1]])   # (group, slot) in brick order
        # Weight-free runners: registering them adds no state_dict keys, and train()/eval() reach them.
        self.fused_groups = nn.ModuleList([FusedBricks([modules[i] for i in g]) for g in self._groups])

    def brick(self, task_name: str) -> TaskBrick:
        return self.bricks[module_key(task_name)]  # type: ignore[return-value]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        enc = self.common.encode(x)
        if not self.fused:
            return {name: enc.run(self.bricks[key]) for name, key in zip(self.task_names, self._keys)}
        return self._by_task([runner(enc.source(runner.reads), enc.z_c) for runner in self.fused_groups])

    def forward_train(self, x: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, BrickOutputs]]:
        enc = self.common.encode(x)
        z_c, stages = enc.z_c, enc.pooled
        if not self.fused:
            outs = {name: self.bricks[key].forward_train(enc.source(self.bricks[key].spec.reads), z_c)
                    for name, key in zip(self.task_names, self._keys)}
            return stages, outs
        runners = list(self.fused_groups)
        hs = [runner.project(enc.source(runner.reads)) for runner in runners]
        # Gaussian bricks draw their noise in brick order, as brick by brick, whatever their group.
        noise = {(g, k): runners[g].noise(hs[g], k) for g, k in self._places if runners[g].draws_noise()}
        outs = []
        for g, (runner, h) in enumerate(zip(runners, hs)):
            drawn = [noise[g, k] for k in range(runner.n)] if runner.draws_noise() else None
            outs.append(runner.outputs_train(h, z_c, drawn))
        return stages, self._by_task(outs)

    def _by_task(self, per_group: list[list]) -> dict:
        found = {i: out for group, outs in zip(self._groups, per_group) for i, out in zip(group, outs)}
        return {name: found[i] for i, name in enumerate(self.task_names)}


def module_key(task_name: str) -> str:
    """A stable ModuleDict key for any task name (keys may not hold dots)."""
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in task_name)
    return f"task_{cleaned}" if cleaned == task_name else f"task_{cleaned}_{len(task_name)}_{sum(map(ord, task_name))}"


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
