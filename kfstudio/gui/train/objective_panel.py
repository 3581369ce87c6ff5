"""The Factorize page's "Objective" section (the IMB weights, folded away by default) and its
InfoMax health badge.

The section only edits an ``IMBWeights``, the Gaussian-bricks switch and the latent size; the
page merges them into the run's config. The badge reads the per-stage cosines a StepReport carries and judges
them with the same rule as the CLI (``kfstudio.core.imb.infomax_collapsed``), at the end of an
epoch and after warm-up.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QLabel, QSpinBox, QToolButton,
                               QVBoxLayout, QWidget)

from kfstudio.core.imb import (HEALTH_WARMUP_STEPS, INFOMAX_LABELS, INFOMAX_VARIANTS, IMBWeights,
                               infomax_collapsed)
from kfstudio.core.students.budget import RECOMMENDED_AUGMENT
from kfstudio.core.students.networks import MAX_Z_DIM
from kfstudio.gui.theme import theme_manager

# (field, label, minimum, maximum, step, decimals, tooltip)
_WEIGHTS = (
    ("l_feat", "InfoMax weight", 0.0, 100.0, 0.1, 3,
     "How hard the common module is pushed to keep what the teacher's layers know. 0 turns it off."),
    ("l_kd", "Distillation weight", 0.0, 100.0, 0.05, 3,
     "How hard each brick is pushed to give the same answers as the teacher (soft labels). 0 turns it off."),
    ("temperature", "Distillation temperature", 0.1, 100.0, 1.0, 2,
     "How soft the teacher's answers are made before copying them: higher shows more of its second guesses."),
    ("w_task", "Brick-alone weight", 0.0, 100.0, 0.1, 3,
     "How much each brick must also solve its task with its own features, without the common module."),
    ("beta", "Brick compactness (InfoMin)", 0.0, 10.0, 0.001, 4,
     "How hard each brick is pushed to keep only what its task needs. 0 turns it off."),
)


class ObjectivePanel(QWidget):
    """A fold-out form for the InfoMax-Bottleneck weights; collapsed until the user opens it."""

    changed = Signal()

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.toggle = QToolButton(text="Objective", checkable=True, checked=False)
        self.toggle.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextBesideIcon)
        self.toggle.setArrowType(Qt.ArrowType.RightArrow)
        self.toggle.setToolTip("The weights of the training objective's terms; the defaults suit most runs")
        self.toggle.toggled.connect(self._on_toggle_toggled)
        self.body = QWidget()
        form = QFormLayout(self.body)
        form.setContentsMargins(12, 0, 0, 0)
        self.infomax_combo = QComboBox()
        for variant in INFOMAX_VARIANTS:
            self.infomax_combo.addItem(INFOMAX_LABELS[variant], variant)
        self.infomax_combo.setToolTip("How the InfoMax term averages its matching pairs. 1/B keeps the common module "
                                      "learning; the authors' own code divides by B² and collapses (see the badge).")
        self.infomax_combo.currentIndexChanged.connect(self.changed)
        form.addRow("InfoMax variant", self.infomax_combo)
        defaults = IMBWeights()
        self.spins: dict[str, QDoubleSpinBox] = {}
        for name, label, low, high, step, decimals, tip in _WEIGHTS:
            spin = QDoubleSpinBox(minimum=low, maximum=high, singleStep=step, decimals=decimals)
            spin.setValue(getattr(defaults, name))
            spin.setToolTip(tip)
            spin.valueChanged.connect(self.changed)
            self.spins[name] = spin
            form.addRow(label, spin)
        self.gaussian_check = QCheckBox("Gaussian bricks")
        self.gaussian_check.setToolTip("Each brick predicts a mean and a spread and samples its features while "
                                       "training, as a variational autoencoder does")
        self.gaussian_check.toggled.connect(self.changed)
        form.addRow("", self.gaussian_check)
        self.z_dim_spin = QSpinBox(minimum=0, maximum=MAX_Z_DIM, singleStep=1)
        self.z_dim_spin.setSpecialValueText("automatic")  # 0 shows as "automatic": no projection
        self.z_dim_spin.setValue(0)
        self.z_dim_spin.setToolTip("How many numbers the common module and each brick use to describe an image. "
                                   "Automatic uses the common module's own width; a small size (the paper uses "
                                   "8 to 12 with Gaussian bricks) makes the bricks' features easier to read one by "
                                   "one. Bricks work only with a common module of their own size.")
        self.z_dim_spin.valueChanged.connect(self.changed)
        form.addRow("Latent size", self.z_dim_spin)
        self.shift_check = QCheckBox("Train on shifted copies (labelled by the teacher)")
        self.shift_check.setChecked(RECOMMENDED_AUGMENT)
        self.shift_check.setToolTip("Train on copies of the images moved by up to a pixel, each labelled by the teacher: "
                                    "the bricks learn from views the data does not hold (recommended; the teacher then "
                                    "runs on every batch, so a step takes a little longer)")
        self.shift_check.toggled.connect(self.changed)
        form.addRow("", self.shift_check)
        self.body.setVisible(False)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.toggle, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.body)

    def weights(self) -> IMBWeights:
        values = {name: spin.value() for name, spin in self.spins.items()}
        return IMBWeights(infomax=self.infomax_combo.currentData(), **values)

    def gaussian_bricks(self) -> bool:
        return self.gaussian_check.isChecked()

    def augment(self) -> bool:
        return self.shift_check.isChecked()

    def z_dim(self) -> int | None:
        """The chosen latent size; None for "automatic" (the common module's last stage width)."""
        return self.z_dim_spin.value() or None

    def _on_toggle_toggled(self, opened: bool) -> None:
        self.toggle.setArrowType(Qt.ArrowType.DownArrow if opened else Qt.ArrowType.RightArrow)
        self.body.setVisible(opened)


class InfoMaxBadge(QLabel):
    """"InfoMax: …" in plain words: waiting, healthy or collapsed."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setWordWrap(True)
        self.state = "idle"
        self._last_step = None
        self._enabled = True
        self.reset()
        theme_manager().changed.connect(self._apply_look)

    def reset(self, enabled: bool = True) -> None:
        """Start over for a new run; ``enabled`` is False when the run's InfoMax weight is 0."""
        self._last_step, self._enabled = None, enabled
        if enabled:
            self._show("idle", "InfoMax: not measured yet.", "")
        else:
            self._show("off", "InfoMax: off (its weight is 0).", "")

    def take_report(self, report) -> None:
        """Keep the latest step report; judge it when an epoch ends (an eval report)."""
        if not self._enabled:
            return
        if report.kind == "step":
            self._last_step = report
        elif report.kind == "eval" and self._last_step is not None and self._last_step.infomax_health:
            self._judge(self._last_step)

    def _judge(self, step) -> None:
        health = step.infomax_health
        own = sum(h.diagonal for h in health) / len(health)
        other = sum(h.off_diagonal for h in health) / len(health)
        figures = f"matching cosine {own:+.2f} for an image's own pair, {other:+.2f} for other images"
        if step.step < HEALTH_WARMUP_STEPS:
            self._show("warming", "InfoMax: warming up; judged after a few more steps.", figures)
        elif infomax_collapsed(health):
            self._show("collapsed", "InfoMax: collapsed. The common module no longer learns from the teacher's "
                       "features; pick the 1/B variant under Objective.", figures)
        else:
            self._show("healthy", "InfoMax: healthy. The common module's features match the teacher's.", figures)

    def _apply_look(self) -> None:
        """The theme's own ok/bad colours (readable on light and dark) and its font at the current
        scale; a font set in a style sheet would not grow in presentation mode."""
        theme = theme_manager().theme
        colour = {"collapsed": theme.bad, "healthy": theme.ok}.get(self.state)
        self.setStyleSheet(f"color: {colour};" if colour else "")
        self.setFont(theme_manager().font(bold=colour is not None))

    def _show(self, state: str, text: str, tip: str) -> None:
        self.state = state
        self._apply_look()
        self.setText(text)
        self.setToolTip(tip or "Whether the InfoMax term still teaches the common module; checked every epoch")
