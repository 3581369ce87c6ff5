"""Start-up: from launch to the welcome window shown, and ``kfstudio --help``.

Every measurement is a fresh subprocess, timed from the parent (launch to the line the child
prints). The window is measured offscreen: the child builds the studio the way
``kfstudio.gui.app.run_studio`` does, shows the MainWindow (its first tab is the Welcome
page), processes events once and prints a line. ``kfstudio --help`` must not import Qt or
torch: the benchmark asserts it and exits with status 1 if it does.

    python -m benchmarks.startup [--quick] [--runs N]
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import _common as C
from benchmarks import _readings as R
from benchmarks.readings import write_readings

WINDOW_TARGET_MS = 800
HEAVY = ("torch", "PySide6", "shiboken6", "pyqtgraph", "numpy", "sklearn")

GUI_CHILD = r"""
import json, sys, time
t = time.perf_counter()
marks = {}
def mark(name):
    global t
    now = time.perf_counter(); marks[name] = now - t; t = now
from PySide6.QtWidgets import QApplication
mark("import PySide6")
from kfstudio.gui.app import apply_saved_appearance, make_application
app = make_application()
apply_saved_appearance()
mark("QApplication + theme")
from kfstudio.gui.main_window import MainWindow
mark("import the main window")
torch_before = "torch" in sys.modules
window = MainWindow()
mark("build MainWindow")
window.show()
app.processEvents()
mark("show + first events")
print("SHOWN " + json.dumps({"marks": marks, "torch_imported": torch_before or "torch" in sys.modules,
                             "pyqtgraph_imported": "pyqtgraph" in sys.modules,
                             "tab": window.tabs.tabText(window.tabs.currentIndex())}), flush=True)
window.recovery.end_session() if hasattr(window.recovery, "end_session") else None
"""

HELP_CHILD = r"""
import sys
from kfstudio.cli.app import main
try:
    main(["--help"])
except SystemExit:
    pass
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(%r))
print("LOADED " + ",".join(heavy), file=sys.stderr)
""" % (HEAVY,)


def _env(home: Path) -> dict:
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"),
               XDG_DATA_HOME=str(home / ".local/share"), XDG_CACHE_HOME=str(home / ".cache"))
    return env


def time_until(cmd: list[str], marker: str | None, env: dict) -> tuple[float, str]:
    """Seconds from launch until ``marker`` is printed (or the process exits), and that line."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    line = ""
    if marker:
        for line in proc.stdout:
            if line.startswith(marker):
                break
        elapsed = time.perf_counter() - t0
        out, err = proc.communicate(timeout=120)
    else:
        out, err = proc.communicate(timeout=120)
        elapsed = time.perf_counter() - t0
        line = out
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed ({proc.returncode}):\n{err[-2000:]}")
    return elapsed, line if marker else err


def median_runs(n: int, fn) -> tuple[float, float, list]:
    values, extra = [], []
    for _ in range(n):
        v, e = fn()
        values.append(v)
        extra.append(e)
    return statistics.median(values), min(values), extra


def main() -> None:
    args = C.parse_args(__doc__.splitlines()[0], lambda p: p.add_argument("--runs", type=int, default=7))
    runs = 2 if args.quick else args.runs
    py = sys.executable
    kfstudio = str(Path(py).with_name("kfstudio"))
    rows, failed = {}, []
    with tempfile.TemporaryDirectory(prefix="kf-startup-") as tmp:
        env = _env(Path(tmp))
        cases = [
            ("python", "`python -c pass` (the interpreter alone)", [py, "-c", "pass"]),
            ("torch", "`python -c 'import torch'` (for scale)", [py, "-c", "import torch"]),
            ("help", "`kfstudio --help`", [kfstudio, "--help"]),
            ("factorize_help", "`kfstudio factorize --help`", [kfstudio, "factorize", "--help"]),
        ]
        for key, name, cmd in cases:
            med, best, _ = median_runs(runs, lambda cmd=cmd: time_until(cmd, None, env))
            rows[key] = {"what": name, "median_ms": round(med * 1000), "best_ms": round(best * 1000)}
        _, _, loaded = median_runs(1, lambda: time_until([py, "-c", HELP_CHILD], None, env))
        heavy = next(ln for ln in loaded[0].splitlines() if ln.startswith("LOADED"))[len("LOADED"):].strip()
        heavy_set = set(filter(None, heavy.split(",")))
        if heavy_set & {"torch", "PySide6", "shiboken6", "pyqtgraph"}:
            failed.append(f"`kfstudio --help` imported {heavy}")
        med, best, shown = median_runs(runs, lambda: time_until([py, "-c", GUI_CHILD], "SHOWN", env))
        rows["window"] = {"what": f"studio window shown (offscreen, launch to MainWindow.show() + processEvents; "
                                  f"target <= {WINDOW_TARGET_MS} ms)", "median_ms": round(med * 1000),
                          "best_ms": round(best * 1000)}
        if med * 1000 > WINDOW_TARGET_MS:
            print(f"note: the window took {med * 1000:.0f} ms (target {WINDOW_TARGET_MS} ms)", file=sys.stderr)
    info = [json.loads(s.split(" ", 1)[1]) for s in shown]
    marks = {k: statistics.median(i["marks"][k] for i in info) for k in info[0]["marks"]}
    body = [C.machine_header(args, notes=[
        f"{runs} fresh processes per row (the first may pay for a cold file cache); HOME pointed at an empty "
        "temporary folder so no saved settings or crash-recovery prompt interfere.",
        "The GUI exposes no 'shown' hook, so the child script repeats run_studio's steps and prints when "
        "MainWindow.show() has returned and events were processed once; the parent times launch to that line."]),
        "", C.table(["what", "median ms", "best ms"], [[r["what"], r["median_ms"], r["best_ms"]] for r in rows.values()]),
        "", f"Modules `kfstudio --help` loaded among {', '.join(HEAVY)}: **{heavy or 'none'}** "
            f"({'FAIL' if failed else 'pass'}: it must load neither Qt nor torch).",
        "", f"The window opened on the '{info[0]['tab']}' tab; torch imported before it was shown: "
            f"**{'yes' if info[0]['torch_imported'] else 'no'}**; pyqtgraph: "
            f"**{'yes' if info[0].get('pyqtgraph_imported') else 'no'}**. Where the window's start-up time goes (median, in "
            "the child, after the interpreter started):", "",
        C.table(["phase", "ms"], [[k, f"{v * 1000:.0f}"] for k, v in marks.items()])]
    C.write_section(args, "startup", "## Start-up\n\n" + "\n".join(body))
    R.save("startup.json", {**R.run_meta(args), "runs": runs, "window_target_ms": WINDOW_TARGET_MS, "rows": rows,
                            "help_loaded": sorted(heavy_set), "window_tab": info[0]["tab"],
                            "torch_before_window": bool(info[0]["torch_imported"]),
                            "pyqtgraph_before_window": bool(info[0].get("pyqtgraph_imported")),
                            "phases_ms": {k: round(v * 1000) for k, v in marks.items()}}, C.FIG_DIR)
    if not args.no_write:
        write_readings("startup")
    if failed:
        print("FAILED: " + "; ".join(failed), file=sys.stderr)
        raise SystemExit(1)


if __name__ == "__main__":
    main()
