"""What a network expects as input."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from kfstudio.core.errors import ConfigError


MAX_CHANNELS, MAX_SIDE = 64, 4096  # checked before any tensor of this size is made


@dataclass(frozen=True)
class InputSpec:
    """Channels, size and normalization of a network's input.

    Images are brought to ``(x - mean) / std`` per channel, with pixel values in [0, 1]
    before normalization.
    """

    channels: int
    height: int
    width: int
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)

    def __post_init__(self) -> None:
        if min(self.channels, self.height, self.width) < 1:
            raise ConfigError(f"An input must have at least one channel and pixel, not {self.shape}.")
        if self.channels > MAX_CHANNELS or max(self.height, self.width) > MAX_SIDE:
            raise ConfigError(f"An input of {self.shape} is larger than KF Studio works with (at most "
                              f"{MAX_CHANNELS} channels and {MAX_SIDE} pixels a side).")
        for name in ("mean", "std"):
            values = tuple(float(v) for v in getattr(self, name))
            if len(values) == 1 and self.channels > 1:
                values = values * self.channels
            if len(values) != self.channels:
                raise ConfigError(
                    f"The input {name} has {len(values)} values but the input has {self.channels} channels."
                )
            object.__setattr__(self, name, values)
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)):
            raise ConfigError("The input mean and standard deviation must be finite numbers.")
        if any(s <= 0 for s in self.std):
            raise ConfigError("Every input standard deviation must be positive.")

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def describe(self) -> str:
        return f"{self.channels}x{self.height}x{self.width}, mean {list(self.mean)}, std {list(self.std)}"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputSpec":
        try:
            return cls(
                channels=int(d["channels"]),
                height=int(d["height"]),
                width=int(d["width"]),
                mean=tuple(d.get("mean", (0.0,))),
                std=tuple(d.get("std", (1.0,))),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"The input spec {d!r} is incomplete: {exc}.") from None

    @classmethod
    def parse(cls, text: str) -> "InputSpec":
        """Parse ``C,H,W`` or ``C,H,W:mean:std`` (mean/std comma-separated) from the command line."""
        parts = text.split(":")
        try:
            c, h, w = (int(v) for v in parts[0].split(","))
            mean = tuple(float(v) for v in parts[1].split(",")) if len(parts) > 1 else (0.0,)
            std = tuple(float(v) for v in parts[2].split(",")) if len(parts) > 2 else (1.0,)
        except ValueError:
            raise ConfigError(
                f"Cannot read the input spec '{text}'; write it as C,H,W or C,H,W:mean:std, e.g. 1,8,8:0.5:0.5."
            ) from None
        return cls(c, h, w, mean, std)
