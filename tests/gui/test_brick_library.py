"""The Build page's library of bricks: what a run folder gives the palette."""

from __future__ import annotations

import pytest

from kfstudio.core.errors import KFError
from kfstudio.gui.build.brick_library import BrickLibrary


def test_a_run_folder_gives_one_entry_per_brick_coloured_by_its_task(digits_run):
    library = BrickLibrary()
    common, entries = library.load_run(digits_run[1])
    tasks = common.manifest["tasks"]
    assert len(entries) == len(tasks) == library.task_count(common) == 10
    for entry in entries:
        brick = library.get(entry.key)
        assert library.colour_of(brick) == tasks.index(brick.task.name) == entry.colour_index
        assert library.title(entry.key) == entry.title
    assert library.knows_run(digits_run[1]) and library.title("missing.safetensors") == "missing.safetensors"


def test_a_folder_without_bricks_is_refused_in_words(digits_run, tmp_path):
    (tmp_path / "common.safetensors").write_bytes((digits_run[1] / "common.safetensors").read_bytes())
    (tmp_path / "common.json").write_bytes((digits_run[1] / "common.json").read_bytes())
    with pytest.raises(KFError, match="holds no bricks"):
        BrickLibrary().load_run(tmp_path)
