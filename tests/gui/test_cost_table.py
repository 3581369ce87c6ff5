"""The cost panel's tables read as a user reads them, checked against an independent count.

Bricks are dropped on the plate the way a user does; the test waits until no cell says it is
still measuring, then reads the cells' texts: the parts' shares add up to ~100 %, the common
module's share is its multiply-adds over the network's, and network / teacher is not inverted.
The reference figures come from ``kfstudio.assembly.measure.measure_costs`` (the CLI's path).
"""

from __future__ import annotations

import re

import pytest
import torch
from gestures import drag, frame, key_of, plate_point

from kfstudio.assembly.build import build_network
from kfstudio.assembly.measure import measure_costs
from kfstudio.core.teachers.loaders import load_teacher

TITLES = ("digit 2", "digit 6", "digit 9")


@pytest.fixture
def page_with_bricks(qtbot, open_build_page, digits_run):
    page = open_build_page(digits_run[1], size=(1500, 900))
    frame(page)
    page.set_teacher(load_teacher("builtin:digits"))
    for title in TITLES:
        drag(page, key_of(page, title), plate_point(page))
    yield page
    qtbot.waitUntil(lambda: not page.cost_panel.is_measuring(), timeout=30_000)


def cells(table) -> dict[str, list[str]]:
    """Each row's texts, keyed by its first cell."""
    rows = {}
    for r in range(table.rowCount()):
        texts = [table.item(r, c).text() if table.item(r, c) else "" for c in range(table.columnCount())]
        rows[texts[0]] = texts[1:]
    return rows


def settled(panel, bricks: int) -> bool:
    """Every figure landed: all rows shown and no cell still measuring."""
    if not panel.summary.isVisible() or panel.parts.rowCount() != 1 + bricks or panel.is_measuring():
        return False
    texts = [t for table in (panel.summary, panel.parts) for row in cells(table).values() for t in row]
    return all(t and "measuring" not in t.lower() for t in texts)


def percent(text: str) -> float:
    match = re.fullmatch(r"\s*([\d,.]+)\s*%\s*", text)
    assert match, f"not a percentage: {text!r}"
    return float(match.group(1).replace(",", ""))


def test_cost_table_cells_add_up_and_compare_the_right_way_round(qtbot, page_with_bricks):
    page = page_with_bricks
    panel = page.cost_panel
    qtbot.waitUntil(lambda: settled(panel, len(TITLES)), timeout=30_000)
    summary, parts = cells(panel.summary), cells(panel.parts)

    reference = measure_costs(build_network(page.graph), torch.device("cpu"), load_teacher("builtin:digits"),
                              latency=False)
    network, common, teacher = reference.network, reference.common, reference.teacher

    # the parts: common module first, then one row per attached brick, shares adding up to 100 %
    assert list(parts) == ["common module", *(f"+ {t}" for t in TITLES)]
    shares = [percent(row[2]) for row in parts.values()]
    assert sum(shares) == pytest.approx(100, abs=0.5 * len(shares))     # each share is rounded to 1 %
    assert shares[0] == pytest.approx(100 * common.macs / network.macs, abs=0.5)
    for title in TITLES:
        brick = reference.bricks[page.graph.brick(_node(page, title)).task.name]
        assert percent(parts[f"+ {title}"][2]) == pytest.approx(100 * brick.macs / network.macs, abs=0.5)
    assert parts["common module"][0] == f"{common.parameters:,}"

    # network against teacher: this network's figure over the teacher's, not the other way round
    assert summary["Parameters"][0] == f"{network.parameters:,}"
    assert summary["Parameters"][1] == f"{teacher.parameters:,}"
    assert percent(summary["Parameters"][2]) == pytest.approx(100 * network.parameters / teacher.parameters, abs=0.5)
    assert percent(summary["Multiply-adds"][2]) == pytest.approx(100 * network.macs / teacher.macs, abs=0.5)
    assert network.parameters != teacher.parameters and network.macs != teacher.macs   # an inversion would show


def _node(page, title: str) -> str:
    return next(n for n in page.graph.attached_ids() if page.graph.title(n) == title)
