"""The Welcome page is on screen before torch (or pyqtgraph) is imported; the pages follow."""

from __future__ import annotations

import json
import os
import subprocess
import sys

CHILD = r"""
import json, sys
from kfstudio.gui.app import make_application
app = make_application()
from kfstudio.gui.main_window import MainWindow, FACTORIZE
window = MainWindow()
window.show()
app.processEvents()
shown = {"torch": "torch" in sys.modules, "pyqtgraph": "pyqtgraph" in sys.modules,
         "tab": window.tabs.tabText(window.tabs.currentIndex())}
window.tabs.setCurrentIndex(FACTORIZE)  # the user asks for a page: it is built at once
shown["factorize"] = type(window.tabs.currentWidget()).__name__
shown["torch_after"] = "torch" in sys.modules
window.recovery.end_session()
print(json.dumps(shown))
"""


def test_window_shows_before_torch_is_imported(tmp_path):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", KFSTUDIO_HOME=str(tmp_path), HOME=str(tmp_path),
               XDG_CONFIG_HOME=str(tmp_path / "config"))
    done = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    shown = json.loads(done.stdout.strip().splitlines()[-1])
    assert shown == {"torch": False, "pyqtgraph": False, "tab": "Welcome", "factorize": "FactorizePage",
                     "torch_after": True}
