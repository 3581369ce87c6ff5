"""The layer rule, checked in fresh interpreters: the headless packages never load Qt, and
``python -m kfstudio --help`` loads neither torch nor Qt."""

from __future__ import annotations

import json
import subprocess
import sys

QT_MODULES = ("PySide6", "pyqtgraph", "superqt", "shiboken6")
HEADLESS = ("kfstudio.core", "kfstudio.assembly", "kfstudio.io", "kfstudio.runner", "kfstudio.cli")

IMPORT_ALL = r'''
import importlib, json, pkgutil, sys
imported = []
for package_name in __PACKAGES__:
    package = importlib.import_module(package_name)
    imported.append(package_name)
    for info in pkgutil.walk_packages(package.__path__, package_name + "."):
        importlib.import_module(info.name)
        imported.append(info.name)
print(json.dumps({"imported": imported, "modules": sorted(sys.modules)}))
'''

HELP = r'''
import json, runpy, sys
sys.argv = ["kfstudio", "--help"]
code = None
try:
    runpy.run_module("kfstudio", run_name="__main__", alter_sys=True)
except SystemExit as exit:
    code = exit.code
print("@@json" + json.dumps({"code": code, "modules": sorted(sys.modules)}))
'''


def _python(script: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)


def _top_level(modules: list[str], names) -> list[str]:
    return sorted(m for m in modules if m.split(".")[0] in names)


def test_headless_packages_load_no_qt():
    proc = _python(IMPORT_ALL.replace("__PACKAGES__", repr(HEADLESS)))
    assert proc.returncode == 0, proc.stderr
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    imported = found["imported"]
    # every module of every headless package was really imported, not just the packages
    for module in ("kfstudio.core.factorize", "kfstudio.core.teachers.loaders", "kfstudio.io.bricks", "kfstudio.cli.app",
                   "kfstudio.cli.factorize_cmd", "kfstudio.runner.training_child", "kfstudio.core.data.streaming"):
        assert module in imported
    assert not any(m.startswith("kfstudio.gui") for m in found["modules"])
    assert _top_level(found["modules"], QT_MODULES) == []


def test_help_imports_neither_torch_nor_qt():
    proc = _python(HELP)
    assert "@@json" in proc.stdout, proc.stderr
    text, _, payload = proc.stdout.partition("@@json")
    found = json.loads(payload)
    assert found["code"] in (0, None)
    assert "factorize" in text and "inspect" in text and "train-teacher" in text
    assert _top_level(found["modules"], ("torch", *QT_MODULES)) == []
    assert not any(m.startswith("kfstudio.gui") for m in found["modules"])
