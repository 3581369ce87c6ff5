"""One-vs-rest subsets are real one-vs-rest: a "none of these" outcome, scored on every input.

The logits here are made by hand or drawn at random, so each figure can be worked out on paper.
"""

from __future__ import annotations

import math

import pytest
import torch

from kfstudio.core.imb import group_targets
from kfstudio.core.measures.metrics import (
    REST,
    evaluate_logits,
    group_logits,
    group_prediction,
    teacher_group_logits,
    to_outcomes,
)
from kfstudio.core.tasks import group_tasks, resolve_tasks

DIGITS = {"digit": [str(i) for i in range(10)]}


def _random_case(spec: str, n: int = 2000, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tasks = resolve_tasks(spec, DIGITS)
    logits = {t.name: torch.randn(n, 1, generator=g) for t in tasks}
    teacher = torch.randn(n, 10, generator=g) * 5
    labels = teacher.argmax(dim=1)  # a teacher that is always right
    return tasks, logits, {"digit": teacher}, {"digit": labels}


def test_a_subset_of_one_vs_rest_is_trained_against_the_rest_and_the_full_set_is_not():
    assert all(t.rest for t in resolve_tasks("one-vs-rest:3,7", DIGITS))
    assert all(t.rest for t in resolve_tasks("ovr:3", DIGITS))
    assert not any(t.rest for t in resolve_tasks("one-vs-rest", DIGITS))
    (group,) = group_tasks(resolve_tasks("one-vs-rest:3,7", DIGITS))
    assert group.rest
    # the rest gets the position after the group's classes, so no input is left out of the loss
    assert group_targets(group, torch.tensor([3, 7, 0, 9])).tolist() == [0, 1, 2, 2]


def test_random_logits_of_a_one_class_run_are_far_from_perfect():
    tasks, logits, teacher, labels = _random_case("ovr:3")
    per_task, per_group = evaluate_logits(tasks, logits, teacher, labels)
    m = per_task["3"]
    assert m.samples == 2000  # every input is asked, not only the 3s
    # a coin flip per input: about half right, and balanced accuracy about 50 %
    assert 0.4 < m.accuracy < 0.6 and 0.4 < m.balanced_accuracy < 0.6
    assert per_group["digit"].accuracy < 0.6
    # the teacher answers "is it a 3?" with p(3) > p(everything else), not with its argmax
    assert m.teacher_accuracy > 0.95


def test_a_one_class_run_that_always_says_no_scores_fifty_percent_balanced():
    tasks, logits, teacher, labels = _random_case("ovr:3")
    logits = {"3": torch.full((2000, 1), -4.0)}
    m = evaluate_logits(tasks, logits, teacher, labels)[0]["3"]
    share_of_3 = float((labels["digit"] == 3).float().mean())
    assert m.accuracy == pytest.approx(1 - share_of_3)  # ~90 %: why plain accuracy misleads here
    assert m.balanced_accuracy == pytest.approx(0.5)


def test_two_of_ten_classes_are_scored_against_the_rest_too():
    tasks = resolve_tasks("one-vs-rest:3,7", DIGITS)
    labels = torch.tensor([3, 7, 1, 5, 3, 0])
    # rows: says 3, says 7, says none, says 3 (wrong: a 5), says none (wrong: a 3), says 7 (wrong: a 0)
    s3 = torch.tensor([[2.0], [-1.0], [-1.0], [1.0], [-2.0], [-3.0]])
    s7 = torch.tensor([[0.0], [3.0], [-0.5], [0.5], [-1.0], [0.2]])
    teacher = torch.nn.functional.one_hot(labels, 10).float() * 10
    per_task, per_group = evaluate_logits(tasks, {"3": s3, "7": s7}, {"digit": teacher}, {"digit": labels})
    g = per_group["digit"]
    assert g.samples == 6
    assert g.accuracy == pytest.approx(3 / 6)
    assert g.rest_accuracy == pytest.approx(1 / 3)  # of the 1, 5 and 0, only the 1 got "none of these"
    assert g.teacher_accuracy == 1.0
    # "is it a 3?": right on rows 0, 1, 2, 5; wrong on 3 (said 3) and 4 (missed a 3)
    assert per_task["3"].accuracy == pytest.approx(4 / 6)
    assert per_task["3"].balanced_accuracy == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert group_prediction(group_tasks(tasks)[0], {"3": s3, "7": s7}).tolist() == [3, 7, REST, 3, REST, 7]


def test_the_teacher_pools_the_classes_left_out_into_none_of_these():
    (group,) = group_tasks(resolve_tasks("ovr:3,7", DIGITS))
    t = torch.randn(5, 10)
    pooled = teacher_group_logits(group, {"digit": t}).softmax(dim=1)
    p = t.softmax(dim=1)
    rest = p[:, [0, 1, 2, 4, 5, 6, 8, 9]].sum(dim=1)
    assert torch.allclose(pooled, torch.stack([p[:, 3], p[:, 7], rest], dim=1), atol=1e-6)
    assert group_logits(group, {"3": t[:, 3:4], "7": t[:, 7:8]})[:, -1].eq(0).all()
    assert to_outcomes(group, torch.tensor([3, 4, 7])).tolist() == [3, REST, 7]


def test_random_logits_over_every_class_score_near_chance():
    tasks, logits, teacher, labels = _random_case("one-vs-rest")
    per_task, per_group = evaluate_logits(tasks, logits, teacher, labels)
    assert per_group["digit"].accuracy < 0.2 and per_group["digit"].rest_accuracy is None
    assert all(0.35 < m.balanced_accuracy < 0.65 for m in per_task.values())


def test_one_brick_of_a_ten_class_run_cannot_be_scored_alone():
    """A single brick trained without a "none of these" outcome always answers its class."""
    tasks, logits, teacher, labels = _random_case("one-vs-rest")
    alone = [t for t in tasks if t.name == "3"]
    per_task, per_group = evaluate_logits(alone, {"3": logits["3"]}, teacher, labels)
    assert math.isnan(per_task["3"].accuracy) and math.isnan(per_group["digit"].agreement)
