"""The schema checkers at and just past every bound, so that removing a bound fails a test.

The fuzzer (test_fuzz.py) only asks "loads or says why", and later checks (building the
module, reading the weights) can mask a missing bound; these tests pin each bound itself:
the last value accepted, the first refused, and the words of the refusal.
"""

from __future__ import annotations

import math

import pytest

from kfstudio.core.errors import FileFormatError
from kfstudio.io.schema import (Anything, Bool, Int, Invalid, List, Map, Nullable, Num, Obj, OneOf, Str,
                                validate)


def refused(check, value, where="field") -> str:
    with pytest.raises(Invalid) as caught:
        check(value, where)
    return str(caught.value)


# ---------------------------------------------------------------- Int

@pytest.mark.parametrize("value", [3, 4, 7])
def test_int_takes_its_bounds_and_between(value):
    assert Int(3, 7)(value, "n") == value


@pytest.mark.parametrize("value", [2, 8, -3, 10**30])
def test_int_refuses_just_past_each_bound(value):
    assert refused(Int(3, 7), value, "n") == f"n must be a whole number from 3 to 7, not {value!r}"


@pytest.mark.parametrize("value", [True, False, 3.0, 4.5, "4", None, [4], float("nan")])
def test_int_refuses_what_is_not_a_whole_number(value):
    # bool is an int subclass in Python: JSON true must not pass for 1
    assert "must be a whole number from 0 to 9" in refused(Int(0, 9), value)


def test_int_message_groups_thousands():
    assert "from 1 to 4,096" in refused(Int(1, 4096), 4097)


# ---------------------------------------------------------------- Num

@pytest.mark.parametrize("value", [-1.5, -1, 0, 2.0, 2])
def test_num_takes_its_bounds_ints_and_floats(value):
    assert Num(-1.5, 2.0)(value, "x") == value


@pytest.mark.parametrize("value", [-1.5000001, 2.0000001, -2, 3])
def test_num_refuses_just_past_each_bound(value):
    assert refused(Num(-1.5, 2.0), value, "x") == f"x must be a number from -1.5 to 2, not {value!r}"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf"), True, False, "1", None, [1.0]])
def test_num_refuses_nan_infinity_bools_and_non_numbers(value):
    # NaN compares False with every bound, so only the finiteness check stops it; inf with wide bounds too
    assert "must be a number from -1e+300 to 1e+300" in refused(Num(-1e300, 1e300), value)


def test_positive_num_refuses_zero_but_takes_the_smallest_positive():
    check = Num(0, 5, positive=True)
    assert check(5e-324, "w") == 5e-324
    assert check(5, "w") == 5
    assert refused(check, 0, "w") == "w must be a positive number from 0 to 5, not 0"
    assert refused(check, 0.0, "w") == "w must be a positive number from 0 to 5, not 0.0"


def test_num_not_positive_takes_zero():
    assert Num(0, 5)(0, "w") == 0
    assert Num(0, 5)(0.0, "w") == 0.0


# ---------------------------------------------------------------- Str

def test_str_takes_up_to_its_length_and_refuses_one_more():
    assert Str(5)("abcde", "s") == "abcde"
    assert Str(5)("", "s") == ""
    assert refused(Str(5), "abcdef", "s") == "s must be a text of at most 5 characters, not 'abcdef'"


def test_str_default_length_is_1000():
    assert Str()("a" * 1000, "s") == "a" * 1000
    assert "at most 1000 characters" in refused(Str(), "a" * 1001)


@pytest.mark.parametrize("value", [1, None, b"abc", ["a"], True])
def test_str_refuses_non_texts(value):
    assert "must be a text of at most 10 characters" in refused(Str(10), value)


@pytest.mark.parametrize("value", ["", " ", "\t\n"])
def test_nonempty_str_refuses_empty_and_blank(value):
    assert "must be a non-empty text of at most 10 characters" in refused(Str(10, nonempty=True), value)


def test_nonempty_str_takes_one_character():
    assert Str(10, nonempty=True)("a", "s") == "a"


def test_long_values_are_shown_cut_short():
    message = refused(Str(5), "x" * 100)
    assert message.endswith("...") and len(message) < 120
    assert refused(Str(5), "y" * 38).endswith("'" + "y" * 38 + "'")   # repr of 40 characters is shown whole
    assert refused(Str(5), "y" * 39).endswith("not '" + "y" * 36 + "...")   # 41 is cut to 37 and "..."


# ---------------------------------------------------------------- Bool, OneOf, Nullable, Anything

@pytest.mark.parametrize("value", [True, False])
def test_bool_takes_true_and_false(value):
    assert Bool()(value, "b") is value


@pytest.mark.parametrize("value", [0, 1, "true", None])
def test_bool_refuses_numbers_texts_and_null(value):
    assert refused(Bool(), value, "b") == f"b must be true or false, not {value!r}"


def test_one_of_names_the_choices():
    check = OneOf(("mlp", "resnet"))
    assert check("mlp", "a") == "mlp"
    assert refused(check, "cnn", "a") == "a must be one of mlp, resnet, not 'cnn'"
    assert "must be one of" in refused(check, None)


def test_nullable_passes_null_and_checks_the_rest():
    check = Nullable(Int(0, 1))
    assert check(None, "n") is None
    assert check(1, "n") == 1
    assert "must be a whole number from 0 to 1" in refused(check, 2)


def test_anything_returns_the_value_unchanged():
    value = {"a": [1, float("nan")]}
    assert Anything()(value, "x") is value


# ---------------------------------------------------------------- List and Map

def test_list_takes_its_length_bounds_and_refuses_one_past():
    check = List(Int(0, 9), 2, 3)
    assert check([1, 2], "l") == [1, 2]
    assert check([1, 2, 3], "l") == [1, 2, 3]
    assert refused(check, [1], "l") == "l must be a list of 2 to 3 entries, not [1]"
    assert refused(check, [1, 2, 3, 4], "l") == "l must be a list of 2 to 3 entries, not [1, 2, 3, 4]"


def test_list_default_bounds_are_0_to_100000():
    check = List(Anything())
    assert check([], "l") == []
    assert len(check([0] * 100_000, "l")) == 100_000
    assert "must be a list of 0 to 100,000 entries" in refused(check, [0] * 100_001)


@pytest.mark.parametrize("value", [(1, 2), "ab", {"a": 1}, None, 3])
def test_list_refuses_what_is_not_a_list(value):
    assert "must be a list of 0 to 5 entries" in refused(List(Anything(), 0, 5), value)


def test_list_checks_every_entry_and_names_its_index():
    assert refused(List(Int(0, 9)), [1, 2, 10], "classes") == (
        "classes[2] must be a whole number from 0 to 9, not 10")


def test_map_checks_every_value_and_names_its_key():
    check = Map(Int(0, 9))
    assert check({"a": 1, "b": 9}, "m") == {"a": 1, "b": 9}
    assert check({}, "m") == {}
    assert refused(check, {"a": 1, "b": 10}, "m") == "m.b must be a whole number from 0 to 9, not 10"
    assert refused(check, [1], "m") == "m must be a table, not [1]"


# ---------------------------------------------------------------- Obj

POINT = Obj({"x": Int(0, 9), "y": Int(0, 9)}, {"label": Str(5)})


def test_obj_takes_required_fields_and_keeps_unknown_ones():
    assert POINT({"x": 1, "y": 2}, "p") == {"x": 1, "y": 2}
    assert POINT({"x": 1, "y": 2, "label": "a", "newer": [1]}, "p") == {"x": 1, "y": 2, "label": "a", "newer": [1]}


@pytest.mark.parametrize("missing", ["x", "y"])
def test_obj_names_a_missing_required_field(missing):
    doc = {"x": 1, "y": 2}
    del doc[missing]
    assert refused(POINT, doc, "p") == f"p.{missing} is missing"


def test_obj_checks_required_and_optional_fields():
    assert refused(POINT, {"x": 1, "y": 10}, "p") == "p.y must be a whole number from 0 to 9, not 10"
    assert refused(POINT, {"x": 1, "y": 2, "label": "toolong"}, "p") == (
        "p.label must be a text of at most 5 characters, not 'toolong'")


def test_obj_at_the_top_names_fields_without_a_leading_dot():
    assert refused(POINT, {"y": 1}, "") == "x is missing"
    assert refused(POINT, {"x": -1, "y": 1}, "") == "x must be a whole number from 0 to 9, not -1"


@pytest.mark.parametrize("value", [[1, 2], "xy", None, 3])
def test_obj_refuses_what_is_not_a_table(value):
    assert refused(POINT, value, "p") == f"p must be a table of fields, not {value!r}"


def test_obj_returns_the_checked_values():
    # checkers may normalize what they return (List builds a new list): the object keeps their result
    seen = []
    doc = {"x": 1, "y": 2, "tags": [3]}
    out = Obj({"x": Int(0, 9), "y": Int(0, 9)}, {"tags": List(Int(0, 9))},
              rules=[lambda d, w: seen.append((d, w))])(doc, "p")
    assert out == doc and out is not doc and out["tags"] is not doc["tags"]
    assert seen == [(out, "p")]


def test_obj_rules_see_the_checked_document_and_can_refuse():
    def same_length(doc, where):
        if len(doc["a"]) != len(doc["b"]):
            raise Invalid(where, "lists differ")

    check = Obj({"a": List(Anything()), "b": List(Anything())}, rules=[same_length])
    assert check({"a": [1], "b": [2]}, "t") == {"a": [1], "b": [2]}
    assert refused(check, {"a": [1], "b": []}, "t") == "t lists differ"


def test_obj_extend_adds_fields_and_rules_and_keeps_the_old_ones():
    calls = []
    base = Obj({"x": Int(0, 9)}, {"label": Str(5)}, rules=[lambda d, w: calls.append("base")])
    wider = base.extend({"z": Int(0, 1)}, {"note": Str(3)}, rules=[lambda d, w: calls.append("more")])
    assert wider({"x": 1, "z": 0, "label": "ab", "note": "n"}, "") == {"x": 1, "z": 0, "label": "ab", "note": "n"}
    assert calls == ["base", "more"]
    assert refused(wider, {"x": 1}, "") == "z is missing"
    assert refused(wider, {"z": 1}, "") == "x is missing"
    assert "label must be a text" in refused(wider, {"x": 1, "z": 1, "label": "toolong"}, "")
    assert "note must be a text of at most 3" in refused(wider, {"x": 1, "z": 1, "note": "long"}, "")
    assert base.required.keys() == {"x"} and base.optional.keys() == {"label"}


def test_invalid_without_a_place_speaks_of_the_file():
    assert str(Invalid("", "is empty")) == "the file is empty"


# ---------------------------------------------------------------- validate

def test_validate_names_the_file_the_kind_and_the_field():
    with pytest.raises(FileFormatError) as caught:
        validate({"x": 1, "y": 12}, POINT, "/some/where/p.json", "point file")
    assert str(caught.value) == (
        "'p.json' is not a valid point file: y must be a whole number from 0 to 9, not 12.")


def test_validate_starts_at_the_top_with_no_place_name():
    with pytest.raises(FileFormatError) as caught:
        validate([1, 10], List(Int(0, 9)), "l.json", "list file")
    assert str(caught.value) == "'l.json' is not a valid list file: [1] must be a whole number from 0 to 9, not 10."


def test_validate_returns_the_checked_document():
    assert validate({"x": 1, "y": 2}, POINT, "p.json", "point file") == {"x": 1, "y": 2}


def test_validate_raises_the_error_class_asked_for():
    class ProjectError(FileFormatError):
        pass

    with pytest.raises(ProjectError):
        validate([], POINT, "p.json", "point file", error=ProjectError)


def test_validate_refuses_a_document_nested_too_deeply():
    deep: list = []
    node = deep
    for _ in range(5000):
        node.append([])
        node = node[0]

    class Deep(List):
        """A recursive schema: each level checks the next."""

        def __call__(self, value, where):
            return [self(v, where) for v in value]

    with pytest.raises(FileFormatError, match=r"'d.json' is not a valid deep file: it is nested too deeply\."):
        validate(deep, Deep(Anything()), "d.json", "deep file")


def test_num_bounds_accept_floats_that_print_alike():
    # the message prints bounds with %g; the comparison must still use the exact bound
    check = Num(0.05, 8.0, positive=True)
    assert check(0.05, "w") == 0.05
    assert "from 0.05 to 8" in refused(check, math.nextafter(0.05, 0), "w")
    assert "from 0.05 to 8" in refused(check, math.nextafter(8.0, 9), "w")
