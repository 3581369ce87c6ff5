"""What a task is, and how a task specification becomes a list of tasks.

A task is a set of classes of one teacher output (a "source"):
- ``head``: a whole output of a multi-output teacher;
- ``one-vs-rest``: one class of a classifier, a one-logit brick; the bricks of one source
  are trained together on the concatenation of their logits (the paper's one-hot split).
  When the run takes only some of the classes, the bricks are trained against the rest too:
  the group's logits get a "none of these" column fixed at 0, so each brick's logit is its
  log-odds against the classes left out, and a one-class run is a real binary classifier;
- ``group``: a named group of classes that the task classifies among.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from kfstudio.core.errors import TaskError

HEAD, ONE_VS_REST, GROUP = "head", "one-vs-rest", "group"
TASK_KINDS = (HEAD, ONE_VS_REST, GROUP)


@dataclass(frozen=True)
class Task:
    name: str
    source: str
    classes: tuple[int, ...]
    class_names: tuple[str, ...]
    kind: str
    # A one-vs-rest brick of a run that left classes out: trained against "none of these".
    rest: bool = False

    @property
    def num_outputs(self) -> int:
        return 1 if self.kind == ONE_VS_REST else len(self.classes)

    @property
    def title(self) -> str:
        """How people read the task: "digit 7", "shape", "small"."""
        return f"{self.source} {self.name}" if self.kind == ONE_VS_REST else self.name

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "source": self.source,
            "classes": list(self.classes),
            "class_names": list(self.class_names),
            "kind": self.kind,
            "rest": self.rest,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Task":
        try:
            task = cls(str(d["name"]), str(d["source"]), tuple(int(c) for c in d["classes"]),
                       tuple(str(n) for n in d["class_names"]), str(d["kind"]), bool(d.get("rest", False)))
        except (KeyError, TypeError, ValueError):
            raise TaskError(f"The task description {d!r} is incomplete.") from None
        if task.kind not in TASK_KINDS:
            raise TaskError(f"Unknown task kind '{task.kind}'; expected one of {', '.join(TASK_KINDS)}.")
        return task


@dataclass(frozen=True)
class TaskGroup:
    """Tasks whose logits are concatenated for the classification and distillation terms."""

    name: str
    source: str
    tasks: tuple[Task, ...]

    @property
    def classes(self) -> tuple[int, ...]:
        return tuple(c for t in self.tasks for c in t.classes)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(n for t in self.tasks for n in t.class_names)

    @property
    def rest(self) -> bool:
        """True when the group also predicts "none of these" (its run left classes out)."""
        return any(t.rest for t in self.tasks)


def group_tasks(tasks: Sequence[Task]) -> list[TaskGroup]:
    """One group per head or class-group task; the one-vs-rest tasks of a source share one."""
    groups: list[TaskGroup] = []
    ovr: dict[str, list[Task]] = {}
    for task in tasks:
        if task.kind == ONE_VS_REST:
            ovr.setdefault(task.source, []).append(task)
        else:
            groups.append(TaskGroup(task.name, task.source, (task,)))
    groups += [TaskGroup(source, source, tuple(ts)) for source, ts in ovr.items()]
    return groups


def resolve_tasks(spec: str | None, outputs: dict[str, list[str]]) -> list[Task]:
    """Turn a task specification into tasks of a teacher with ``outputs`` (name -> class names).

    ``spec`` is one of: empty/``auto`` (heads of a multi-output teacher, one-vs-rest of a
    single one), ``heads``, ``one-vs-rest`` (optionally ``one-vs-rest:3,7`` for some classes),
    a comma list of output names (``shape,colour``), or named class groups
    (``small=0,1,2;large=cat,dog``) of a single-output teacher, classes by index or name.
    """
    if not outputs:
        raise TaskError("The teacher has no outputs to factorize.")
    text = (spec or "auto").strip()
    if text in ("auto", ""):
        text = "heads" if len(outputs) > 1 else ONE_VS_REST
    if text == "heads":
        return [_head_task(name, classes) for name, classes in outputs.items()]
    keyword, _, selection = text.partition(":")
    if keyword.strip() in (ONE_VS_REST, "ovr"):
        return _one_vs_rest(selection, outputs)
    if "=" in text:
        return _groups(text, outputs)
    return [_head_task(name, outputs[name]) for name in _known_outputs(text.split(","), outputs)]


def _head_task(name: str, class_names: list[str]) -> Task:
    return Task(name, name, tuple(range(len(class_names))), tuple(class_names), HEAD)


def _single_output(outputs: dict[str, list[str]], what: str) -> tuple[str, list[str]]:
    if len(outputs) != 1:
        names = ", ".join(outputs)
        raise TaskError(f"{what} needs a teacher with one output, but this one has {len(outputs)} ({names}); "
                        f"pick outputs by name instead, e.g. --tasks {next(iter(outputs))}.")
    return next(iter(outputs.items()))


def _class_index(token: str, class_names: list[str]) -> int:
    token = token.strip()
    if token in class_names:
        return class_names.index(token)
    if token.lstrip("-").isdigit() and 0 <= int(token) < len(class_names):
        return int(token)
    shown = ", ".join(class_names[:12]) + (", ..." if len(class_names) > 12 else "")
    raise TaskError(f"There is no class '{token}'; the classes are: {shown}.")


def _one_vs_rest(selection: str, outputs: dict[str, list[str]]) -> list[Task]:
    source, class_names = _single_output(outputs, "One-vs-rest tasks")
    if len(class_names) < 2:
        raise TaskError(f"The output '{source}' has a single class; one-vs-rest needs at least two.")
    picked = [_class_index(t, class_names) for t in selection.split(",")] if selection.strip() else range(len(class_names))
    names = [class_names[i] for i in picked]
    _reject_duplicates(names)
    rest = len(names) < len(class_names)
    return [Task(class_names[i], source, (i,), (class_names[i],), ONE_VS_REST, rest) for i in picked]


def _groups(text: str, outputs: dict[str, list[str]]) -> list[Task]:
    source, class_names = _single_output(outputs, "Class groups")
    tasks = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        name, _, members = part.partition("=")
        name = name.strip()
        if not name or not members.strip():
            raise TaskError(f"Cannot read the group '{part}'; write groups as name=class,class;name=class,class.")
        classes = tuple(_class_index(t, class_names) for t in members.split(","))
        if len(set(classes)) != len(classes):
            raise TaskError(f"The group '{name}' names a class twice.")
        if len(classes) < 2:
            raise TaskError(f"The group '{name}' has one class; a group needs at least two to choose between.")
        tasks.append(Task(name, source, classes, tuple(class_names[c] for c in classes), GROUP))
    _reject_duplicates([t.name for t in tasks])
    return tasks


def _known_outputs(names: list[str], outputs: dict[str, list[str]]) -> list[str]:
    names = [n.strip() for n in names if n.strip()]
    for name in names:
        if name not in outputs:
            raise TaskError(f"The teacher has no output '{name}'; its outputs are: {', '.join(outputs)}.")
    _reject_duplicates(names)
    return names


def _reject_duplicates(names: list[str]) -> None:
    seen = set()
    for name in names:
        if name in seen:
            raise TaskError(f"The task '{name}' is named twice.")
        seen.add(name)
