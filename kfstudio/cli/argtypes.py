"""Range-checked argparse types: a flag out of range is refused by the parser, in words,
with exit code 2, before anything is loaded or trained. No torch import here."""

from __future__ import annotations

import argparse
import math
import os

MAX_SEED = 2**63 - 1  # what torch.manual_seed accepts


def whole(low: int, high: int, what: str = "a whole number"):
    """A whole number from ``low`` to ``high``."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not {what}.") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is out of range; use {what} from {low:,} to {high:,}.")
        return value
    return parse


def number(low: float, high: float = math.inf, *, above: bool = False):
    """A finite number of at least ``low`` (strictly above it with ``above``) and at most ``high``."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"'{text}' is not a number.") from None
        if not math.isfinite(value) or value < low or (above and value == low) or value > high:
            bound = f"above {low:g}" if above else f"of at least {low:g}"
            top = f" and at most {high:g}" if math.isfinite(high) else ""
            raise argparse.ArgumentTypeError(f"{text} is out of range; use a number {bound}{top}.")
        return value
    return parse


def input_spec(text: str) -> str:
    """A teacher input ``C,H,W[:mean:std]``, checked by the parser (before any teacher loads); kept as text."""
    from kfstudio.core.errors import KFError
    from kfstudio.core.spec import InputSpec  # no torch: the parser stays instant

    try:
        InputSpec.parse(text)
    except KFError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def threads(text: str) -> int:
    """CPU threads: from 1 to the machine's cores."""
    return whole(1, os.cpu_count() or 1, "a thread count")(text)


seed = whole(0, MAX_SEED, "a seed")
epochs = whole(1, 100_000, "a number of epochs")
batch_size = whole(1, 65_536, "a batch size")
learning_rate = number(0, 10, above=True)
width = number(0.05, 8)
z_dim = whole(1, 16_384, "a latent size")  # kfstudio.core.students.networks.MAX_Z_DIM
