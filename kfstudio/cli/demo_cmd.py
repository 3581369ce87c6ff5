"""``make run``: open the studio on a demo, or run the demo headless when there is no display."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run-demo", help="open the studio (headless digits demo when there is no display)",
                              description="Open the studio's welcome page, or a demo straight away; where there "
                              "is no display, factorize the demo in the terminal instead.")
    p.add_argument("demo", nargs="?", default=None, choices=["digits", "shapes"],
                   help="open this demo straight away (headless: which demo to run; default digits)")
    p.add_argument("--out", default="runs/digits-demo", help="where the headless demo writes its bricks")
    p.add_argument("--headless", action="store_true", help="run the demo in the terminal even with a display")
    p.set_defaults(run=run)

    gui = subparsers.add_parser("studio", help="open the studio")
    gui.add_argument("project", nargs="?", default=None, help="a .kfproj project file to open")
    gui.set_defaults(run=lambda args: open_studio(demo=None, project=args.project))


def has_display() -> bool:
    """Whether a Qt window can be shown: a display server (or an explicit platform) that Qt
    can really open. Qt aborts the whole process when its platform plugin cannot start (for
    example a DISPLAY without the xcb libraries), so that is tried in a child process first."""
    if not (os.environ.get("QT_QPA_PLATFORM") or sys.platform in ("win32", "darwin")
            or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    return qt_can_start()


def qt_can_start(timeout_s: float = 30.0) -> bool:
    probe = "from PySide6.QtWidgets import QApplication; QApplication([])"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def open_studio(demo: str | None, project: str | None = None) -> int:
    if not has_display():
        print("No usable display found, so the studio cannot open a window here.\n"
              "Run the headless demo with: kfstudio run-demo --headless", file=sys.stderr)
        return 1
    try:
        from kfstudio.gui.app import run_studio
    except ImportError as exc:
        print(f"The studio could not start: {exc}", file=sys.stderr)
        return 1
    return run_studio(demo=demo, project=project)


def run(args: argparse.Namespace) -> int:
    if has_display() and not args.headless:
        return open_studio(demo=args.demo)
    demo = args.demo or "digits"
    if not args.headless:
        print("No usable display found (no DISPLAY, or Qt cannot open it): running the "
              f"{demo} demo headless instead of opening the studio.")
    from kfstudio.cli import factorize_cmd
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    factorize_cmd.add_parser(sub)
    out = args.out if demo == "digits" or args.out != "runs/digits-demo" else f"runs/{demo}-demo"
    fargs = parser.parse_args(["factorize", "--teacher", f"builtin:{demo}", "--out", out])
    code = factorize_cmd.run(fargs)
    print(f"Open {Path(out).resolve()} to see the files; assemble a network from them with "
          f"'kfstudio assemble {out} --tasks ... --out model.onnx'.")
    return code
