"""Student backbones, in a small registry (``register_backbone`` / ``create_backbone`` /
``list_backbones``, as timm does). A backbone maps an image (or, for a light brick, a stage of
the common module) to a list of stage feature maps: tiny, tiny-mid (light bricks' default), ResNet-18 with the
CIFAR stem, MobileNetV2.

Every backbone takes a stem stride: 1 keeps the image's resolution in the first stage (the CIFAR
stems the authors use, and the default), 2 halves it first; "auto" (``resolve_stem_stride``) chooses
2 for images of 32 px or more. A student at full resolution spends four times the multiply-adds per
channel, so a cost budget leaves it narrow, slow channels; at half resolution it gets wider, faster
ones but loses fine detail (shapes-hard's rotation: docs/benchmarks.md, "Half-resolution students").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from kfstudio.core.errors import ConfigError

BackboneBuilder = Callable[[int, float, int], "Backbone"]
STEM_STRIDES = (1, 2)
AUTO = "auto"
HALVE_FROM_SIDE = 32  # "auto": images at least this many pixels on their shorter side start at half resolution


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


def create_backbone(name: str, in_channels: int, width: float = 1.0, stem_stride: int = 1) -> "Backbone":
    if name not in _BACKBONES:
        known = ", ".join(sorted(_BACKBONES))
        raise ConfigError(f"There is no student architecture called '{name}'; choose one of: {known}.")
    if not 0.05 <= width <= 8:
        raise ConfigError(f"A student width of {width} is out of range (0.05 to 8).")
    check_stem_stride(stem_stride)
    return _BACKBONES[name].build(in_channels, width, stem_stride)


def check_stem_stride(stride) -> int | str:
    """``stride`` when it is a stem stride a student can have (or "auto"), else a ConfigError in words."""
    if stride != AUTO and (isinstance(stride, bool) or stride not in STEM_STRIDES):
        raise ConfigError(f"A student's stem stride is 1 (full resolution), 2 (half) or auto, not {stride!r}.")
    return stride


def resolve_stem_stride(choice: int | str, height: int, width: int) -> int:
    """The stem stride for images of ``height`` x ``width``: ``choice`` itself, or for "auto" 2 when
    the shorter side has at least ``HALVE_FROM_SIDE`` pixels, else 1."""
    check_stem_stride(choice)
    if choice == AUTO:
        return 2 if min(height, width) >= HALVE_FROM_SIDE else 1
    return int(choice)


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


def _three_stages(in_channels: int, channels: tuple[int, int, int], stem_stride: int) -> Backbone:
    """A stem and three small conv stages (the second and third halve the resolution)."""
    c1, c2, c3 = channels
    stages = [
        nn.Sequential(conv_bn_relu(c1, c1)),
        nn.Sequential(conv_bn_relu(c1, c2, stride=2), conv_bn_relu(c2, c2)),
        nn.Sequential(conv_bn_relu(c2, c3, stride=2), conv_bn_relu(c3, c3)),
    ]
    return StagedBackbone(conv_bn_relu(in_channels, c1, stride=stem_stride), stages, [c1, c2, c3])


@register_backbone("tiny", "Three small conv stages (16/32/64 channels at width 1): fast demos on a CPU.")
def tiny_backbone(in_channels: int, width: float, stem_stride: int = 1) -> Backbone:
    return _three_stages(in_channels, (_ch(16, width), _ch(32, width), _ch(64, width)), stem_stride)


# A light brick that reads stage 1 runs only stages 2 and 3, at a half and a quarter of stage 1's
# resolution. Shapes-hard's rotation brick gained most from a wider stage 2 (the last map with room for
# an outline); a wider stage 3 too gained a little more but ran at 0.98x the teacher (docs/benchmarks.md,
# "Bricks with a wide middle: hand runs").
@register_backbone("tiny-mid", "Tiny with a wide middle stage (16/64/32 channels at width 1): the light bricks' "
                               "default, most of a brick's width where its map is largest.")
def tiny_mid_backbone(in_channels: int, width: float, stem_stride: int = 1) -> Backbone:
    return _three_stages(in_channels, (_ch(16, width), _ch(64, width), _ch(32, width)), stem_stride)


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
def resnet_backbone(in_channels: int, width: float, stem_stride: int = 1) -> Backbone:
    widths = [_ch(c, width) for c in (64, 128, 256, 512)]
    stages, cin = [], widths[0]
    for i, cout in enumerate(widths):
        stride = 1 if i == 0 else 2
        stages.append(nn.Sequential(BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)))
        cin = cout
    # The paper taps the last three stages (128/256/512); the first stage still runs.
    backbone = StagedBackbone(conv_bn_relu(in_channels, widths[0], stride=stem_stride), stages, widths)
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
def mobilenetv2_backbone(in_channels: int, width: float, stem_stride: int = 1) -> Backbone:
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
    return StagedBackbone(conv_bn_relu(in_channels, _ch(32, width), stride=stem_stride), stages,
                          [_ch(160, width), cin, last])


def global_pool(feature_map: torch.Tensor) -> torch.Tensor:
    return feature_map.mean(dim=(2, 3))
