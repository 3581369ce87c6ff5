"""The cost budget: parsing, sizing by the teacher's multiply-adds, refusals in words, the record
in run.json, and the CLI's --budget."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from kfstudio.cli.app import build_parser, main
from kfstudio.cli.factorize_cmd import config_from_args
from kfstudio.core.students.budget import parse_budget, size_students, student_macs, teacher_macs
from kfstudio.core.errors import ConfigError
from kfstudio.core.factorize import FactorizeConfig, build_students, factorize
from kfstudio.core.tasks import resolve_tasks
from kfstudio.core.teachers.loaders import load_teacher
from kfstudio.io.bricks import save_factorization


@pytest.mark.parametrize("text,share", [("1x", 1.0), ("1/2", 0.5), ("1/4", 0.25), ("50%", 0.5), ("0.3x", 0.3),
                                        ("2", 2.0), (" 3/4 x ", 0.75)])
def test_budgets_read_as_shares_of_the_teacher(text, share):
    assert parse_budget(text) == pytest.approx(share)


@pytest.mark.parametrize("text", ["half", "1/0x", "0", "-1x", "1/2%", "", "1e3"])
def test_a_budget_that_is_not_a_share_is_refused_in_words(text):
    with pytest.raises(ConfigError, match="budget"):
        parse_budget(text)


def test_the_largest_widths_that_fit_are_chosen():
    counted = []

    def cost_at(common: float, task: float) -> int:
        counted.append(common)
        return int(1000 * common + 2000 * task)          # grows with the widths, as a network's does

    sizing = size_students("1/2", 2000, 1.0, 0.5, cost_at)   # 1000 multiply-adds allowed
    assert (sizing.common_width, sizing.task_width, sizing.student_macs) == (0.5, 0.25, 1000)
    assert len(counted) <= 6                                   # a halving search, not the whole ladder
    assert size_students("4x", 2000, 1.0, 0.5, cost_at).common_width == 2.0


def _digits_cost():
    teacher = load_teacher("builtin:digits", allow_code=True)
    shape = teacher.input_spec.shape
    tasks = resolve_tasks(None, teacher.class_names)

    def cost_at(config: FactorizeConfig):
        common, bricks = build_students(config, tasks, teacher.input_spec)
        return student_macs(common, bricks.values(), shape)

    return teacher_macs(teacher.module, teacher.outputs, shape), cost_at


def test_a_budget_too_small_for_any_student_names_the_smallest_that_fits():
    spent, cost = _digits_cost()
    config = FactorizeConfig()
    at = lambda cw, tw: cost(replace(config, common_width=cw, task_width=tw))
    with pytest.raises(ConfigError) as info:
        size_students("1/100", spent, 1.0, 0.5, at)
    words = str(info.value)
    assert "too small for any student" in words and "--brick-input" in words
    smallest = words.split("smallest budget that fits is ")[1].split(";")[0]
    sizing = size_students(smallest, spent, 1.0, 0.5, at)     # the budget it names does fit
    assert sizing.student_macs <= sizing.budget_macs


def test_light_bricks_fit_a_budget_at_wider_sizes():
    spent, cost = _digits_cost()
    sized = {}
    for reads in ("image", "stage2"):
        config = FactorizeConfig(brick_input=reads)
        sized[reads] = size_students("1/2", spent, 1.0, 0.5,
                                     lambda cw, tw, c=config: cost(replace(c, common_width=cw, task_width=tw)))
        assert sized[reads].student_macs <= spent / 2
    assert sized["stage2"].common_width > sized["image"].common_width


def test_a_budgeted_run_is_sized_and_recorded(tmp_path):
    config = FactorizeConfig(teacher="builtin:digits", data="builtin:digits", epochs=1, batch_size=256, device="cpu",
                             budget="1/2", brick_input="stage2", tasks="one-vs-rest:3,7")
    result = factorize(config)
    save_factorization(result, tmp_path)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["config"]["budget"] == "1/2" and run["sizing"]["budget"] == "1/2"
    assert run["config"]["common_width"] == run["sizing"]["common_width"] != 1.0
    spent, _ = _digits_cost()
    net = result.network.eval()
    assert student_macs(net.common, [net.brick(t) for t in net.task_names], (1, 8, 8)) <= spent / 2
    assert torch.equal(torch.tensor(run["sizing"]["teacher_macs"]), torch.tensor(spent))


def _cli_config(*extra: str) -> FactorizeConfig:
    return config_from_args(build_parser().parse_args(["factorize", "--out", "unused", *extra]))


def test_the_cli_budget_defaults_to_the_teacher_and_explicit_widths_win():
    assert _cli_config().budget == "1x"
    assert _cli_config("--budget", "1/4").budget == "1/4"
    assert _cli_config("--budget", "1/4", "--task-width", "0.25").budget is None
    assert _cli_config().brick_input == "stage1" and _cli_config("--brick-input", "image").brick_input == "image"


def test_the_cli_stem_stride_is_full_resolution_unless_asked():
    assert _cli_config().stem_stride == 1
    assert _cli_config("--stem-stride", "2").stem_stride == 2
    assert _cli_config("--stem-stride", "auto").stem_stride == "auto"


def test_a_bad_cli_budget_is_one_sentence(tmp_path, capsys):
    assert main(["factorize", "--out", str(tmp_path / "out"), "--budget", "lots"]) == 2
    err = capsys.readouterr().err
    assert "such as 1x, 1/2, 1/4" in err and "Traceback" not in err
