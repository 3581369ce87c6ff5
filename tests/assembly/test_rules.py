"""Every attach rule, with the message a user reads."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest

from kfstudio.assembly.rules import (
    AttachError,
    DifferentCommonModule,
    InputSpecMismatch,
    NoCommonModule,
    TaskAlreadyAttached,
    can_attach,
    check_attach,
)
from kfstudio.core.errors import KFError


def test_a_brick_of_its_own_common_module_attaches(digits_common, digits_bricks):
    check_attach(digits_common, [], digits_bricks["7"])
    assert can_attach(digits_common, [digits_bricks["0"]], digits_bricks["7"])


def test_a_brick_of_another_teacher_is_refused_in_plain_words(digits_common, shapes_brick):
    with pytest.raises(DifferentCommonModule) as info:
        check_attach(digits_common, [], shapes_brick)
    message = str(info.value)
    assert f"'{shapes_brick.manifest['title']}' was factorized from a different common module" in message
    assert "teacher 'shapes demo teacher'" in message and "cannot attach here" in message
    assert isinstance(info.value, AttachError) and isinstance(info.value, KFError)
    assert not can_attach(digits_common, [], shapes_brick)


def test_nothing_attaches_without_a_common_module(digits_bricks):
    with pytest.raises(NoCommonModule, match="no common module"):
        check_attach(None, [], digits_bricks["7"])
    assert not can_attach(None, [], digits_bricks["7"])


def test_a_task_attaches_once(digits_common, digits_bricks):
    seven = digits_bricks["7"]
    with pytest.raises(TaskAlreadyAttached, match="'digit 7' is already attached"):
        check_attach(digits_common, [seven], seven)
    twin = copy.copy(seven)  # the same task loaded a second time
    with pytest.raises(TaskAlreadyAttached, match="task 'digit 7' is already attached"):
        check_attach(digits_common, [seven], twin)


def test_input_specs_must_agree(digits_common, digits_bricks):
    odd = copy.copy(digits_bricks["7"])
    odd.manifest = {**odd.manifest, "input": {**odd.manifest["input"], "height": 16, "width": 16}}
    with pytest.raises(InputSpecMismatch, match="expects inputs of 1x16x16"):
        check_attach(digits_common, [], odd)


def test_the_canvas_title_is_used_in_messages(digits_common, digits_bricks):
    seven = digits_bricks["7"]
    with pytest.raises(TaskAlreadyAttached, match="'lucky' is already attached"):
        check_attach(digits_common, [seven], seven, title="lucky")


def test_input_spec_values_are_compared_not_objects(digits_common):
    spec = digits_common.input_spec
    assert replace(spec) == spec
