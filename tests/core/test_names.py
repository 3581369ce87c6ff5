"""Task names become unique, bounded, portable file names; names that would collide are refused."""

from __future__ import annotations

import pytest

from kfstudio.core.errors import TaskError
from kfstudio.core.names import MAX_STEM_BYTES, check_task_names, task_file_stem
from kfstudio.core.students.networks import module_key


def test_plain_names_are_kept_as_they_are():
    assert [task_file_stem(n) for n in ("7", "shape", "small-ones", "a_b")] == ["7", "shape", "small-ones", "a_b"]


@pytest.mark.parametrize("a, b", [("a/b", "a_b"), ("digit 7", "digit_7"), ("x" * 80, "x" * 81)])
def test_names_that_clean_alike_get_different_files(a, b):
    assert task_file_stem(a) != task_file_stem(b)
    check_task_names([a, b])


@pytest.mark.parametrize("name", ["x" * 40, "é" * 40, "é" * 200, "../../etc/passwd", "..", "", "a\x00b", "名前"])
def test_every_stem_is_short_and_safe(name):
    stem = task_file_stem(name)
    assert 0 < len(stem.encode()) <= MAX_STEM_BYTES
    assert stem.isascii() and "/" not in stem and not stem.startswith(".") and "\x00" not in stem


def test_names_differing_only_in_case_are_refused_before_training():
    with pytest.raises(TaskError, match="too alike"):
        check_task_names(["Cat", "cat"])


def test_names_whose_module_keys_collide_are_refused():
    # module keys keep their old form so that checkpoints of earlier runs resume; the rare pair of
    # names that shares one ("a_/" and "a/_" once trained a single brick) is refused instead
    assert module_key("a_/") == module_key("a/_")
    with pytest.raises(TaskError, match="too alike"):
        check_task_names(["a_/", "a/_"])
    names = ["a b", "a_b", "a.b", "a/b"]
    check_task_names(names)
    assert len({module_key(n) for n in names}) == len(names)


def test_an_empty_name_is_refused():
    with pytest.raises(TaskError):
        check_task_names(["ok", "  "])
