"""The Factorize page's cost controls: a budget (a share of the teacher's multiply-adds that the
assembly of every brick may do), what the bricks read, and a live estimate of the cost against the
teacher before the run starts (the page fills it from ``kfstudio.gui.train.run_settings.estimate_cost``)."""

from __future__ import annotations

from dataclasses import replace

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QComboBox, QLabel, QVBoxLayout, QWidget

from kfstudio.core.factorize import FactorizeConfig
from kfstudio.core.students.budget import (AUTO_TASK_NET, RECOMMENDED_BRICK_INPUT, RECOMMENDED_BUDGET,
                                           RECOMMENDED_STEM_STRIDE)
from kfstudio.gui.train.run_settings import BRICK_INPUTS, BUDGETS


class BudgetBox(QWidget):
    changed = Signal()

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.budget_combo = QComboBox()
        for label, budget in BUDGETS:
            self.budget_combo.addItem(label, budget)
        self.budget_combo.setToolTip("Shrink the students (keeping the student size's proportions) until all the "
                                     "bricks together cost at most this share of the teacher")
        self.input_combo = QComboBox()
        for label, reads in BRICK_INPUTS:
            self.input_combo.addItem(label, reads)
        self.input_combo.setToolTip("What each brick reads: the image (a whole small network per task), or a stage "
                                    "of the common module (a shared trunk with small per-task tails: cheaper)")
        self.estimate = QLabel("")
        self.estimate.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        for w in (self.budget_combo, self.input_combo, self.estimate):
            layout.addWidget(w)
        # the command line's starting point too (budget.RECOMMENDED_*): the same run from either
        self.budget_combo.setCurrentIndex(self.budget_combo.findData(RECOMMENDED_BUDGET))
        self.input_combo.setCurrentIndex(self.input_combo.findData(RECOMMENDED_BRICK_INPUT))
        self.budget_combo.currentIndexChanged.connect(self.changed)
        self.input_combo.currentIndexChanged.connect(self.changed)

    def settings(self) -> dict:
        """The config fields this box sets (read on the GUI thread; the config may be made in a worker). The
        stem stride and the bricks' architecture (chosen with the budget) are the command line's defaults."""
        return {"budget": self.budget_combo.currentData(), "brick_input": self.input_combo.currentData(),
                "stem_stride": RECOMMENDED_STEM_STRIDE, "task_net": AUTO_TASK_NET}

    def apply(self, config: FactorizeConfig) -> FactorizeConfig:
        return replace(config, **self.settings())

    def show_estimate(self, text: str) -> None:
        """What the chosen students cost against the teacher (``estimate_cost``), or why there are none."""
        self.estimate.setText(text)
