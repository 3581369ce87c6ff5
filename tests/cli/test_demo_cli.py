"""`make run` must never die of a Qt plugin error: it names (or installs) what Qt lacks, and only
with no display at all runs a short headless demo."""

from __future__ import annotations

import pytest

from kfstudio.cli import demo_cmd
from kfstudio.cli.app import main


def test_no_display_runs_the_demo_headless_and_says_so(monkeypatch, tmp_path, capsys):
    for var in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM"):
        monkeypatch.delenv(var, raising=False)
    assert demo_cmd.has_display() is False
    ran = {}

    def fake_factorize(args):  # the CLI tests cover factorize itself
        ran["teacher"], ran["out"], ran["epochs"] = args.teacher, args.out, args.epochs
        return 0

    monkeypatch.setattr("kfstudio.cli.factorize_cmd.run", fake_factorize)
    assert main(["run-demo", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "No display found" in out and "short headless" in out
    assert ran == {"teacher": "builtin:digits", "out": str(tmp_path / "demo"), "epochs": demo_cmd.HEADLESS_EPOCHS}
    assert f"Wrote the common module and one brick per task to {tmp_path / 'demo'}" in out and "make run" in out


LDD = """\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f3a)
\tlibxcb-icccm.so.4 => not found
\tlibxcb-keysyms.so.1 => not found
\tlibxcb-cursor.so.0 => /lib/x86_64-linux-gnu/libxcb-cursor.so.0 (0x00007f3b)
\tlibxcb-icccm.so.4 => not found
\tlibweird.so.9 => not found
"""


def test_ldd_output_names_the_missing_libraries_and_their_packages():
    libs = demo_cmd.parse_ldd(LDD)
    assert libs == ["libxcb-icccm.so.4", "libxcb-keysyms.so.1", "libweird.so.9"]
    assert demo_cmd.debian_packages(libs) == (["libxcb-icccm4", "libxcb-keysyms1"], ["libweird.so.9"])


def test_the_real_xcb_plugin_is_found_and_read_by_ldd():
    plugin = demo_cmd.xcb_plugin()
    assert plugin is not None and plugin.name == "libqxcb.so"
    assert all(lib.endswith(tuple(".so.%d" % i for i in range(10))) for lib in demo_cmd.missing_libraries())


def _qt_fails_for_want_of(monkeypatch, libs):
    probes = []
    monkeypatch.setattr(demo_cmd, "qt_probe", lambda: (probes.append(1), (len(probes) > 1 and installed, "xcb-cursor0"))[1])
    monkeypatch.setattr(demo_cmd, "missing_libraries", lambda: libs)
    installed = []
    return installed


def test_not_root_prints_the_one_install_line_and_stops(monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":0")
    _qt_fails_for_want_of(monkeypatch, ["libxcb-icccm.so.4", "libxcb-keysyms.so.1"])
    monkeypatch.setattr(demo_cmd, "can_install", lambda: False)
    monkeypatch.setattr("kfstudio.cli.factorize_cmd.run", lambda args: pytest.fail("no headless run with a display"))
    assert demo_cmd.open_studio(demo=None) == 1
    err = capsys.readouterr().err
    assert "sudo apt-get install -y libxcb-icccm4 libxcb-keysyms1" in err and "xcb-cursor0" not in err


def test_root_installs_the_packages_says_so_and_opens_the_studio(monkeypatch, capsys):
    monkeypatch.setenv("DISPLAY", ":0")
    installed = _qt_fails_for_want_of(monkeypatch, ["libxcb-keysyms.so.1"])
    monkeypatch.setattr(demo_cmd, "can_install", lambda: True)
    monkeypatch.setattr(demo_cmd, "install_packages", lambda pkgs: installed.extend(pkgs) or True)
    opened = []
    monkeypatch.setattr("kfstudio.gui.app.run_studio", lambda demo, project: opened.append(demo) or 0)
    assert demo_cmd.open_studio(demo="digits") == 0
    assert installed == ["libxcb-keysyms1"] and opened == ["digits"]
    assert "Installing them with apt-get" in capsys.readouterr().out


def test_a_display_qt_cannot_open_counts_as_no_display(monkeypatch):
    monkeypatch.delenv("QT_QPA_PLATFORM", raising=False)
    monkeypatch.setenv("DISPLAY", ":987")  # no X server there: the xcb plugin cannot connect
    assert demo_cmd.has_display() is False


def test_the_offscreen_platform_counts_as_a_display(monkeypatch):
    monkeypatch.setenv("QT_QPA_PLATFORM", "offscreen")
    assert demo_cmd.has_display() is True


def test_the_short_headless_demo_writes_bricks_and_reports(tmp_path, capsys, monkeypatch):
    import torch

    from kfstudio.io.reports import read_reports

    monkeypatch.setattr("kfstudio.core.devices.default_threads", lambda reserve=0: 1)
    monkeypatch.setattr(demo_cmd, "HEADLESS_EPOCHS", 1)  # the demo's 2 epochs, halved for the suite
    before = torch.get_num_threads()
    try:
        assert demo_cmd.headless_demo("digits", str(tmp_path / "demo")) == 0
    finally:
        torch.set_num_threads(before)
    folder = tmp_path / "demo"
    assert (folder / "common.safetensors").is_file() and len(list((folder / "bricks").glob("*.json"))) == 10
    reports = read_reports(folder)  # the studio draws these again when the folder is opened
    assert [r.epoch for r in reports if r.kind == "eval"] == [1] and reports[0].kind == "setup"
    assert "Wrote the common module and one brick per task" in capsys.readouterr().out
