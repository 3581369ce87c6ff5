"""`make run` must never die of a Qt plugin error: no display means the headless demo."""

from __future__ import annotations

from kfstudio.cli import demo_cmd
from kfstudio.cli.app import main


def test_no_display_runs_the_demo_headless_and_says_so(monkeypatch, tmp_path, capsys):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    assert demo_cmd.has_display() is False
    ran = {}

    def fake_factorize(args):  # the real demo takes a minute; the CLI tests cover factorize itself
        ran["teacher"], ran["out"] = args.teacher, args.out
        return 0

    monkeypatch.setattr("kfstudio.cli.factorize_cmd.run", fake_factorize)
    assert main(["run-demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "No usable display found" in out and "headless" in out
    assert ran == {"teacher": "builtin:digits", "out": str(tmp_path / "demo")}


def test_a_display_qt_cannot_open_counts_as_no_display(monkeypatch):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setenv("DISPLAY", ":987")  # no X server there: the xcb plugin cannot connect
    assert demo_cmd.has_display() is False


def test_the_offscreen_platform_counts_as_a_display(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert demo_cmd.has_display() is True
