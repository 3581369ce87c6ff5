"""May this brick attach here? One place for the rules, with typed, readable errors.

A brick attaches only to the common module it was factorized with (its manifest records
that module's fingerprint; a brick of another latent size, or a light brick reading a stage the
module does not offer, is told so first), each task attaches once, and the brick and the common module must expect the same input. A drop on the
canvas, an edit being redone and a project file being loaded all go through ``check_attach``;
``can_attach`` is the quick yes/no used for hover feedback.

Public API: ``check_attach(common, attached, brick, title=None)``, ``can_attach(...)``,
``brick_title(brick)``, the protocols ``CommonFile``/``BrickFile`` and the errors ``AttachError`` > ``NoCommonModule``,
``DifferentCommonModule`` (> ``LatentSizeMismatch``, ``StageNotOffered``), ``InputSpecMismatch``, ``TaskAlreadyAttached``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Protocol

from torch import nn

from kfstudio.core.students.brick_input import stage_mismatch
from kfstudio.core.errors import KFError
from kfstudio.core.spec import InputSpec
from kfstudio.core.tasks import Task


class CommonFile(Protocol):
    """What the graph needs of a common module (``kfstudio.io.bricks.CommonFile`` has it).

    A protocol, so that assembly does not import io (layers run core <- assembly <- io).
    """

    module: nn.Module
    manifest: dict
    path: Path

    @property
    def fingerprint(self) -> str: ...

    @property
    def input_spec(self) -> InputSpec: ...


class BrickFile(Protocol):
    """What the graph needs of a brick (``kfstudio.io.bricks.BrickFile`` has it)."""

    module: nn.Module
    manifest: dict
    path: Path

    @property
    def task(self) -> Task: ...

    @property
    def common_fingerprint(self) -> str: ...

    @property
    def input_spec(self) -> InputSpec: ...


class AttachError(KFError):
    """A brick cannot attach where the user tried to put it."""


class NoCommonModule(AttachError):
    """There is no common module to attach to."""


class DifferentCommonModule(AttachError):
    """The brick was factorized together with another common module."""


class LatentSizeMismatch(DifferentCommonModule):
    """The brick adds its features to a shared latent of another size than the common module's
    (so it certainly belongs to another common module: said in those words)."""


class StageNotOffered(DifferentCommonModule):
    """A light brick reads a stage of its common module that this common module does not offer
    (or offers with other channels)."""


class InputSpecMismatch(AttachError):
    """The brick and the common module expect different inputs."""


class TaskAlreadyAttached(AttachError):
    """The brick's task (or the brick itself) is already attached."""


def brick_title(brick: BrickFile) -> str:
    """How people read a brick: its manifest title ("digit 7"), else its task's title."""
    return str(brick.manifest.get("title") or brick.task.title)


def _teacher_name(manifest: dict) -> str:
    teacher = manifest.get("teacher") or {}
    return str(teacher.get("name") or teacher.get("ref") or "unknown")


def check_attach(common: CommonFile | None, attached: Iterable[BrickFile], brick: BrickFile,
                 title: str | None = None) -> None:
    """Raise an ``AttachError`` saying why ``brick`` cannot join ``common`` and ``attached``.

    ``attached`` are the bricks already on the common module; ``title`` is the name the user
    sees on the canvas (defaults to the brick's own title).
    """
    title = title or brick_title(brick)
    if common is None:
        raise NoCommonModule(f"There is no common module to attach '{title}' to; add its common module first.")
    brick_z, common_z = getattr(brick.module.spec, "z_dim", None), getattr(common.module, "z_dim", None)
    if brick_z is not None and common_z is not None and brick_z != common_z:
        raise LatentSizeMismatch(
            f"'{title}' works on a shared latent of size {brick_z}, but this common module's is {common_z}; "
            "it was factorized with another common module and cannot attach here (it fits only the one it was "
            "trained with).")
    spec, offered = getattr(brick.module, "spec", None), getattr(common.module, "offered_stages", None)
    why = stage_mismatch(spec.reads, spec.read_channels, offered) if spec and offered is not None else None
    if why:
        raise StageNotOffered(f"'{title}' {why}, so it cannot attach here (it fits only the common module it was "
                              "trained with).")
    if brick.common_fingerprint != common.fingerprint:
        raise DifferentCommonModule(
            f"'{title}' was factorized from a different common module (teacher '{_teacher_name(brick.manifest)}'); "
            f"it cannot attach here. It fits only the common module it was trained with.")
    if brick.input_spec != common.input_spec:
        raise InputSpecMismatch(
            f"'{title}' expects inputs of {brick.input_spec.describe()}, but the common module expects "
            f"{common.input_spec.describe()}; they differ in {_differences(brick.input_spec, common.input_spec)}, "
            "so they cannot work together.")
    for other in attached:
        if other is brick:
            raise TaskAlreadyAttached(f"'{title}' is already attached.")
        if other.task.name == brick.task.name:
            raise TaskAlreadyAttached(
                f"The task '{brick_title(other)}' is already attached; a network holds each task once.")


_SPEC_WORDS = {"channels": "channels", "height": "height", "width": "width",
               "mean": "normalization mean", "std": "normalization standard deviation"}


def _differences(a: InputSpec, b: InputSpec) -> str:
    """The fields of two input specs that differ, in words ("height and normalization mean"); a mean
    or std of one value for every channel is not another normalization when only channels differ."""
    def differ(name: str) -> bool:
        x, y = getattr(a, name), getattr(b, name)
        return set(x) != set(y) if name in ("mean", "std") and a.channels != b.channels else x != y

    names = [words for name, words in _SPEC_WORDS.items() if differ(name)]
    return " and ".join(names) if len(names) < 3 else ", ".join(names[:-1]) + " and " + names[-1]


def can_attach(common: CommonFile | None, attached: Iterable[BrickFile], brick: BrickFile) -> bool:
    """Yes/no form of ``check_attach`` (for hover feedback)."""
    try:
        check_attach(common, attached, brick)
    except AttachError:
        return False
    return True
