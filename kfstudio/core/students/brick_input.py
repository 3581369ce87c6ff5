"""What a task brick reads: the image (the paper's task networks) or a stage of the common module.

A brick that reads the image runs its own whole backbone beside the common module, as in Yang et
al. (ECCV 2022). A *light* brick reads stage k of the common module's backbone instead: a 1x1
convolution takes that stage's channels to the brick's own stage-k width, and the brick's own
stages k+1.. run from there (its stem and first k stages are never built). The shared trunk then
runs once for every brick, which is what makes an assembly of many bricks cheaper than the
teacher.

Names: ``"image"`` or ``"stage<k>"`` (k from 1). Public API: ``IMAGE``, ``BRICK_INPUTS`` (the names
the CLI offers), ``check_brick_input``, ``stage_number``, ``describe_input``, ``staged``,
``offered_stages``, ``TailBackbone``, ``light_backbone``.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from kfstudio.core.errors import ConfigError
from kfstudio.core.students.backbones import StagedBackbone, conv_bn_relu, create_backbone

IMAGE = "image"
BRICK_INPUTS = ("image", "stage1", "stage2")  # what the CLI and the studio offer
_STAGE = re.compile(r"stage([1-9][0-9]?)")


def check_brick_input(reads: str) -> str:
    """``reads`` when it names an input a brick can read, else a ConfigError in words."""
    if reads != IMAGE and not _STAGE.fullmatch(str(reads)):
        raise ConfigError(f"A brick reads the image or a stage of the common module ('stage1', 'stage2', ...), "
                          f"not '{reads}'.")
    return reads


def stage_number(reads: str) -> int:
    """0 for the image, k for ``stage<k>``."""
    check_brick_input(reads)
    return 0 if reads == IMAGE else int(reads[len("stage"):])


def describe_input(reads: str) -> str:
    return "the image" if reads == IMAGE else f"stage {stage_number(reads)} of its common module"


def staged(backbone: nn.Module):
    """The StagedBackbone behind a backbone (a wrapper may expose fewer stages), or None."""
    inner = getattr(backbone, "inner", backbone)
    return inner if isinstance(inner, StagedBackbone) else None


def offered_stages(backbone: nn.Module) -> list[int]:
    """The channels of every stage of a common backbone a brick may read (stage k is item k-1)."""
    inner = staged(backbone)
    return [] if inner is None else list(inner.stage_channels)


class TailBackbone(nn.Module):
    """A brick's backbone from stage k on: a 1x1 entry from the common module's stage-k channels,
    then the brick's own later stages; returns their maps, like every backbone."""

    def __init__(self, entry: nn.Module, stages: list[nn.Module], stage_channels: list[int]) -> None:
        super().__init__()
        self.entry = entry
        self.stages = nn.ModuleList(stages)
        self.stage_channels = list(stage_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.entry(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats

    def all_stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.forward(x)


def light_backbone(arch: str, width: float, image_channels: int, reads: str, read_channels: int) -> TailBackbone:
    """The part of backbone ``arch`` that runs after stage k, fed from ``read_channels`` channels."""
    k = stage_number(reads)
    full = staged(create_backbone(arch, image_channels, width))
    if full is None:
        raise ConfigError(f"A '{arch}' brick cannot start at a stage of the common module; let it read the image.")
    if k >= len(full.stages):
        raise ConfigError(f"A '{arch}' brick has {len(full.stages)} stages, so it cannot start after stage {k} "
                          f"(it would have none of its own left); choose an earlier stage or the image.")
    if not 1 <= read_channels <= 16_384:
        raise ConfigError(f"A brick cannot read {read_channels} channels.")
    entry = conv_bn_relu(read_channels, full.stage_channels[k - 1], kernel=1)
    return TailBackbone(entry, list(full.stages[k:]), full.stage_channels[k:])


def stage_mismatch(reads: str, read_channels: int | None, offered: list[int]) -> str | None:
    """Why a brick that reads ``reads`` cannot run on a common module offering ``offered`` stages
    (their channels), in words; None when it can."""
    k = stage_number(reads)
    if k == 0:
        return None
    if k > len(offered):
        have = f"only {len(offered)} stage{'s' if len(offered) != 1 else ''}" if offered else "no stages a brick can read"
        return f"reads stage {k} of its common module; this common module has {have}"
    if offered[k - 1] != read_channels:
        return (f"reads stage {k} of its common module with {read_channels} channels; this common module's stage {k} "
                f"has {offered[k - 1]}")
    return None


def channels_to_read(reads: str, offered: list[int]) -> int | None:
    """The channels a new brick that reads ``reads`` takes from a common module offering ``offered``
    stages (None for the image); a ConfigError in words when it offers no such stage."""
    k = stage_number(reads)
    if k == 0:
        return None
    why = stage_mismatch(reads, offered[k - 1] if k <= len(offered) else None, offered)
    if why:
        raise ConfigError(f"The bricks cannot read stage {k}: a brick that {why}.")
    return offered[k - 1]
