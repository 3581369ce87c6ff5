"""Bricks and a teacher whose output names differ across formats.

A run factorized from a Python teacher names its output ``output`` (what KF Studio calls a
lone unnamed output); the ONNX copy of the same network may call it ``logits``. Where a task's
source is not among the teacher's outputs, ``match_outputs`` pairs it with the one output left
over that has enough classes (matching by shape) and says so in words; where that is not one
output, nothing is matched and the caller's check says what is missing.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable, Sequence

import torch

from kfstudio.core.tasks import Task
from kfstudio.core.teachers.loaders import Teacher


class _Renamed:
    """A teacher's runner whose outputs are also given under the tasks' source names."""

    def __init__(self, run: Callable, sources: dict[str, str]) -> None:
        self.run, self.sources = run, sources  # source name -> the teacher's output name

    def __call__(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        outputs, features = self.run(x)
        return {**outputs, **{source: outputs[name] for source, name in self.sources.items()}}, features


def match_outputs(tasks: Sequence[Task], teacher: Teacher) -> tuple[Teacher, str | None]:
    """``teacher`` answering under the tasks' source names where its own names differ but one
    output fits by its number of classes; and the line that says which were matched (None: none)."""
    needed: dict[str, int] = {}
    for task in tasks:
        needed[task.source] = max(needed.get(task.source, 0), max(task.classes) + 1)
    missing = [s for s in needed if s not in teacher.class_names]
    if not missing:
        return teacher, None
    free = [o for o in teacher.class_names if o not in needed]
    matched: dict[str, str] = {}
    for source in missing:
        fits = [o for o in free if len(teacher.class_names[o]) >= needed[source] and o not in matched.values()]
        if len(fits) != 1:
            return teacher, None
        matched[source] = fits[0]
    class_names = {**teacher.class_names, **{s: list(teacher.class_names[o]) for s, o in matched.items()}}
    said = "; ".join(f"its output '{o}' ({len(teacher.class_names[o])} classes) stands for the bricks' '{s}'"
                     for s, o in matched.items())
    note = f"The teacher '{teacher.name}' names its outputs differently from the bricks: {said} (matched by shape)."
    return replace(teacher, class_names=class_names, run=_Renamed(teacher.run, matched)), note
