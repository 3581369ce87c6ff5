"""The Objective section's fields: "Latent size" is automatic by default and a size reaches the run's
config; "Train on shifted copies" is on by default and a click turns it off."""

from __future__ import annotations

from PySide6.QtCore import Qt


def _opened_objective(qtbot, window, choice):
    """The Factorize page with ``choice`` and its Objective section opened by a click."""
    page = window.factorize_page
    window.set_choice(choice)
    qtbot.mouseClick(page.objective_panel.toggle, Qt.MouseButton.LeftButton)
    return page, page.objective_panel


def test_the_latent_size_field_defaults_to_automatic_and_reaches_the_config(qtbot, window, digits_choice):
    page, panel = _opened_objective(qtbot, window, digits_choice)
    spin = panel.z_dim_spin
    assert spin.text() == "automatic" and page.config().z_dim is None
    assert "size" in spin.toolTip() and len(spin.toolTip()) > 40
    spin.selectAll()
    qtbot.keyClicks(spin, "8")
    assert page.config().z_dim == 8
    spin.setValue(spin.minimum())  # back to automatic
    assert spin.text() == "automatic" and page.config().z_dim is None


def test_shifted_copies_are_on_by_default_and_a_click_turns_them_off(qtbot, window, digits_choice):
    page, panel = _opened_objective(qtbot, window, digits_choice)
    check = panel.shift_check
    assert check.isVisible() and check.isChecked() and page.config().augment is True
    assert "teacher" in check.toolTip()
    check.click()   # as a user does: a click, not setChecked
    assert page.config().augment is False
    check.click()
    assert page.config().augment is True
