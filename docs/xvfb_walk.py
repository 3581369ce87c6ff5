"""The newcomer's path through the studio in a real X window, driven with the real mouse.

    xvfb-run -a -s "-screen 0 1280x800x24" env QT_QPA_PLATFORM=xcb .venv/bin/python docs/xvfb_walk.py

or, for a talk, the same walk in presentation mode (F11) on a projector-sized screen with a
window manager that really makes the window fullscreen (run it at 1280x720 and 1600x1000):

    xvfb-run -a -s "-screen 0 1280x720x24" sh -c \
        "openbox & sleep 1; QT_QPA_PLATFORM=xcb .venv/bin/python docs/xvfb_walk.py --present"

(Debian: ``apt-get install xvfb openbox xdotool imagemagick libxcb-icccm4 libxcb-keysyms1``.) It opens
the studio as ``kfstudio studio`` does, then walks: Welcome -> the digits demo -> a short live
run -> the Build page after the run -> three bricks dragged from the palette onto the plate
(xdotool mousedown, mousemove in small steps, mouseup: X11 events, Qt's real drag and drop) ->
undo twice and redo twice (Ctrl+Z, Ctrl+Shift+Z) -> try it -> export -> save the project and
open it again. After each step the whole screen is captured with ImageMagick's
``import -window root`` into docs/screenshots/xvfb-N-step.png (with ``--present``:
xvfb-present-WxH-N-step.png, and the walk stops if the window's frame leaves the screen).
Settings, runs and the project go to a temporary folder, not the user's.

The driver runs inside the studio's process only to know where widgets are on screen (their
geometry) and when a step is done; every click, drag and key goes through the X server. A step
that does not reach its state in time stops the walk with a message and exit status 1.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
OUT = ROOT / "docs" / "screenshots"
STEP_TIMEOUT_S = 300.0  # a run on a busy 2-core machine


class Walk:
    """A scenario as a generator: each ``yield`` gives a condition; a timer resumes it when true."""

    def __init__(self, app, window, home: Path, present: bool = False) -> None:
        from PySide6.QtCore import QTimer

        self.app, self.window, self.home, self.present = app, window, home, present
        size = app.primaryScreen().geometry().size()
        self.prefix = f"xvfb-present-{size.width()}x{size.height()}-" if present else "xvfb-"
        self.failed: str | None = None
        self._gen = self.steps()
        self._until = lambda: True
        self._deadline = time.monotonic() + STEP_TIMEOUT_S
        self._what = "start"
        self.timer = QTimer()
        self.timer.setInterval(50)
        self.timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        if not self._until():
            if time.monotonic() > self._deadline:
                self.failed = f"step '{self._what}' did not finish in {STEP_TIMEOUT_S:.0f} s"
                subprocess.run(["import", "-window", "root", str(Path(tempfile.gettempdir()) / "xvfb-walk-failed.png")])
                self.timer.stop()
                self.app.exit(1)
            return
        try:
            self._what, self._until = next(self._gen)
            self._deadline = time.monotonic() + STEP_TIMEOUT_S
            print(f"  {self._what}", flush=True)
        except StopIteration:
            self.timer.stop()
            self.app.exit(0)
        except Exception as exc:  # a broken step: say which, stop
            self.failed = f"step '{self._what}' failed: {type(exc).__name__}: {exc}"
            self.timer.stop()
            self.app.exit(1)

    # ---- real input through the X server (never blocks the event loop: Popen, then wait)
    def xdo(self, *commands: str):
        """Run xdotool commands in order (with short pauses); a condition that holds when done."""
        script = " && ".join(commands)
        proc = subprocess.Popen(["sh", "-c", script])
        return lambda: proc.poll() is not None

    def centre(self, widget, rect=None) -> tuple[int, int]:
        from PySide6.QtCore import QPoint

        rect = rect if rect is not None else widget.rect()
        point = widget.mapToGlobal(QPoint(rect.center().x(), rect.center().y()))
        return point.x(), point.y()

    def click(self, widget, rect=None):
        x, y = self.centre(widget, rect)
        return self.xdo(f"xdotool mousemove {x} {y}", "sleep 0.2", "xdotool click 1")

    def key(self, *keys: str):
        return self.xdo(*(f"xdotool key --clearmodifiers {k} && sleep 0.4" for k in keys))

    def drag(self, start: tuple[int, int], end: tuple[int, int], steps: int = 24):
        """Press, move in small steps (Qt starts a drag after a few pixels), release."""
        (x0, y0), (x1, y1) = start, end
        moves = [f"xdotool mousemove {round(x0 + (x1 - x0) * i / steps)} {round(y0 + (y1 - y0) * i / steps)} "
                 "&& sleep 0.04" for i in range(1, steps + 1)]
        return self.xdo(f"xdotool mousemove {x0} {y0}", "sleep 0.2", "xdotool mousedown 1", "sleep 0.2",
                        f"xdotool mousemove {x0 + 6} {y0 + 4}", "sleep 0.1", *moves, "sleep 0.3", "xdotool mouseup 1")

    def shot(self, name: str):
        self.check_on_screen()
        path = OUT / (self.prefix + name.removeprefix("xvfb-"))
        proc = subprocess.Popen(["import", "-window", "root", str(path)])
        print(f"wrote {path.relative_to(ROOT)}", flush=True)
        return lambda: proc.poll() is not None

    def check_on_screen(self) -> None:
        """In presentation mode the whole window is on the screen (it grew past it before)."""
        screen = self.app.primaryScreen().geometry()
        # fullscreen has no frame; Qt keeps the margins of the frame it had before (1282x745 at -1,-20)
        frame = self.window.geometry() if self.window.isFullScreen() else self.window.frameGeometry()
        if self.present and not screen.contains(frame):
            raise RuntimeError(f"the window ({frame.width()}x{frame.height()} at {frame.x()},{frame.y()}) "
                               f"leaves the {screen.width()}x{screen.height()} screen")

    def settle(self, seconds: float = 1.0):
        end = time.monotonic() + seconds
        return lambda: time.monotonic() > end

    # ---- the path
    def steps(self):
        from PySide6.QtWidgets import QApplication, QFileDialog

        from kfstudio.gui.main_window import BUILD, FACTORIZE

        w = self.window
        if self.present:
            yield "F11: presentation mode", self.key("F11")
            yield "fullscreen", lambda: w.isFullScreen() and w.presentation_action.isChecked()
        yield "welcome", self.settle(1.5)
        yield "welcome shot", self.shot("xvfb-1-welcome.png")

        yield "click the digits demo", self.click(w.welcome_page.digits_button)
        yield "demo loaded", lambda: w.tabs.currentIndex() == FACTORIZE and w.factorize_page.choice is not None
        page = w.factorize_page
        page.epochs_spin.setValue(4)  # a short run: the demo's default is 20 epochs
        page.size_combo.setCurrentText("Small & fast")
        page.config_overrides = {"report_every": 1}
        yield "click Start", self.click(page.start_button)
        yield "training", lambda: (page.loss_plot.reports_seen >= 16 and page.accuracy_plot.point_count >= 1) \
            or not page.is_running
        yield "live run", self.settle(0.5)
        yield "live run shot", self.shot("xvfb-2-live-run.png")
        if self.present:  # the loss terms each on their own scale, for the back of the room
            yield "click Shapes", self.click(page.loss_plot.shapes_box)
            yield "shapes", lambda: page.loss_plot.shapes
            yield "shapes drawn", self.settle(0.5)
            yield "shapes shot", self.shot("xvfb-2b-shapes.png")
        yield "run saved, Build shown", lambda: not page.is_running and w.tabs.currentIndex() == BUILD
        yield "build", self.settle(1.5)
        yield "build shot", self.shot("xvfb-3-build-after-run.png")

        build = w.build_page
        for n, title in enumerate(("digit 3", "digit 7", "digit 8"), 1):
            key = next(e.key for e in build.palette.entries() if e.title == title)
            row = build.palette.model.index(build.palette.row_of(key), 0)
            build.palette.list.scrollTo(row)
            start = self.centre(build.palette.list.viewport(), build.palette.list.visualRect(row))
            spot = build.view.viewport().mapToGlobal(build.view.mapFromScene(build.scene.plate.sceneBoundingRect().center()))
            end = (spot.x(), spot.y())
            yield f"drag {title}", self.drag(start, end)
            yield f"{title} attached", lambda n=n: len(build.graph.attached_ids()) == n
            yield "after drag", self.settle(0.8)
        yield "dragged shot", self.shot("xvfb-4-dragged.png")

        build.view.setFocus()
        yield "undo twice", self.key("ctrl+z", "ctrl+z")
        yield "one left", lambda: len(build.graph.attached_ids()) == 1
        yield "redo twice", self.key("ctrl+shift+z", "ctrl+shift+z")
        yield "three again", lambda: len(build.graph.attached_ids()) == 3
        yield "after undo/redo", self.settle(1.0)
        yield "undo/redo shot", self.shot("xvfb-5-after-undo-redo.png")

        from PySide6.QtWidgets import QSpinBox

        stack = getattr(build, "right_stack", None)
        if stack is not None and stack.tabbed:  # a short screen: cost and try-it are tabs
            bar = stack.tabs.tabBar()
            yield "click the Try it tab", self.click(bar, bar.tabRect(stack.tabs.indexOf(build.try_panel)))
            yield "try-it tab shown", lambda: stack.tabs.currentWidget() is build.try_panel
        spin = build.try_panel.findChild(QSpinBox)
        labels = w.choice.test_dataset().labels["digit"].tolist()
        if spin is not None and 7 in labels:
            spin.setFocus()
            yield "pick a test image", self.xdo(
                f"xdotool key --clearmodifiers ctrl+a && xdotool type --delay 80 {labels.index(7)} "
                "&& xdotool key Return")
        yield "try it", self.settle(2.0)
        yield "try it shot", self.shot("xvfb-6-try-it.png")

        # still in the image number's field: X11 line editing would take Ctrl+E there, the studio lets it through
        yield "File > Export network (Ctrl+E)", self.key("ctrl+e")
        yield "export dialog", lambda: build.export_dialog is not None and build.export_dialog.isVisible()
        dialog = build.export_dialog  # ONNX, to the file it suggests: what a newcomer accepts
        yield "click Export", self.click(dialog.export_button)
        yield "exported", lambda: dialog.report is not None and Path(dialog.path_edit.text()).is_file()
        yield "export result", self.settle(0.8)
        yield "export shot", self.shot("xvfb-7-export.png")
        yield "close the dialog", self.key("Escape")

        project = self.home / "walk.kfproj"
        empty = build.view.viewport().rect().adjusted(10, 10, -10, -10)
        empty.setHeight(30)
        yield "click the canvas", self.click(build.view.viewport(), empty)  # a closed dialog takes the focus along
        yield "File > Save (Ctrl+S)", self.key("ctrl+s")
        yield "save dialog", lambda: isinstance(QApplication.activeModalWidget(), QFileDialog)
        yield "dialog shown", self.settle(1.0)  # the file name field has the focus, as for any user
        yield "type the file name", self.xdo("xdotool key --clearmodifiers ctrl+a",
                                             f"xdotool type --delay 20 {shlex.quote(str(project))}",
                                             "sleep 0.3", "xdotool key Return")
        yield "saved", lambda: project.is_file() and w.undo_stack.isClean()
        w.build_page.load_graph(type(w.build_page.graph)())  # an empty canvas, then open the file again
        w.undo_stack.setClean()
        yield "emptied", lambda: not w.build_page.graph.attached_ids()
        yield "click the canvas", self.click(build.view.viewport(), empty)
        yield "File > Open (Ctrl+O)", self.key("ctrl+o")
        yield "open dialog", lambda: isinstance(QApplication.activeModalWidget(), QFileDialog)
        yield "dialog shown", self.settle(1.0)
        yield "type the file name", self.xdo("xdotool key --clearmodifiers ctrl+a",
                                             f"xdotool type --delay 20 {shlex.quote(str(project))}",
                                             "sleep 0.3", "xdotool key Return")
        yield "reopened", lambda: len(w.build_page.graph.attached_ids()) == 3 and w.project_path == project
        yield "reopened view", self.settle(1.5)
        yield "reopened shot", self.shot("xvfb-8-reopened.png")


def main() -> int:
    if os.environ.get("QT_QPA_PLATFORM") != "xcb" or not os.environ.get("DISPLAY"):
        print("Run me under Xvfb: xvfb-run -a -s \"-screen 0 1280x800x24\" env QT_QPA_PLATFORM=xcb "
              ".venv/bin/python docs/xvfb_walk.py", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="kfstudio-walk-"))
    os.environ["KFSTUDIO_HOME"] = str(tmp / "home")
    os.environ["HOME"] = str(tmp)  # the file dialogs start here; no saved settings
    from PySide6.QtCore import QSettings

    from kfstudio.gui.app import apply_saved_appearance, make_application

    app = make_application(["kfstudio"])
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp / "settings"))
    apply_saved_appearance()
    from kfstudio.gui.main_window import MainWindow

    OUT.mkdir(parents=True, exist_ok=True)
    window = MainWindow(home=tmp / "home", autosave_s=3600)
    window.move(0, 0)
    window.resize(1280, 800)  # no window manager under Xvfb: the window is the screen
    window.show()
    window.begin_session()
    walk = Walk(app, window, tmp, present="--present" in sys.argv[1:])
    walk.timer.start()
    code = app.exec()
    if walk.failed:
        print(f"xvfb walk: {walk.failed}", file=sys.stderr)
    window.undo_stack.setClean()
    window.close()
    return code or (1 if walk.failed else 0)


if __name__ == "__main__":
    sys.exit(main())
