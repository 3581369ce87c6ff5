"""docs/own-teacher.md is walked as written: its code is the fixture's, and every command in it
runs, in order, on the own-teacher fixture, printing the lines the doc shows (numbers may differ)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from kfstudio.cli.app import main
from own_teacher import NET_SOURCE

DOC = Path(__file__).resolve().parents[2] / "docs" / "own-teacher.md"
WHERE_THE_DOC_RUNS = "/home/you/mynet"  # the folder the doc's printed paths show


def _blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced block, in order."""
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def _walk(blocks) -> list[tuple[list[str], list[str]]]:
    """Each sh block's commands with the text lines shown after it (before the next sh block)."""
    steps: list[tuple[list[str], list[str]]] = []
    for lang, body in blocks:
        if lang == "sh":
            steps.append(([ln for ln in body.splitlines() if ln.startswith("kfstudio ")], []))
        elif lang == "text" and steps:
            steps[-1][1].extend(ln for ln in body.splitlines() if ln.strip())
    return steps


def _pattern(line: str, folder: Path) -> str:
    """The line as a pattern: its numbers may be any numbers, the doc's folder is the test's."""
    line = line.replace(WHERE_THE_DOC_RUNS, str(folder))
    parts = re.split(r"(\d[\d,.]*\d|\d)", line)
    return "".join(r"[\d,.]+" if i % 2 else re.escape(part) for i, part in enumerate(parts))


def test_the_doc_shows_the_fixtures_code_and_manifest(own_teacher):
    blocks = _blocks(DOC.read_text())
    assert ("python", NET_SOURCE) in blocks
    manifest = next(json.loads(body) for lang, body in blocks if lang == "json")
    assert manifest == json.loads((own_teacher.folder / "mynet.json").read_text())


def test_every_command_of_the_doc_runs_and_prints_what_the_doc_shows(own_teacher, tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mynet"
    shutil.copytree(own_teacher.folder, folder)
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder))
    steps = _walk(_blocks(DOC.read_text()))
    assert sum(len(commands) for commands, _ in steps) == 9
    for commands, shown in steps:
        printed = ""
        for command in commands:
            assert main(shlex.split(command)[1:]) == 0, command
            out = capsys.readouterr()
            printed += out.out + out.err
        for line in shown:
            assert re.search(_pattern(line, folder.resolve()), printed), f"{commands}: {line!r} not in\n{printed}"
