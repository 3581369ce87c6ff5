"""Published figures that match their commands (no benchmark runs; reads docs and saved JSON only).

* Every reading of docs/benchmarks.md (between ``<!-- reading:NAME -->`` markers) is exactly what
  its template renders from the JSON its command saved: a figure edited by hand, or a JSON
  newer than its reading, fails.
* Every figure in README.md's "Measured figures" table appears in what the command named beside
  it wrote: the readings rendered from its JSON, or the generated section of docs/benchmarks.md
  (or docs/reliability.md) for commands that save no JSON. Goals and targets are not measured
  figures and are listed per row.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from benchmarks import _readings as R
from benchmarks import readings

ROOT = Path(__file__).resolve().parent.parent

# README row (start of its first cell) -> (sources, numbers in the figure cell that are goals, not measurements).
# A source is "reading:NAME" (rendered from the JSON), "bench:NAME" (a generated section) or a file.
README_ROWS = {
    "digits over 3 seeds": (["reading:fidelity"], []),
    "shapes over 3 seeds": (["reading:fidelity"], []),
    "transfer of the held-back": (["reading:transfer"], []),
    "disentanglement at a 10-d": (["bench:disentangle"], ["5"]),
    "few-label digits": (["reading:imb-summary"], []),
    "time until the bricks": (["bench:speed-cpu"], []),
    "the engine against": (["bench:overhead"], []),
    "3 bricks assembled (e.g. digits 0, 1, 7)": (["bench:assembly-cpu", "bench:fused-cpu"], []),
    "10 bricks assembled": (["reading:fused", "reading:assembly-summary"], ["1.5"]),
    "3 bricks assembled, fused": (["reading:fused"], ["0.8", "1"]),
    "training steps/s": (["bench:train-fused-cpu"], ["1.5"]),
    "`kfstudio --help`": (["reading:startup"], []),
    "a new brick on the frozen": (["bench:grow"], ["50"]),
    "hostile and careless": (["docs/reliability.md"], []),
    "the studio under a live run": (["bench:gui"], ["50", "20"]),
    "the studio's moments": (["bench:gui-moments"], ["10", "50"]),
    "peak memory of a run": (["bench:memory-cpu"], ["2", "000", "50"]),
    "shapes-hard: the defaults": (["bench:light-bricks-defaults"], ["16", "0.5", "1.0"]),
    "a second 32x32 RGB teacher": (["bench:light-bricks-rgb"], []),
    "int8 ONNX": (["bench:int8"], ["8", "64", "1.5", "0.5"]),
    "training on a GPU": (["bench:cuda-resnet", "bench:cuda"], ["16", "32", "18", "200"]),
}

_NUMBER = re.compile(r"\d{1,3}(?:[ ,]\d{3})+(?:\.\d+)?(?!\d)|\d+(?:\.\d+)?")


def numbers(text: str) -> list[str]:
    """Every number written in ``text`` ("1 766" and "1,766" are one number), code spans and links left out."""
    text = re.sub(r"`[^`]*`|\]\([^)]*\)", " ", text)
    return [re.sub(r"[ ,]", "", n) for n in _NUMBER.findall(text)]


def appears(figure: str, source_numbers: list[str]) -> bool:
    """``figure`` is in the source as written, or rounded (either way at a half) to the digits it shows."""
    decimals = len(figure.split(".")[1]) if "." in figure else 0
    value, half = float(figure), 0.5 * 10 ** -decimals + 1e-9
    for n in source_numbers:
        n_decimals = len(n.split(".")[1]) if "." in n else 0
        if n_decimals >= decimals and abs(float(n) - value) <= half:
            return True
    return False


def source_text(source: str) -> str:
    kind, _, name = source.partition(":")
    if kind == "reading":
        return readings.render(name)
    if kind == "bench":
        text = R.DOC.read_text()
        start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
        assert start in text and end in text, f"docs/benchmarks.md has no generated section '{name}'"
        return text.split(start, 1)[1].split(end, 1)[0]
    return (ROOT / source).read_text()


def measured_figures_rows(readme: str) -> dict[str, str]:
    """README's "Measured figures" table: {first cell: figure cell}."""
    section = readme.split("## Measured figures", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) == 2 and cells[0] not in ("what", "---"):
            rows[cells[0]] = cells[1]
    return rows


def missing_figures(readme: str) -> list[str]:
    problems = []
    rows = measured_figures_rows(readme)
    for what, figure in rows.items():
        key = next((k for k in README_ROWS if what.startswith(k)), None)
        if key is None:
            problems.append(f"README row '{what[:50]}' names no command whose output the test knows")
            continue
        sources, goals = README_ROWS[key]
        found = [n for s in sources for n in numbers(source_text(s))]
        problems += [f"README row '{key}': {n} is not in {', '.join(sources)}"
                     for n in numbers(figure) if n not in goals and not appears(n, found)]
    problems += [f"README has no row starting '{k}' (update README_ROWS)" for k in README_ROWS
                 if not any(w.startswith(k) for w in rows)]
    return problems


def test_every_reading_is_what_its_json_renders():
    doc = R.DOC.read_text()
    stale = [name for name in readings.READINGS if R.block(doc, name) != readings.render(name)]
    assert not stale, f"readings differ from their JSON (run `python -m benchmarks.readings`): {stale}"


def test_every_readme_figure_is_in_its_commands_output():
    assert missing_figures((ROOT / "README.md").read_text()) == []


def test_a_planted_wrong_number_fails():
    row = "| digits over 3 seeds (`python -m benchmarks.fidelity`) | bricks {} %, teacher 99.72 % |"
    readme = "## Measured figures\n\n| what | figure |\n|---|---|\n{}\n"
    published = readings.render("fidelity").split("10-way accuracy", 1)[0].rsplit("reach ", 1)[1].split(" %")[0]
    right = missing_figures(readme.format(row.format(published)))
    assert not [p for p in right if p.startswith("README row 'digits over")]
    wrong = missing_figures(readme.format(row.format("99.35 ± 0.64")))
    assert "README row 'digits over 3 seeds': 99.35 is not in reading:fidelity" in wrong
    doc = R.DOC.read_text()
    reading = readings.render("startup")
    figure = reading.split("takes ", 1)[1].split(" ms", 1)[0]
    planted = R.replace_block(doc, "startup", reading.replace(f"takes {figure} ms", "takes 32 ms"))
    assert R.block(planted, "startup") != reading


@pytest.mark.parametrize("a, b, wins, ties, losses, noise", [
    ([0.90, 0.80, 0.85], [0.80, 0.80, 0.86], 1, 1, 1, True),
    ([0.90, 0.91, 0.92], [0.80, 0.80, 0.80], 3, 0, 0, False),
])
def test_paired_counts_ties_as_ties(a, b, wins, ties, losses, noise):
    p = R.paired(a, b, test_images=100)
    assert (p.wins, p.ties, p.losses, p.within_noise) == (wins, ties, losses, noise)
    assert ("within noise" in p.phrase()) == noise


def test_fused_goal_is_met_only_where_the_printed_ratio_reaches_it():
    assert readings._goal({"eager": 1.504, "onnxruntime": 1.506}, 1.5) == \
        "met in eager only, **missed** in onnxruntime"
    assert readings._goal({"eager": 1.51, "onnxruntime": 2.0}, 1.5) == "**missed** in every runtime"


def test_fused_readings_name_the_cpu_and_the_load():
    for name in ("fused", "assembly-summary"):
        text = readings.render(name)
        data = R.load(readings.READINGS[name][0])
        assert data["cpu"] in text and "load" in text
