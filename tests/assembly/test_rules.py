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


@pytest.mark.parametrize("field, value, words", [
    ("channels", 3, "channels"),
    ("height", 16, "height"),
    ("width", 12, "width"),
    ("mean", [0.3], "normalization mean"),
    ("std", [0.2], "normalization standard deviation"),
])
def test_every_field_of_the_input_spec_must_agree_and_the_message_names_it(digits_common, digits_bricks, field,
                                                                           value, words):
    """A brick trained for another mean/std reads the pixels wrong, as surely as one of another size."""
    other = copy.copy(digits_bricks["7"])
    other.manifest = {**other.manifest, "input": {**other.manifest["input"], field: value}}
    assert getattr(other.input_spec, field) != getattr(digits_common.input_spec, field)
    with pytest.raises(InputSpecMismatch) as info:
        check_attach(digits_common, [], other)
    assert f"they differ in {words}, so they cannot work together" in str(info.value)
    assert not can_attach(digits_common, [], other)


def test_a_brick_trained_for_other_normalization_names_both_differences(digits_common, digits_bricks):
    other = copy.copy(digits_bricks["7"])
    other.manifest = {**other.manifest, "input": {**other.manifest["input"], "mean": [0.5], "std": [0.25]}}
    with pytest.raises(InputSpecMismatch) as info:
        check_attach(digits_common, [], other)
    assert str(info.value) == (
        f"'digit 7' expects inputs of 1x8x8, mean [0.5], std [0.25], but the common module expects "
        f"{digits_common.input_spec.describe()}; they differ in normalization mean and normalization standard "
        "deviation, so they cannot work together.")
