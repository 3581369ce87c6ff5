"""Student networks: the common-knowledge module and the task bricks.

Backbones come from the registry in ``kfstudio.core.students.backbones``. A backbone maps an
image to a list of stage feature maps; the common module pools each stage (the InfoMax term reads them all) and its last
pooled stage, or a linear projection of it to a chosen latent size, is the common feature
``z_c``. A task brick runs its own small backbone on the same image, projects to
``dim(z_c)`` and classifies ``z_c + z_k`` with its own head (Yang et al., ECCV 2022, section 3).
A light brick reads a stage of the common module instead of the image (``kfstudio.core.students.brick_input``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from kfstudio.core.errors import ConfigError
from kfstudio.core.students.backbones import AUTO, check_stem_stride, create_backbone, global_pool
from kfstudio.core.students.brick_input import IMAGE, check_brick_input, light_backbone, offered_stages, stage_number


@dataclass(frozen=True)
class ArchSpec:
    """Everything needed to rebuild a student network; stored in every manifest."""

    arch: str
    width: float
    in_channels: int
    stem_stride: int = 1  # 2: the first stage runs at half the image's resolution (backbones.resolve_stem_stride)

    def __post_init__(self) -> None:
        if check_stem_stride(self.stem_stride) == AUTO:
            raise ConfigError("A student's architecture needs a stem stride of 1 or 2 (resolve 'auto' first).")

    def to_dict(self) -> dict:
        strided = {"stem_stride": self.stem_stride} if self.stem_stride != 1 else {}  # files before it: stride 1
        return {"arch": self.arch, "width": self.width, "in_channels": self.in_channels, **strided}

    @classmethod
    def from_dict(cls, d: dict) -> "ArchSpec":
        try:
            return cls(str(d["arch"]), float(d["width"]), int(d["in_channels"]), int(d.get("stem_stride", 1)))
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
        self.backbone = create_backbone(spec.arch, spec.in_channels, spec.width, spec.stem_stride)
        self.stage_dims = list(self.backbone.stage_channels)
        self.project = nn.Linear(self.stage_dims[-1], z_dim, bias=False) if z_dim is not None else None
        self.z_dim = z_dim if z_dim is not None else self.stage_dims[-1]

    @property
    def projected(self) -> bool:
        return self.project is not None

    @property
    def offered_stages(self) -> list[int]:
        """The channels of each stage a light brick may read (stage k is item k-1)."""
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
        self.spec = spec
        net = spec.net
        if spec.read_channels is None:
            self.backbone = create_backbone(net.arch, net.in_channels, net.width, net.stem_stride)
        else:  # a light brick: its stem never runs, so the stride does not matter
            self.backbone = light_backbone(net.arch, net.width, net.in_channels, spec.reads, spec.read_channels)
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


def module_key(task_name: str) -> str:
    """A stable ModuleDict key for any task name (keys may not hold dots)."""
    cleaned = "".join(c if c.isalnum() or c == "_" else "_" for c in task_name)
    return f"task_{cleaned}" if cleaned == task_name else f"task_{cleaned}_{len(task_name)}_{sum(map(ord, task_name))}"


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
