"""``make run``: open the studio, or say exactly why not; headless only where there is no display.

With a display, Qt is first started in a child process (Qt aborts the whole process when its
platform plugin cannot start). If that fails on Linux, ``ldd`` on the xcb platform plugin
inside the installed PySide6 names the shared libraries that are really missing (Qt's own
message blames ``libxcb-cursor0`` even when that one is installed); they are installed with
apt-get when we are root, or the one ``sudo apt-get install ...`` line is printed. Only with
no display at all does a short headless demo run instead.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# Shared libraries Qt's xcb plugin needs -> the Debian/Ubuntu package that ships each.
DEBIAN_PACKAGES = {
    "libxcb-icccm.so.4": "libxcb-icccm4", "libxcb-keysyms.so.1": "libxcb-keysyms1",
    "libxcb-cursor.so.0": "libxcb-cursor0", "libxkbcommon-x11.so.0": "libxkbcommon-x11-0",
    "libxkbcommon.so.0": "libxkbcommon0", "libxcb-image.so.0": "libxcb-image0",
    "libxcb-render-util.so.0": "libxcb-render-util0", "libxcb-shape.so.0": "libxcb-shape0",
    "libxcb-randr.so.0": "libxcb-randr0", "libxcb-xfixes.so.0": "libxcb-xfixes0", "libxcb-sync.so.1": "libxcb-sync1",
    "libxcb-xkb.so.1": "libxcb-xkb1", "libxcb-render.so.0": "libxcb-render0", "libxcb-shm.so.0": "libxcb-shm0",
    "libxcb-xinput.so.0": "libxcb-xinput0", "libxcb-glx.so.0": "libxcb-glx0", "libxcb-util.so.1": "libxcb-util1",
    "libxcb.so.1": "libxcb1", "libX11-xcb.so.1": "libx11-xcb1", "libX11.so.6": "libx11-6", "libSM.so.6": "libsm6",
    "libICE.so.6": "libice6", "libEGL.so.1": "libegl1", "libGL.so.1": "libgl1", "libOpenGL.so.0": "libopengl0",
    "libGLX.so.0": "libglx0", "libfontconfig.so.1": "libfontconfig1", "libfreetype.so.6": "libfreetype6",
    "libdbus-1.so.3": "libdbus-1-3", "libglib-2.0.so.0": "libglib2.0-0",
}
# The one line for README readers on other Debian-like systems.
XCB_PACKAGES = ("libxcb-cursor0 libxcb-icccm4 libxcb-keysyms1 libxkbcommon-x11-0 libxcb-image0 "
                "libxcb-render-util0 libxcb-shape0 libxcb-randr0 libegl1 libgl1 libfontconfig1 libdbus-1-3")
HEADLESS_EPOCHS = 2  # the headless demo is a few seconds, not the full schedule


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("run-demo", help="open the studio (a short headless demo when there is no display)",
                              description="Open the studio's welcome page, or a demo straight away; where there "
                              "is no display at all, factorize the demo briefly in the terminal instead.")
    p.add_argument("demo", nargs="?", default=None, choices=["digits", "shapes", "shapes-hard"],
                   help="open this demo straight away (headless: which demo to run; default digits)")
    p.add_argument("--out", default="runs/digits-demo", help="where the headless demo writes its bricks")
    p.add_argument("--headless", action="store_true", help="run the demo in the terminal even with a display")
    p.set_defaults(run=run)

    gui = subparsers.add_parser("studio", help="open the studio")
    gui.add_argument("project", nargs="?", default=None, help="a .kfproj project file to open")
    gui.set_defaults(run=lambda args: open_studio(demo=None, project=args.project))


# ---------------------------------------------------------------- is there a display Qt can open?

def display_present() -> bool:
    """A display server to talk to (or an explicit Qt platform, or a desktop OS)."""
    return bool(os.environ.get("QT_QPA_PLATFORM") or sys.platform in ("win32", "darwin")
                or os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def qt_probe(timeout_s: float = 30.0) -> tuple[bool, str]:
    """Start a QApplication in a child process: (it worked, what Qt printed)."""
    probe = "from PySide6.QtWidgets import QApplication; QApplication([])"
    try:
        done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return False, str(exc)
    return done.returncode == 0, (done.stderr or "").strip()


def has_display() -> bool:
    """Whether a Qt window can really be shown here."""
    return display_present() and qt_probe()[0]


def xcb_plugin() -> Path | None:
    """The xcb platform plugin of the installed PySide6 (found without importing Qt)."""
    spec = importlib.util.find_spec("PySide6")
    if spec is None or not spec.submodule_search_locations:
        return None
    plugin = Path(list(spec.submodule_search_locations)[0]) / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return plugin if plugin.is_file() else None


def parse_ldd(text: str) -> list[str]:
    """The libraries ``ldd`` reports as "not found", each once, in order."""
    found = []
    for match in re.finditer(r"^\s*(\S+)\s+=>\s+not found", text, flags=re.MULTILINE):
        if match.group(1) not in found:
            found.append(match.group(1))
    return found


def missing_libraries() -> list[str]:
    """Shared libraries Qt's xcb plugin needs that this system lacks ([] when none, or no ldd)."""
    plugin = xcb_plugin()
    if plugin is None or shutil.which("ldd") is None:
        return []
    done = subprocess.run(["ldd", str(plugin)], capture_output=True, text=True)
    return parse_ldd(done.stdout)


def debian_packages(libraries: list[str]) -> tuple[list[str], list[str]]:
    """(packages to install, libraries no package is known for)."""
    packages, unknown = [], []
    for lib in libraries:
        package = DEBIAN_PACKAGES.get(lib)
        if package is None:
            unknown.append(lib)
        elif package not in packages:
            packages.append(package)
    return packages, unknown


def can_install() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def install_packages(packages: list[str]) -> bool:
    """apt-get install (after an update when the first try fails); True when it worked."""
    command = ["apt-get", "install", "-y", "--no-install-recommends", *packages]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(command, env=env).returncode == 0:
        return True
    subprocess.run(["apt-get", "update"], env=env)
    return subprocess.run(command, env=env).returncode == 0


def ensure_qt_can_start() -> str | None:
    """None when a Qt window can open; else what stops it, in words (after installing what we can)."""
    ok, qt_says = qt_probe()
    if ok:
        return None
    packages, unknown = debian_packages(missing_libraries())
    if packages and can_install():
        print(f"Qt cannot open a window yet: it needs {', '.join(packages)}. Installing them with apt-get "
              "(you are root):", flush=True)
        if install_packages(packages):
            ok, qt_says = qt_probe()
            if ok:
                print("Installed. Opening the studio.", flush=True)
                return None
        return (f"Installing {' '.join(packages)} did not make Qt start. Qt says:\n{_tail(qt_says)}")
    if packages:
        line = f"sudo apt-get install -y {' '.join(packages)}"
        extra = f" (and a package providing {', '.join(unknown)})" if unknown else ""
        return (f"Qt cannot open a window: the system lacks {', '.join(packages)}{extra}.\n"
                f"Install them with this one line, then run 'make run' again:\n\n    {line}\n")
    if unknown:
        return f"Qt cannot open a window: these system libraries are missing: {', '.join(unknown)}."
    return f"Qt cannot open the display {os.environ.get('DISPLAY', '')!s}. Qt says:\n{_tail(qt_says)}"


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.splitlines()[-lines:]) or "(nothing)"


# ---------------------------------------------------------------- the commands

def open_studio(demo: str | None, project: str | None = None) -> int:
    if not display_present():
        print("There is no display here (no DISPLAY or WAYLAND_DISPLAY), so the studio cannot open a window.\n"
              "Run the short headless demo with: kfstudio run-demo --headless", file=sys.stderr)
        return 1
    problem = ensure_qt_can_start()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    try:
        from kfstudio.gui.app import run_studio
    except ImportError as exc:
        print(f"The studio could not start: {exc}", file=sys.stderr)
        return 1
    return run_studio(demo=demo, project=project)


def run(args: argparse.Namespace) -> int:
    if display_present() and not args.headless:
        return open_studio(demo=args.demo)
    demo = args.demo or "digits"
    if not args.headless:
        print(f"No display found (no DISPLAY or WAYLAND_DISPLAY): a short headless {demo} demo runs instead "
              "of the studio.")
    return headless_demo(demo, args.out)


def headless_demo(demo: str, out: str) -> int:
    """A few seconds of factorization in the terminal; says what it wrote and how to see it."""
    from kfstudio.cli import factorize_cmd

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    factorize_cmd.add_parser(sub)
    out = out if demo == "digits" or out != "runs/digits-demo" else f"runs/{demo}-demo"
    fargs = parser.parse_args(["factorize", "--teacher", f"builtin:{demo}", "--out", out,
                               "--epochs", str(HEADLESS_EPOCHS), "--common-width", "0.5", "--task-width", "0.25"])
    code = factorize_cmd.run(fargs)
    folder = Path(out).resolve()
    print(f"\nWrote the common module and one brick per task to {folder} (a short run of {HEADLESS_EPOCHS} "
          f"epochs with small students).\n"
          f"On a machine with a display, open the studio with 'make run' (or 'kfstudio studio') and drag these "
          f"bricks in the Build page; in the terminal, assemble a network with "
          f"'kfstudio assemble {out} --tasks ... --out model.onnx'.")
    return code
