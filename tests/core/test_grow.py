"""Growing the set: one new brick trained on a frozen common module.

Runs are tiny (a few hundred images, a few steps, one CPU thread) on the session's real
factorizations (tests/conftest.py).
"""

from __future__ import annotations

import copy

import pytest
import torch

from kfstudio.assembly.build import build_from_files
from kfstudio.core.data.sources import DataSplit, load_data
from kfstudio.core.data.shapes import make_shapes
from kfstudio.core.errors import ConfigError, DataError, TaskError, TeacherError
from kfstudio.core.runs import EvalReport, RunControl, SetupReport, StepReport
from kfstudio.core.grow import GrowConfig, iter_grow, grow, parse_task, task_targets, teacher_task_logits
from kfstudio.core.imb import TERMS
from kfstudio.core.runs import drain
from kfstudio.core.students.networks import ArchSpec
from kfstudio.core.tasks import GROUP, HEAD, ONE_VS_REST
from kfstudio.core.teachers.loaders import load_teacher
from kfstudio.io.bricks import fingerprint, load_brick, load_common, save_brick

FAST = {"device": "cpu", "batch_size": 64, "num_threads": 1, "report_every": 1}


@pytest.fixture(scope="module")
def shapes_small():
    return DataSplit(make_shapes(600, seed=3), make_shapes(300, seed=4), "600 shapes for training, 300 for testing")


@pytest.fixture(scope="module")
def digits_small():
    split = load_data("builtin:digits")
    return DataSplit(split.train.subset(list(range(400))), split.test, "400 digits")


def _net(common_file, width=0.25):
    return ArchSpec("tiny", width, common_file.input_spec.channels)


def _state(module):
    return {k: v.clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------- tasks


def test_parse_task_kinds(shapes_small):
    ds = shapes_small.train
    head = parse_task("y", ds)
    assert (head.kind, head.source, head.classes, head.class_names) == (HEAD, "y", (0, 1, 2), ("top", "middle", "bottom"))
    group = parse_task("upper=top,middle", ds, label="y")
    assert (group.kind, group.source, group.classes) == (GROUP, "y", (0, 1))
    ovr = parse_task("bottom_row=2", ds, label="y")
    assert (ovr.kind, ovr.classes, ovr.num_outputs, ovr.rest) == (ONE_VS_REST, (2,), 1, True)


def test_parse_task_errors_are_plain(shapes_small, digits_small):
    with pytest.raises(TaskError, match="several labels"):
        parse_task("anything", shapes_small.train)
    with pytest.raises(TaskError, match="no label 'z'"):
        parse_task("a=1", shapes_small.train, label="z")
    with pytest.raises(TaskError, match="no class 'purple'"):
        parse_task("p=purple", shapes_small.train, label="colour")
    with pytest.raises(TaskError, match="twice"):
        parse_task("p=1,1", digits_small.train)
    unlabeled = copy.copy(digits_small.train)
    unlabeled.labels = {}
    with pytest.raises(DataError, match="no labels"):
        parse_task("seven=7", unlabeled)
    with pytest.raises(ConfigError, match="name"):
        GrowConfig(data="builtin:digits", task="=7")


def test_one_vs_rest_targets_are_the_class_against_all_the_rest(digits_small):
    task = parse_task("seven=7", digits_small.train)
    y = torch.tensor([7, 1, 7, 0, 9])
    assert task_targets(task, y).tolist() == [1, 0, 1, 0, 0]
    group = parse_task("low=0,1", digits_small.train)
    assert task_targets(group, y).tolist() == [-1, 1, -1, 0, -1]
    # The teacher's view of "7 or not": softmax over [rest, 7] equals its own p(7).
    logits = torch.randn(5, 10)
    two = teacher_task_logits(task, logits).softmax(dim=1)[:, 1]
    assert torch.allclose(two, logits.softmax(dim=1)[:, 7], atol=1e-6)


# ---------------------------------------------------------------- training


def test_the_common_module_is_bit_identical_after_growing(shapes_run, shapes_small):
    common = load_common(shapes_run[1] / "common.safetensors")
    before = _state(common.module)
    reports = []
    result = drain(iter_grow(GrowConfig(data="-", task="y", epochs=2, **FAST), common.module, common.input_spec,
                             _net(common), data=shapes_small), reports.append)
    after = common.module.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm buffers included
    assert fingerprint(after) == common.fingerprint
    assert isinstance(reports[0], SetupReport) and reports[0].task_names == ("y",)
    steps = [r for r in reports if isinstance(r, StepReport)]
    assert steps and set(steps[-1].losses) == {"loss", *TERMS}
    assert steps[-1].losses["loss_infomax"] == 0.0 and steps[-1].losses["loss_kd"] == 0.0
    assert steps[-1].losses["loss_infomin"] > 0.0
    assert [r.epoch for r in reports if isinstance(r, EvalReport)] == [1, 2]
    assert result.task.name == "y" and result.epochs_done == 2 and not result.cancelled
    # The brick belongs to the run's family: its own tiny backbone on the common module's z_c.
    assert result.brick.spec.z_dim == common.module.z_dim and result.brick.spec.num_outputs == 3


def test_a_new_brick_learns_a_held_back_factor_well_above_chance(shapes_run, shapes_small):
    common = load_common(shapes_run[1] / "common.safetensors")
    result = grow(GrowConfig(data="-", task="y", epochs=4, lr=0.05, **FAST), common.module, common.input_spec,
                  _net(common), data=shapes_small)
    assert result.final.tasks["y"].accuracy > 0.6  # chance is 1/3
    assert result.teacher_metrics is None  # the shapes teacher has no y head


def test_a_teacher_that_knows_the_task_adds_distillation(digits_run, digits_small):
    common = load_common(digits_run[1] / "common.safetensors")
    teacher = load_teacher("builtin:digits")
    gen = iter_grow(GrowConfig(data="-", task="seven=7", epochs=1, **FAST), common.module, common.input_spec,
                    _net(common), teacher=teacher, data=digits_small)
    kd = [r.losses["loss_kd"] for r in gen if isinstance(r, StepReport)]
    assert kd and all(v > 0 for v in kd)
    assert fingerprint(common.module.state_dict()) == common.fingerprint


def test_a_teacher_that_does_not_know_the_task_is_refused(shapes_run, shapes_small, digits_run):
    common = load_common(shapes_run[1] / "common.safetensors")
    with pytest.raises(TaskError, match="does not know this task"):
        grow(GrowConfig(data="-", task="y", epochs=1, **FAST), common.module, common.input_spec, _net(common),
             teacher=load_teacher("builtin:shapes"), data=shapes_small)
    with pytest.raises(TeacherError, match="expects inputs"):
        grow(GrowConfig(data="-", task="shape", epochs=1, **FAST), common.module, common.input_spec, _net(common),
             teacher=load_teacher("builtin:digits"), data=shapes_small)


def test_cancel_returns_the_brick_as_it_is(digits_run, digits_small):
    common = load_common(digits_run[1] / "common.safetensors")
    control = RunControl()
    gen = iter_grow(GrowConfig(data="-", task="seven=7", epochs=3, **FAST), common.module, common.input_spec,
                    _net(common), control=control, data=digits_small)
    steps = []

    def on_report(report):
        if isinstance(report, StepReport):
            steps.append(report)
            control.cancel()

    result = drain(gen, on_report)
    steps = len(steps)
    assert steps == 1 and result.cancelled and result.epochs_done == 0
    assert result.final.tasks["seven"].samples == len(digits_small.test)


def test_the_saved_brick_attaches_beside_the_old_ones_and_changes_none_of_them(digits_copy, digits_small):
    common = load_common(digits_copy / "common.safetensors")
    result = grow(GrowConfig(data="-", task="seven_again=7", epochs=1, **FAST), common.module, common.input_spec,
                  _net(common), data=digits_small)
    written = save_brick(digits_copy, result.brick, result.task, common, metrics=result.final.tasks["seven_again"])
    new = load_brick(written[0])
    assert new.common_fingerprint == common.fingerprint and new.task.kind == ONE_VS_REST
    old = [load_brick(digits_copy / "bricks" / f"{d}.safetensors") for d in ("3", "5")]
    fresh_common = load_common(digits_copy / "common.safetensors")
    x = digits_small.test.x[:16].clone()
    before = build_from_files(fresh_common, old)(x)
    after = build_from_files(fresh_common, [*old, new])(x)
    for name in ("3", "5"):
        assert torch.equal(before[name], after[name])
    assert after["seven_again"].shape == (16, 1)
