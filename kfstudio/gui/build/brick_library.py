"""The bricks the Build page knows: every brick loaded from a run folder or a project, and each
common module's task order (which gives a brick its colour and the plate its slots)."""

from __future__ import annotations

from pathlib import Path

from kfstudio.assembly.rules import brick_title
from kfstudio.core.errors import KFError
from kfstudio.gui.build.brick_text import brick_summary, brick_tooltip, run_group_title, teacher_name
from kfstudio.gui.build.palette import PaletteEntry
from kfstudio.io.bricks import BrickFile, CommonFile, list_bricks, load_brick, load_common


def read_run(folder: Path) -> tuple[CommonFile, list[BrickFile]]:
    """Read a factorization folder's common module and bricks (safe in a worker thread)."""
    common = load_common(folder / "common.safetensors")
    bricks = [load_brick(p) for p in list_bricks(folder)]
    if not bricks:
        raise KFError(f"The folder '{folder}' holds no bricks; factorize a teacher first.")
    return common, bricks


class BrickLibrary:
    """Bricks by palette key (the brick file's path) and task orders by common fingerprint."""

    def __init__(self) -> None:
        self._bricks: dict[str, BrickFile] = {}
        self._task_order: dict[str, list[str]] = {}

    def get(self, key: str) -> BrickFile | None:
        return self._bricks.get(key)

    def title(self, key: str) -> str:
        """What the palette calls a brick (its key when it is not loaded)."""
        brick = self._bricks.get(key)
        return brick_title(brick) if brick is not None else key

    def knows_run(self, folder: Path) -> bool:
        return any(key.startswith(str(folder)) for key in self._bricks)

    def remember(self, brick: BrickFile) -> None:
        self._bricks.setdefault(str(brick.path), brick)

    def remember_common(self, common: CommonFile) -> None:
        self._task_order[common.fingerprint] = list(common.manifest.get("tasks", []))

    def load_run(self, folder: Path, preloaded: tuple | None = None) -> tuple[CommonFile, list[PaletteEntry]]:
        """A factorization folder's common module and a palette entry per brick, read now or
        ``preloaded`` by ``read_run`` (in a worker). Raises a ``KFError`` in words when the
        folder cannot be read or holds no bricks."""
        common, bricks = preloaded if preloaded is not None else read_run(folder)
        self.remember_common(common)
        group = run_group_title(teacher_name(common.manifest), folder.name)
        entries = []
        for brick in bricks:
            self._bricks[str(brick.path)] = brick
            entries.append(PaletteEntry(str(brick.path), brick_title(brick), brick_summary(brick),
                                        self.colour_of(brick), group, brick_tooltip(brick)))
        return common, entries

    def colour_of(self, brick: BrickFile) -> int:
        """A brick's colour: its task's place in its run (a stable guess for a task of no known run)."""
        order = self._task_order.get(brick.common_fingerprint, [])
        name = brick.task.name
        return order.index(name) if name in order else sum(map(ord, name)) % 9

    def task_count(self, common: CommonFile) -> int:
        """How many tasks the run of ``common`` had (the plate shows a slot for each)."""
        return len(self._task_order.get(common.fingerprint, []))
