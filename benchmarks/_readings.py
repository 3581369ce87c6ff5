"""Readings that cannot drift: the sentences that quote a benchmark's numbers, rendered from its JSON.

A benchmark saves its figures as JSON under docs/benchmarks/ and writes its table from them; the
sentences of docs/benchmarks.md that quote those figures sit between ``<!-- reading:NAME -->`` and
``<!-- /reading:NAME -->`` and are rendered from the same JSON by a template in
``benchmarks/readings.py`` (``python -m benchmarks.readings`` renders them all again without
rerunning anything). Text outside the markers is written by a person and never touched here.

Paired comparisons are counted seed by seed as wins, ties and losses: a tie is the same number of
test images right (a difference under half a test image), and a mean difference whose spread
covers zero is called "within noise".
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "benchmarks.md"
JSON_DIR = ROOT / "docs" / "benchmarks"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- reading:{name} -->", f"<!-- /reading:{name} -->"


def block(text: str, name: str) -> str:
    """The text between the markers of reading ``name`` (KeyError when the document has none)."""
    start, end = markers(name)
    if start not in text or end not in text:
        raise KeyError(f"docs/benchmarks.md has no '{name}' reading markers")
    return text.split(start, 1)[1].split(end, 1)[0].strip("\n")


def replace_block(text: str, name: str, body: str) -> str:
    block(text, name)  # the markers must exist: a reading's place in the prose is chosen by a person
    start, end = markers(name)
    head, rest = text.split(start, 1)
    return f"{head}{start}\n{body.rstrip()}\n{end}{rest.split(end, 1)[1]}"


def load(file_name: str) -> dict:
    return json.loads((JSON_DIR / file_name).read_text())


def save(file_name: str, data: dict, folder: Path = JSON_DIR) -> Path:
    """Write a run's figures (``folder``: the benchmark's plot folder, a scratch one under --no-write)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / file_name
    path.write_text(json.dumps(data, indent=1) + "\n")
    return path


def run_meta(args) -> dict:
    """What a reading needs to say where its figures came from: command, start, load, CPU, threads."""
    import torch

    from benchmarks._common import cpu_model

    return {"command": args.command, "started": args.started_at, "load_at_start": args.load_at_start,
            "cpu": cpu_model(), "threads": torch.get_num_threads()}


@dataclass(frozen=True)
class Paired:
    """Per-seed differences ``a - b`` in percentage points and the size of one test image in points."""

    diffs: tuple[float, ...]
    image: float

    @property
    def ties(self) -> int:
        return sum(abs(d) < self.image / 2 for d in self.diffs)

    @property
    def wins(self) -> int:
        return sum(d >= self.image / 2 for d in self.diffs)

    @property
    def losses(self) -> int:
        return sum(d <= -self.image / 2 for d in self.diffs)

    @property
    def mean(self) -> float:
        return statistics.mean(self.diffs)

    @property
    def sd(self) -> float:
        return statistics.stdev(self.diffs) if len(self.diffs) > 1 else 0.0

    @property
    def within_noise(self) -> bool:
        return abs(self.mean) <= self.sd

    def counts(self) -> str:
        def n(count: int, word: str) -> str:
            return f"{count} {word}{'' if count == 1 else ('es' if word.endswith('s') else 's')}"
        seeds = len(self.diffs)
        return (f"{n(self.wins, 'win')}, {n(self.ties, 'tie')}, {n(self.losses, 'loss')} of {seeds} "
                f"seed{'' if seeds == 1 else 's'}")

    def phrase(self) -> str:
        noise = "; within noise" if self.within_noise else ""
        return f"{self.mean:+.1f} ± {self.sd:.1f} points ({self.counts()}{noise})"


def paired(a: list[float], b: list[float], test_images: int) -> Paired:
    """``a`` against ``b``, accuracies as fractions of ``test_images`` images, paired by seed."""
    return Paired(tuple(100 * (x - y) for x, y in zip(a, b, strict=True)), 100 / test_images)


def mean_sd(values: list[float], scale: float = 100.0, digits: int = 2) -> str:
    values = [v * scale for v in values]
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def mean(values: list[float], scale: float = 100.0, digits: int = 1) -> str:
    return f"{statistics.mean(values) * scale:.{digits}f}"


def where(data: dict) -> str:
    """Which run the figures came from: command, CPU and load, as the JSON recorded them."""
    cpu = data.get("cpu") or "a CPU the run did not record"
    threads = f", {data['threads']} torch thread{'s' if data['threads'] != 1 else ''}" if data.get("threads") else ""
    return (f"`{data['command']}`, started {data['started']} on {cpu}{threads}, "
            f"1-minute load {data['load_at_start']:.2f} at the start")


def wrap(text: str, width: int = 100) -> str:
    """Paragraphs folded like the hand-written prose around them, so diffs stay readable."""
    import textwrap

    return "\n\n".join(textwrap.fill(p, width, break_long_words=False, break_on_hyphens=False)
                        for p in text.split("\n\n"))
