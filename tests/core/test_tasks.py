"""Task specifications: how a --tasks string becomes tasks, and every error a user can make."""

from __future__ import annotations

import pytest

from kfstudio.core.errors import KFError, TaskError
from kfstudio.core.runs import drain
from kfstudio.core.tasks import (
    GROUP,
    HEAD,
    ONE_VS_REST,
    Task,
    TaskGroup,
    group_tasks,
    resolve_tasks,
)

DIGITS = {"digit": [str(i) for i in range(10)]}
PETS = {"animal": ["cat", "dog", "bird", "fish"]}
SHAPES = {"shape": ["square", "circle", "triangle"], "colour": ["red", "green", "blue", "yellow"],
          "size": ["small", "large"]}


# ---------------------------------------------------------------- resolving


@pytest.mark.parametrize("spec", [None, "", "auto", "  auto  "])
def test_auto_on_a_single_output_teacher_is_one_vs_rest(spec):
    tasks = resolve_tasks(spec, DIGITS)
    assert [t.name for t in tasks] == [str(i) for i in range(10)]
    assert all(t.kind == ONE_VS_REST and t.source == "digit" for t in tasks)
    assert [t.classes for t in tasks] == [(i,) for i in range(10)]
    assert tasks[7].class_names == ("7",)
    assert tasks[7].num_outputs == 1
    assert tasks[7].title == "digit 7"


@pytest.mark.parametrize("spec", [None, "auto", "heads"])
def test_auto_and_heads_on_a_multi_output_teacher_give_one_task_per_head(spec):
    tasks = resolve_tasks(spec, SHAPES)
    assert [t.name for t in tasks] == ["shape", "colour", "size"]
    assert all(t.kind == HEAD and t.source == t.name for t in tasks)
    assert tasks[1].classes == (0, 1, 2, 3)
    assert tasks[1].class_names == ("red", "green", "blue", "yellow")
    assert [t.num_outputs for t in tasks] == [3, 4, 2]
    assert tasks[0].title == "shape"


def test_heads_on_a_single_output_teacher_is_one_task_over_all_classes():
    (task,) = resolve_tasks("heads", DIGITS)
    assert task == Task("digit", "digit", tuple(range(10)), tuple(DIGITS["digit"]), HEAD)
    assert task.num_outputs == 10


@pytest.mark.parametrize("spec", ["one-vs-rest", "ovr"])
def test_one_vs_rest_keyword_covers_every_class(spec):
    tasks = resolve_tasks(spec, PETS)
    assert [t.name for t in tasks] == PETS["animal"]
    assert [t.classes for t in tasks] == [(0,), (1,), (2,), (3,)]


def test_one_vs_rest_subset_by_index_keeps_the_given_order():
    tasks = resolve_tasks("one-vs-rest:7,3", DIGITS)
    assert [(t.name, t.classes) for t in tasks] == [("7", (7,)), ("3", (3,))]
    assert all(t.kind == ONE_VS_REST for t in tasks)


def test_one_vs_rest_subset_by_name_and_mixed_with_whitespace():
    tasks = resolve_tasks("ovr: dog , 3", PETS)
    assert [(t.name, t.classes, t.class_names) for t in tasks] == [("dog", (1,), ("dog",)), ("fish", (3,), ("fish",))]


def test_output_list_picks_heads_by_name_in_the_given_order():
    tasks = resolve_tasks("size, shape", SHAPES)
    assert [t.name for t in tasks] == ["size", "shape"]
    assert tasks[0].classes == (0, 1) and tasks[0].kind == HEAD


def test_output_whose_name_starts_like_a_keyword_is_still_an_output():
    outputs = {"ovr_score": ["a", "b"], "one-vs-rest-head": ["x", "y", "z"]}
    assert [t.name for t in resolve_tasks("ovr_score", outputs)] == ["ovr_score"]
    assert [t.name for t in resolve_tasks("one-vs-rest-head", outputs)] == ["one-vs-rest-head"]


def test_named_groups_by_index_and_by_name():
    tasks = resolve_tasks("pets=cat,dog; wild = 2,3", PETS)
    assert [t.name for t in tasks] == ["pets", "wild"]
    assert tasks[0] == Task("pets", "animal", (0, 1), ("cat", "dog"), GROUP)
    assert tasks[1].classes == (2, 3) and tasks[1].class_names == ("bird", "fish")
    assert [t.num_outputs for t in tasks] == [2, 2]
    assert tasks[0].title == "pets"


def test_groups_may_overlap_and_skip_classes_and_a_trailing_semicolon_is_fine():
    tasks = resolve_tasks("low=0,1,2;odd=1,3,5,7,9;", DIGITS)
    assert [t.classes for t in tasks] == [(0, 1, 2), (1, 3, 5, 7, 9)]


def test_task_round_trips_through_a_dict():
    for task in resolve_tasks("pets=cat,dog", PETS) + resolve_tasks(None, PETS) + resolve_tasks("heads", SHAPES):
        assert Task.from_dict(task.to_dict()) == task


# ---------------------------------------------------------------- grouping


def test_group_tasks_joins_one_vs_rest_tasks_of_a_source():
    tasks = resolve_tasks("one-vs-rest:3,7,1", DIGITS)
    (group,) = group_tasks(tasks)
    assert group == TaskGroup("digit", "digit", tuple(tasks))
    assert group.classes == (3, 7, 1)
    assert group.class_names == ("3", "7", "1")


def test_group_tasks_gives_heads_and_class_groups_their_own_group():
    heads = group_tasks(resolve_tasks("heads", SHAPES))
    assert [(g.name, g.source, len(g.tasks)) for g in heads] == [("shape", "shape", 1), ("colour", "colour", 1),
                                                                 ("size", "size", 1)]
    groups = group_tasks(resolve_tasks("low=0,1;high=8,9", DIGITS))
    assert [(g.name, g.source, g.classes) for g in groups] == [("low", "digit", (0, 1)), ("high", "digit", (8, 9))]


def test_group_tasks_mixed_kinds_and_sources():
    mixed = [Task("a", "s1", (0,), ("x",), ONE_VS_REST), Task("h", "h", (0, 1), ("p", "q"), HEAD),
             Task("b", "s1", (2,), ("z",), ONE_VS_REST), Task("c", "s2", (1,), ("w",), ONE_VS_REST)]
    groups = group_tasks(mixed)
    assert [(g.name, [t.name for t in g.tasks]) for g in groups] == [("h", ["h"]), ("s1", ["a", "b"]), ("s2", ["c"])]


# ---------------------------------------------------------------- errors


def _error(spec, outputs) -> str:
    with pytest.raises(TaskError) as info:
        resolve_tasks(spec, outputs)
    assert isinstance(info.value, KFError)
    message = str(info.value)
    assert "\n" not in message and message.endswith(".")
    return message


@pytest.mark.parametrize("spec", ["one-vs-rest:cat,horse", "ovr:12", "ovr:-1", "pets=cat,horse"])
def test_unknown_class_names_the_bad_class_and_lists_the_classes(spec):
    message = _error(spec, PETS)
    bad = spec.rsplit(",", 1)[-1].rsplit(":", 1)[-1]
    assert f"'{bad}'" in message
    assert "cat, dog, bird, fish" in message


def test_unknown_class_list_is_shortened_for_many_classes():
    many = {"label": [f"c{i}" for i in range(30)]}
    message = _error("ovr:nope", many)
    assert "c0, c1" in message and "..." in message and "c29" not in message


def test_unknown_output_lists_the_outputs():
    message = _error("shape,weight", SHAPES)
    assert "'weight'" in message
    assert "shape, colour, size" in message


@pytest.mark.parametrize("spec,outputs,name", [
    ("shape,shape", SHAPES, "shape"),
    ("one-vs-rest:dog,1", PETS, "dog"),
    ("a=0,1;a=2,3", PETS, "a"),
])
def test_duplicate_tasks_are_rejected(spec, outputs, name):
    message = _error(spec, outputs)
    assert f"'{name}'" in message and "twice" in message


def test_a_group_naming_a_class_twice_is_rejected():
    assert "twice" in _error("pets=cat,0", PETS)


def test_single_class_group_is_rejected():
    message = _error("pets=cat,dog;lonely=fish", PETS)
    assert "'lonely'" in message and "at least two" in message


def test_one_vs_rest_of_a_single_class_output_is_rejected():
    assert "at least two" in _error(None, {"only": ["x"]})


@pytest.mark.parametrize("spec,what", [("small=0,1;big=2", "Class groups"), ("one-vs-rest", "One-vs-rest"),
                                       ("ovr:1", "One-vs-rest")])
def test_groups_and_one_vs_rest_on_a_multi_output_teacher_suggest_outputs(spec, what):
    message = _error(spec, SHAPES)
    assert message.startswith(what)
    assert "one output" in message and "3" in message
    assert "shape, colour, size" in message and "--tasks shape" in message


@pytest.mark.parametrize("spec", ["=0,1", "pets=", "pets= ;wild=2,3"])
def test_malformed_group_shows_the_expected_form(spec):
    assert "name=class,class" in _error(spec, PETS)


def test_teacher_without_outputs():
    assert "no outputs" in _error("auto", {})


@pytest.mark.parametrize("bad", [{"name": "x"}, {"name": "x", "source": "s", "classes": ["a"], "class_names": [],
                                                  "kind": HEAD}])
def test_incomplete_task_dict(bad):
    with pytest.raises(TaskError, match="incomplete"):
        Task.from_dict(bad)


def test_unknown_task_kind():
    d = Task("x", "s", (0, 1), ("a", "b"), HEAD).to_dict() | {"kind": "regression"}
    with pytest.raises(TaskError, match="regression"):
        Task.from_dict(d)


# ---------------------------------------------------------------- a one-class run learns


def test_a_one_brick_run_learns_its_class_against_the_rest():
    """``--tasks one-vs-rest:3`` once trained nothing (every loss was 0) and reported 100 %."""
    import torch

    from kfstudio.core.data.sources import load_data, prepare
    from kfstudio.core.factorize import FactorizeConfig, iter_factorize

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        split = load_data("builtin:digits")
        config = FactorizeConfig(tasks="one-vs-rest:3", epochs=2, common_width=0.5, task_width=0.25, batch_size=64,
                                 device="cpu", num_threads=1, report_every=1, seed=0)
        steps = []
        result = drain(iter_factorize(config, data=split),
                       lambda report: steps.append(report.losses["loss_cls"]) if report.kind == "step" else None)
    finally:
        torch.set_num_threads(before)
    assert steps[0] > 0.3 and sum(steps[-5:]) / 5 < 0.85 * steps[0]  # the loss falls (it was identically 0)
    # a balanced test: every 3 of the test split and as many other digits
    y = split.test.labels["digit"]
    threes, others = (y == 3).nonzero().flatten(), (y != 3).nonzero().flatten()
    index = torch.cat([threes, others[: len(threes)]])
    x = prepare(split.test, result.teacher.input_spec).x[index]
    with torch.no_grad():
        says_3 = result.network(x)["3"][:, 0] > 0  # its logit is the log-odds against the rest
    accuracy = float((says_3 == (y[index] == 3)).float().mean())
    assert len(threes) >= 30 and accuracy >= 0.95
    assert result.final.tasks["3"].balanced_accuracy >= 0.95 and result.final.tasks["3"].samples == len(y)
