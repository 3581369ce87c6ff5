"""The attach rules on small stand-ins for the files (``CommonFile``/``BrickFile`` are protocols),
so each rule, its order and every fallback in its message is pinned in milliseconds.
The same rules on real factorization files: test_rules.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import pytest

from kfstudio.assembly.rules import (DifferentCommonModule, InputSpecMismatch, LatentSizeMismatch, NoCommonModule,
                                     TaskAlreadyAttached, brick_title, can_attach, check_attach)
from kfstudio.core.spec import InputSpec
from kfstudio.core.tasks import Task

SPEC = InputSpec(1, 8, 8, (0.3,), (0.4,))


@dataclass
class Common:
    fingerprint: str = "c0mm0n"
    input_spec: InputSpec = SPEC
    module: SimpleNamespace = field(default_factory=lambda: SimpleNamespace(z_dim=32))
    manifest: dict = field(default_factory=dict)
    path: Path = Path("common.safetensors")


@dataclass
class Brick:
    name: str = "7"
    common_fingerprint: str = "c0mm0n"
    input_spec: InputSpec = SPEC
    z_dim: int | None = 32
    manifest: dict = field(default_factory=lambda: {"title": "digit 7", "teacher": {"name": "digits teacher"}})
    path: Path = Path("7.safetensors")

    @property
    def module(self):
        return SimpleNamespace(spec=SimpleNamespace(z_dim=self.z_dim) if self.z_dim is not None else object())

    @property
    def task(self) -> Task:
        return Task(self.name, "digit", (int(self.name),), (self.name,), "one-vs-rest")


def refusal(error, common, attached, brick, title=None) -> str:
    with pytest.raises(error) as caught:
        check_attach(common, attached, brick, title)
    assert not can_attach(common, attached, brick)
    return str(caught.value)


def test_a_fitting_brick_attaches():
    check_attach(Common(), [Brick("1")], Brick("7"))
    assert can_attach(Common(), [Brick("1"), Brick("2")], Brick("7"))


def test_no_common_module():
    assert refusal(NoCommonModule, None, [], Brick()) == (
        "There is no common module to attach 'digit 7' to; add its common module first.")


def test_another_latent_size_is_said_in_those_words_before_the_fingerprint():
    brick = Brick(z_dim=16, common_fingerprint="other")
    message = refusal(LatentSizeMismatch, Common(), [], brick)
    assert message == ("'digit 7' works on a shared latent of size 16, but this common module's is 32; it was "
                       "factorized with another common module and cannot attach here (it fits only the one it "
                       "was trained with).")


@pytest.mark.parametrize("brick_z,common_z", [(None, 32), (16, None)])
def test_an_unknown_latent_size_leaves_it_to_the_fingerprint(brick_z, common_z):
    common = Common(module=SimpleNamespace(z_dim=common_z) if common_z else SimpleNamespace())
    message = refusal(DifferentCommonModule, common, [], Brick(z_dim=brick_z, common_fingerprint="other"))
    assert "works on a shared latent" not in message
    check_attach(common, [], Brick(z_dim=brick_z))      # same fingerprint: it attaches


def test_another_common_module_names_the_teacher():
    message = refusal(DifferentCommonModule, Common(), [], Brick(common_fingerprint="other"))
    assert message == ("'digit 7' was factorized from a different common module (teacher 'digits teacher'); "
                       "it cannot attach here. It fits only the common module it was trained with.")


@pytest.mark.parametrize("teacher,named", [
    ({"name": None, "ref": "builtin:digits"}, "builtin:digits"),
    ({"ref": "t.pt2"}, "t.pt2"),
    ({"name": "", "ref": ""}, "unknown"),
    (None, "unknown"),
])
def test_the_teacher_is_named_by_name_else_ref_else_unknown(teacher, named):
    brick = Brick(common_fingerprint="other", manifest={"title": "digit 7", "teacher": teacher})
    assert f"(teacher '{named}')" in refusal(DifferentCommonModule, Common(), [], brick)


def test_another_input_spec_says_both():
    other = InputSpec(1, 16, 16, (0.3,), (0.4,))
    message = refusal(InputSpecMismatch, Common(), [], Brick(input_spec=other))
    assert message == (f"'digit 7' expects inputs of {other.describe()}, but the common module expects "
                       f"{SPEC.describe()}; they differ in height and width, so they cannot work together.")


def test_the_same_brick_twice_and_the_same_task_twice():
    seven = Brick()
    assert refusal(TaskAlreadyAttached, Common(), [Brick("1"), seven], seven) == "'digit 7' is already attached."
    twin = Brick(manifest={"title": "lucky seven"})
    assert refusal(TaskAlreadyAttached, Common(), [Brick("1"), seven], twin) == (
        "The task 'digit 7' is already attached; a network holds each task once.")


def test_the_canvas_title_replaces_the_brick_title():
    assert refusal(NoCommonModule, None, [], Brick(), title="lucky").startswith("There is no common module to attach 'lucky'")


def test_the_title_is_the_manifest_title_else_the_task_title():
    assert brick_title(Brick(manifest={"title": "my seven"})) == "my seven"
    assert brick_title(Brick(manifest={"title": ""})) == "digit 7"
    assert brick_title(Brick(manifest={})) == "digit 7"
    assert refusal(NoCommonModule, None, [], Brick(manifest={})).startswith("There is no common module to attach 'digit 7'")
