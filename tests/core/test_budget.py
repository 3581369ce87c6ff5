"""The cost budget: parsing, sizing by the teacher's multiply-adds, refusals in words, the record
in run.json, and the CLI's --budget."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from kfstudio.cli.app import build_parser, main
from kfstudio.cli.factorize_cmd import config_from_args
from kfstudio.core.students.budget import conv_channels, parse_budget, size_students, student_macs, teacher_macs
from kfstudio.core.errors import ConfigError
from kfstudio.core.factorize import FactorizeConfig, build_students, factorize, sized_config
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
                             budget="1/4", brick_input="stage2", tasks="one-vs-rest:3,7")
    result = factorize(config)
    save_factorization(result, tmp_path)
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["config"]["budget"] == "1/4" and run["sizing"]["budget"] == "1/4"
    assert run["config"]["common_width"] == run["sizing"]["common_width"] != 1.0
    assert run["sizing"]["fast_channels"] is False   # 0.75: 12 / 24 / 48 channels, the widest that fit
    spent, _ = _digits_cost()
    net = result.network.eval()
    assert student_macs(net.common, [net.brick(t) for t in net.task_names], (1, 8, 8)) <= spent / 4
    assert torch.equal(torch.tensor(run["sizing"]["teacher_macs"]), torch.tensor(spent))


def _cli_config(*extra: str) -> FactorizeConfig:
    return config_from_args(build_parser().parse_args(["factorize", "--out", "unused", *extra]))


def test_the_cli_budget_defaults_to_the_teacher_and_explicit_widths_win():
    assert _cli_config().budget == "1x"
    assert _cli_config("--budget", "1/4").budget == "1/4"
    assert _cli_config("--budget", "1/4", "--task-width", "0.25").budget is None
    assert _cli_config().brick_input == "stage1" and _cli_config("--brick-input", "image").brick_input == "image"


def test_the_cli_lets_the_budget_choose_the_bricks_architecture_unless_asked():
    assert _cli_config().task_net == "auto"
    assert _cli_config("--task-net", "tiny").task_net == "tiny"
    assert FactorizeConfig().task_net == "tiny"     # the library keeps the paper's form


def test_a_tiny_mid_brick_is_widest_in_its_middle_stage():
    from kfstudio.core.students.backbones import create_backbone

    assert create_backbone("tiny-mid", 3, 0.5).stage_channels == [8, 32, 16]
    assert create_backbone("tiny", 3, 0.5).stage_channels == [8, 16, 32]


def test_the_cli_stem_stride_is_auto_unless_asked():
    assert _cli_config().stem_stride == "auto"
    assert _cli_config("--stem-stride", "2").stem_stride == 2
    assert _cli_config("--stem-stride", "1").stem_stride == 1


def test_the_cli_trains_on_shifted_copies_unless_told_not_to():
    assert _cli_config().augment is True
    assert _cli_config("--no-augment").augment is False
    assert FactorizeConfig().augment is False     # the library keeps the paper's training data


def test_of_the_sizes_that_fit_the_widest_with_fast_channels_is_taken():
    cost_at = lambda common, task: int(1000 * common + 2000 * task)           # noqa: E731
    channels_at = lambda common, task: [round(16 * common), round(32 * task)]  # noqa: E731
    plain = size_students("1/2", 2000, 1.0, 0.5, cost_at)                      # 1000 allowed: scale 0.5 fits
    fast = size_students("1/2", 2000, 1.0, 0.5, cost_at, channels_at)
    assert (plain.common_width, plain.fast_channels) == (0.5, False)           # 8 and 8 channels: slow
    # 0.5 -> 8 / 8, 0.4375 -> 7 / 7, ... none a multiple of 16 at half the widest fit's cost or more
    assert (fast.common_width, fast.task_width, fast.fast_channels) == (0.5, 0.25, False)
    roomy = size_students("1x", 2000, 1.0, 0.5, cost_at, channels_at)          # 2000 allowed: 1.0 -> 16 / 16
    assert (roomy.common_width, roomy.fast_channels) == (1.0, True)
    wide = size_students("1.3x", 2000, 1.0, 0.5, cost_at, channels_at)          # 1.25 fits (20 / 20): 1.0 is fast
    assert (wide.common_width, wide.task_width, wide.fast_channels) == (1.0, 0.5, True)
    assert "multiples of 16" in wide.describe() and "multiples" not in plain.describe()


def test_fast_channels_are_not_bought_with_a_network_under_half_the_size():
    cost_at = lambda common, task: int(1000 * common + 2000 * task)            # noqa: E731
    only_tiny = lambda common, task: [16] if common <= 0.25 else [20]            # noqa: E731
    sizing = size_students("1x", 2000, 1.0, 0.5, cost_at, only_tiny)
    assert (sizing.common_width, sizing.fast_channels) == (1.0, False)         # 0.25 costs a quarter: refused


def test_shapes_hard_at_half_resolution_is_sized_to_channels_of_16(tmp_path):
    teacher = load_teacher("builtin:shapes-hard", allow_code=True)
    tasks = resolve_tasks(None, teacher.class_names)
    config = FactorizeConfig(teacher="builtin:shapes-hard", data="builtin:shapes-hard", budget="1x",
                             brick_input="stage1", stem_stride="auto")
    sized, sizing = sized_config(config, teacher, tasks)
    assert (sized.common_width, sized.task_width, sizing.fast_channels) == (1.0, 0.5, True)  # 1.25 / 0.625 would fit
    common, bricks = build_students(sized, tasks, teacher.input_spec)
    assert all(c % 16 == 0 for c in conv_channels([common, *bricks.values()]))
    assert sizing.student_macs <= sizing.budget_macs


def _sized_auto(name: str, reads: str = "stage1", budget: str = "1x"):
    teacher = load_teacher(f"builtin:{name}", allow_code=True)
    tasks = resolve_tasks(None, teacher.class_names)
    config = FactorizeConfig(teacher=f"builtin:{name}", data=f"builtin:{name}", budget=budget, brick_input=reads,
                             stem_stride="auto", task_net="auto")
    return sized_config(config, teacher, tasks), teacher, tasks


def test_the_budget_gives_stage1_bricks_a_wide_middle_where_it_fits():
    (sized, sizing), teacher, tasks = _sized_auto("shapes-hard")
    assert (sized.task_net, sizing.task_net, sized.common_width, sized.task_width) == ("tiny-mid", "tiny-mid", 1.0, 0.5)
    common, bricks = build_students(sized, tasks, teacher.input_spec)
    assert sizing.student_macs == student_macs(common, bricks.values(), teacher.input_spec.shape) <= sizing.budget_macs
    assert all(c % 16 == 0 for c in conv_channels([common, *bricks.values()]))
    assert "tiny-mid bricks" in sizing.describe()


def test_where_the_wide_middle_does_not_fit_the_bricks_stay_tiny():
    (sized, sizing), *_ = _sized_auto("digits")              # ten bricks: tiny-mid at 1 / 0.5 is over 1x
    assert (sized.task_net, sized.common_width, sized.task_width) == ("tiny", 1.0, 0.5)
    (sized, _), *_ = _sized_auto("shapes-hard", reads="stage2")   # measured for stage-1 bricks only
    assert sized.task_net == "tiny"
    (sized, sizing), *_ = _sized_auto("shapes-hard", budget=None)   # no budget: by the brick input alone
    assert (sized.task_net, sizing) == ("tiny-mid", None)


def test_a_bad_cli_budget_is_one_sentence(tmp_path, capsys):
    assert main(["factorize", "--out", str(tmp_path / "out"), "--budget", "lots"]) == 2
    err = capsys.readouterr().err
    assert "such as 1x, 1/2, 1/4" in err and "Traceback" not in err
