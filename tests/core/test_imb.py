"""The InfoMax-Bottleneck terms, each checked against numbers worked out by hand.

The expected values are computed with plain Python ``math`` on tiny lists, independently of
the implementation (kf-method.md, section 4, gives the formulas).
"""

from __future__ import annotations

import math

import pytest
import torch

from kfstudio.core.errors import ConfigError
from kfstudio.core.imb import (
    COLLAPSE_SEPARATION,
    HEALTH_WARMUP_STEPS,
    INFOMAX_LABELS,
    INFOMAX_VARIANTS,
    TERMS,
    IMBObjective,
    IMBWeights,
    StageHealth,
    batch_gaussian_kl,
    collapse_warning,
    distillation,
    gaussian_kl,
    group_targets,
    infomax_bound,
    infomax_collapsed,
    infomax_health,
    infomin,
    match_stages,
    smoothed_cross_entropy,
)
from kfstudio.core.students.networks import BrickOutputs
from kfstudio.core.tasks import GROUP, HEAD, ONE_VS_REST, Task, TaskGroup

# ---------------------------------------------------------------- plain-python references


def _log_softmax(row: list[float]) -> list[float]:
    top = max(row)
    log_z = top + math.log(sum(math.exp(v - top) for v in row))
    return [v - log_z for v in row]


def _softmax(row: list[float]) -> list[float]:
    return [math.exp(v) for v in _log_softmax(row)]


def _smoothed_ce(rows: list[list[float]], targets: list[int], eps: float) -> float:
    losses = []
    for row, y in zip(rows, targets):
        if y < 0:
            continue
        k = len(row)
        logp = _log_softmax(row)
        # target distribution: (1 - eps) on y, plus eps / K spread over every class
        losses.append(-sum(((1 - eps) * (c == y) + eps / k) * logp[c] for c in range(k)))
    return sum(losses) / len(losses)


def _kd(student: list[list[float]], teacher: list[list[float]], t: float) -> float:
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        p_t = _softmax([v / t for v in t_row])
        p_s = _softmax([v / t for v in s_row])
        total += sum(pt * (math.log(pt) - math.log(ps)) for pt, ps in zip(p_t, p_s))
    return t * t * total / len(student)


def _unit(v: list[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def _infomax(a: list[list[float]], b: list[list[float]], joint_divisor: str) -> float:
    a, b = [_unit(r) for r in a], [_unit(r) for r in b]
    n = len(a)
    s = [[sum(x * y for x, y in zip(a[i], b[j])) for j in range(n)] for i in range(n)]
    e_joint = sum(s[i][i] for i in range(n)) / (n * n if joint_divisor == "authors" else n)
    e_marginal = (sum(math.exp(s[i][j]) for i in range(n) for j in range(n) if i != j) + n) / (n * n)
    return -(e_joint - math.log(e_marginal))


def _batch_kl(z: list[list[float]]) -> float:
    n, d = len(z), len(z[0])
    out = 0.0
    for j in range(d):
        col = [row[j] for row in z]
        mu = sum(col) / n
        var = sum((v - mu) ** 2 for v in col) / (n - 1)  # unbiased
        out += 0.5 * (var + mu * mu - 1 - math.log(var))
    return out / d


def _vae_kl(mu: list[list[float]], logvar: list[list[float]]) -> float:
    per_sample = [-0.5 * sum(1 + lv - m * m - math.exp(lv) for m, lv in zip(mr, lr)) for mr, lr in zip(mu, logvar)]
    return sum(per_sample) / len(per_sample)


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float32)


# ---------------------------------------------------------------- the single terms

LOGITS = [[1.0, 2.0, 0.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]]


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_smoothed_cross_entropy_matches_hand_computation(smoothing):
    targets = [1, 2, 0]
    got = smoothed_cross_entropy(_t(LOGITS), torch.tensor(targets), smoothing)
    assert float(got) == pytest.approx(_smoothed_ce(LOGITS, targets, smoothing), rel=1e-6)


def test_smoothed_cross_entropy_ignores_minus_one_targets():
    targets = [1, -1, 0]  # the second sample lies outside the task group
    got = smoothed_cross_entropy(_t(LOGITS), torch.tensor(targets), 0.1)
    expected = _smoothed_ce(LOGITS, targets, 0.1)  # the mean over the two valid samples only
    assert float(got) == pytest.approx(expected, rel=1e-6)
    assert float(got) != pytest.approx(_smoothed_ce(LOGITS, [1, 2, 0], 0.1), rel=1e-3)


def test_smoothed_cross_entropy_all_ignored_is_zero_and_differentiable():
    logits = _t(LOGITS).requires_grad_()
    got = smoothed_cross_entropy(logits, torch.tensor([-1, -1, -1]), 0.1)
    assert float(got.detach()) == 0.0
    got.backward()
    assert logits.grad is not None and torch.all(logits.grad == 0)


@pytest.mark.parametrize("temperature", [1.0, 2.0, 10.0])
def test_distillation_is_t_squared_kl_batch_mean(temperature):
    student = [[1.0, 0.0, -1.0], [0.5, 2.0, 0.0]]
    teacher = [[3.0, 0.0, 1.0], [0.0, 1.0, 4.0]]
    got = distillation(_t(student), _t(teacher), temperature)
    assert float(got) == pytest.approx(_kd(student, teacher, temperature), rel=1e-5)


def test_distillation_is_zero_when_student_equals_teacher_and_direction_is_kl_teacher_student():
    same = [[3.0, 0.0, 1.0], [0.0, 1.0, 4.0]]
    assert float(distillation(_t(same), _t(same), 10.0)) == pytest.approx(0.0, abs=1e-6)
    s, t = [[2.0, 0.0], [0.0, 0.0]], [[0.0, 1.0], [3.0, 0.0]]
    forward = _kd(s, t, 1.0)  # KL(teacher || student)
    reverse = _kd(t, s, 1.0)
    assert forward != pytest.approx(reverse, rel=1e-3)
    assert float(distillation(_t(s), _t(t), 1.0)) == pytest.approx(forward, rel=1e-5)


TEACHER_PROJ = [[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]]
STUDENT_FEAT = [[3.0, 0.0], [1.0, 1.0], [0.0, 0.5]]


@pytest.mark.parametrize("variant", INFOMAX_VARIANTS)
def test_infomax_bound_matches_hand_computation(variant):
    got = infomax_bound(_t(TEACHER_PROJ), _t(STUDENT_FEAT), variant)
    assert float(got) == pytest.approx(_infomax(TEACHER_PROJ, STUDENT_FEAT, variant), rel=1e-6)


def test_infomax_authors_variant_divides_the_joint_term_by_b_squared():
    b = len(TEACHER_PROJ)
    authors = float(infomax_bound(_t(TEACHER_PROJ), _t(STUDENT_FEAT), "authors"))
    per_b = float(infomax_bound(_t(TEACHER_PROJ), _t(STUDENT_FEAT), "1/B"))
    a, s = [_unit(r) for r in TEACHER_PROJ], [_unit(r) for r in STUDENT_FEAT]
    trace = sum(sum(x * y for x, y in zip(a[i], s[i])) for i in range(b))
    # Only the joint term differs: -trace/B^2 versus -trace/B.
    assert authors - per_b == pytest.approx(trace / b - trace / b**2, rel=1e-6)


def test_infomax_bound_is_scale_invariant_and_rewards_alignment():
    base = float(infomax_bound(_t(TEACHER_PROJ), _t(STUDENT_FEAT)))
    scaled = float(infomax_bound(_t(TEACHER_PROJ) * 7.0, _t(STUDENT_FEAT) * 0.1))
    assert scaled == pytest.approx(base, rel=1e-6)  # both inputs are L2-normalized
    aligned = float(infomax_bound(_t(TEACHER_PROJ), _t(TEACHER_PROJ), "1/B"))
    anti = float(infomax_bound(_t(TEACHER_PROJ), -_t(TEACHER_PROJ), "1/B"))
    assert aligned < anti  # matching rows lower the loss


def test_batch_gaussian_kl_uses_unbiased_variance():
    z = [[1.0, 2.0], [3.0, 0.0], [2.0, 1.0]]
    got = batch_gaussian_kl(_t(z))
    assert float(got) == pytest.approx(_batch_kl(z), rel=1e-6)
    # with the biased (1/N) variance the number would differ noticeably
    n = len(z)
    biased = [[v * math.sqrt((n - 1) / n) for v in row] for row in z]
    assert float(got) != pytest.approx(_batch_kl(biased), rel=1e-3)


def test_batch_gaussian_kl_is_zero_for_standard_batch_statistics():
    z = [[1.0, -1.0], [-1.0, 1.0]]  # mean 0, unbiased variance 2 per dim
    expected = 0.5 * (2 - 1 - math.log(2))
    assert float(batch_gaussian_kl(_t(z))) == pytest.approx(expected, rel=1e-6)
    z_std = [[1.0], [-1.0], [0.0]]  # mean 0, unbiased variance 1: KL 0
    assert float(batch_gaussian_kl(_t(z_std))) == pytest.approx(0.0, abs=1e-7)


def test_gaussian_kl_matches_the_vae_formula():
    mu = [[0.5, -1.0], [0.0, 2.0]]
    logvar = [[0.0, 0.3], [-1.0, 0.5]]
    got = gaussian_kl(_t(mu), _t(logvar))
    assert float(got) == pytest.approx(_vae_kl(mu, logvar), rel=1e-6)
    assert float(gaussian_kl(torch.zeros(3, 4), torch.zeros(3, 4))) == pytest.approx(0.0, abs=1e-7)


def test_infomin_picks_the_vae_kl_for_gaussian_bricks():
    mu, logvar = _t([[0.5, -1.0], [0.0, 2.0]]), _t([[0.0, 0.3], [-1.0, 0.5]])
    z = _t([[1.0, 2.0], [3.0, 0.0]])
    plain = BrickOutputs(torch.zeros(2, 1), torch.zeros(2, 1), z)
    gauss = BrickOutputs(torch.zeros(2, 1), torch.zeros(2, 1), z, mu, logvar)
    assert float(infomin(plain)) == pytest.approx(float(batch_gaussian_kl(z)))
    assert float(infomin(gauss)) == pytest.approx(float(gaussian_kl(mu, logvar)))


@pytest.mark.parametrize(
    "num_teacher,num_student,expected",
    [(3, 3, [0, 1, 2]), (2, 3, [0, 1, 1]), (5, 3, [1, 3, 4]), (1, 3, [0, 0, 0]), (4, 2, [1, 3]), (3, 1, [2])],
)
def test_match_stages_by_relative_depth(num_teacher, num_student, expected):
    got = match_stages(num_teacher, num_student)
    assert got == expected
    assert got[-1] == num_teacher - 1  # the deepest stage always learns from the deepest teacher feature


def _task(name, source, classes, kind, names=None):
    names = names or tuple(str(c) for c in classes)
    return Task(name, source, tuple(classes), tuple(names), kind)


def test_group_targets_maps_labels_to_group_positions():
    group = TaskGroup("odd", "digit", (_task("odd", "digit", (7, 3, 9), GROUP),))
    labels = torch.tensor([7, 3, 0, 9, 1, 3])
    assert group_targets(group, labels).tolist() == [0, 1, -1, 2, -1, 1]


def test_group_targets_of_one_vs_rest_group_and_small_labels():
    tasks = tuple(_task(str(c), "digit", (c,), ONE_VS_REST) for c in (2, 5))
    group = TaskGroup("digit", "digit", tasks)
    # the labels never reach the largest class of the group: no index error
    assert group_targets(group, torch.tensor([0, 2, 1])).tolist() == [-1, 0, -1]
    assert group_targets(group, torch.tensor([5, 9, 2])).tolist() == [1, -1, 0]
    assert group_targets(group, torch.zeros(0, dtype=torch.long)).tolist() == []


def test_imb_weights_validate():
    with pytest.raises(ConfigError, match="InfoMax"):
        IMBWeights(infomax="1/N")
    with pytest.raises(ConfigError, match="temperature"):
        IMBWeights(temperature=0)
    with pytest.raises(ConfigError, match="smoothing"):
        IMBWeights(label_smoothing=1.0)
    assert IMBWeights().to_dict()["beta"] == 1e-3


# ---------------------------------------------------------------- the whole objective


def _objective_inputs(seed: int = 0):
    """Two groups: a 3-way head 'shape' and a one-vs-rest pair (classes 1 and 3) of 'digit'."""
    g = torch.Generator().manual_seed(seed)
    b = 4
    head = _task("shape", "shape", (0, 1, 2), HEAD)
    ovr = tuple(_task(str(c), "digit", (c,), ONE_VS_REST) for c in (1, 3))
    groups = [TaskGroup("shape", "shape", (head,)), TaskGroup("digit", "digit", ovr)]
    z_dim = 5

    def brick(n_out):
        return BrickOutputs(torch.randn(b, n_out, generator=g, requires_grad=True),
                            torch.randn(b, n_out, generator=g, requires_grad=True),
                            torch.randn(b, z_dim, generator=g, requires_grad=True))

    bricks = {"shape": brick(3), "1": brick(1), "3": brick(1)}
    stages = [torch.randn(b, 3, generator=g, requires_grad=True), torch.randn(b, z_dim, generator=g, requires_grad=True)]
    teacher_logits = {"shape": torch.randn(b, 3, generator=g), "digit": torch.randn(b, 4, generator=g)}
    teacher_feats = [torch.randn(b, 6, generator=g), torch.randn(b, 7, generator=g), torch.randn(b, 8, generator=g)]
    targets = {"shape": torch.tensor([0, 2, 1, 1]), "digit": torch.tensor([0, -1, 1, 0])}
    return groups, bricks, stages, teacher_logits, teacher_feats, targets


WEIGHTS = IMBWeights(w_task=0.5, l_kd=0.2, temperature=2.0, l_feat=0.7, beta=0.01, label_smoothing=0.1)


def test_objective_returns_loss_and_the_five_terms():
    groups, bricks, stages, t_logits, t_feats, targets = _objective_inputs()
    torch.manual_seed(0)
    objective = IMBObjective(groups, [6, 7, 8], [3, 5], WEIGHTS)
    terms = objective(stages, bricks, t_logits, t_feats, targets)
    assert set(terms) == {"loss", *TERMS}
    assert TERMS == ("loss_cls", "loss_task", "loss_kd", "loss_infomax", "loss_infomin")
    for key, value in terms.items():
        assert value.dim() == 0 and math.isfinite(float(value.detach())), key


def test_objective_loss_is_the_weighted_sum_of_its_terms():
    groups, bricks, stages, t_logits, t_feats, targets = _objective_inputs()
    objective = IMBObjective(groups, [6, 7, 8], [3, 5], WEIGHTS)
    terms = {k: float(v.detach()) for k, v in objective(stages, bricks, t_logits, t_feats, targets).items()}
    w = WEIGHTS
    expected = (terms["loss_cls"] + w.w_task * terms["loss_task"] + w.l_kd * terms["loss_kd"]
                + w.l_feat * terms["loss_infomax"] + w.beta * terms["loss_infomin"])
    assert terms["loss"] == pytest.approx(expected, rel=1e-6)


def test_objective_terms_match_the_single_functions():
    groups, bricks, stages, t_logits, t_feats, targets = _objective_inputs()
    objective = IMBObjective(groups, [6, 7, 8], [3, 5], WEIGHTS)
    objective.eval()  # BatchNorm with running statistics: projector outputs are reproducible
    terms = objective(stages, bricks, t_logits, t_feats, targets)

    ovr_logits = torch.cat([bricks["1"].logits, bricks["3"].logits], dim=1)
    ovr_task = torch.cat([bricks["1"].task_logits, bricks["3"].task_logits], dim=1)
    cls = (smoothed_cross_entropy(bricks["shape"].logits, targets["shape"], 0.1)
           + smoothed_cross_entropy(ovr_logits, targets["digit"], 0.1))
    task = (smoothed_cross_entropy(bricks["shape"].task_logits, targets["shape"], 0.1)
            + smoothed_cross_entropy(ovr_task, targets["digit"], 0.1))
    # the one-vs-rest group distils from the teacher's columns of its own classes only
    kd = (distillation(bricks["shape"].logits, t_logits["shape"], 2.0)
          + distillation(ovr_logits, t_logits["digit"][:, [1, 3]], 2.0))
    # two student stages from three teacher features: teacher features 1 and 2 (relative depth)
    assert objective.teacher_index == [1, 2]
    infomax = torch.stack([infomax_bound(objective.projectors[0](t_feats[1]), stages[0], WEIGHTS.infomax),
                           infomax_bound(objective.projectors[1](t_feats[2]), stages[1], WEIGHTS.infomax)]).mean()
    infomin_sum = sum(batch_gaussian_kl(b.z) for b in bricks.values())
    for key, value in {"loss_cls": cls, "loss_task": task, "loss_kd": kd, "loss_infomax": infomax,
                       "loss_infomin": infomin_sum}.items():
        assert float(terms[key].detach()) == pytest.approx(float(value.detach()), rel=1e-5), key


def test_objective_uses_the_configured_infomax_variant():
    groups, bricks, stages, t_logits, t_feats, targets = _objective_inputs()
    values = {}
    for variant in INFOMAX_VARIANTS:
        torch.manual_seed(0)
        objective = IMBObjective(groups, [6, 7, 8], [3, 5], IMBWeights(infomax=variant)).eval()
        values[variant] = float(objective(stages, bricks, t_logits, t_feats, targets)["loss_infomax"].detach())
    assert values["authors"] != pytest.approx(values["1/B"], rel=1e-4)


def test_gradients_reach_the_projectors_the_stages_and_the_bricks():
    groups, bricks, stages, t_logits, t_feats, targets = _objective_inputs()
    objective = IMBObjective(groups, [6, 7, 8], [3, 5], WEIGHTS)
    objective(stages, bricks, t_logits, t_feats, targets)["loss"].backward()
    for name, p in objective.projectors.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    first_linear = objective.projectors[0][0].weight
    assert float(first_linear.grad.abs().sum()) > 0
    assert float(objective.projectors[1][-1].weight.grad.abs().sum()) > 0
    for i, s in enumerate(stages):
        assert s.grad is not None and float(s.grad.abs().sum()) > 0, i
    for name, b in bricks.items():
        for t in (b.logits, b.task_logits, b.z):
            assert t.grad is not None and float(t.grad.abs().sum()) > 0, name


def test_teacher_features_get_no_gradient_and_projector_shapes_follow_the_stages():
    groups, bricks, stages, t_logits, t_feats, targets = _objective_inputs()
    objective = IMBObjective(groups, [6, 7, 8], [3, 5], WEIGHTS)
    assert [p[0].in_features for p in objective.projectors] == [7, 8]
    assert [p[-1].out_features for p in objective.projectors] == [3, 5]
    assert not any(f.requires_grad for f in t_feats)
    objective(stages, bricks, t_logits, t_feats, targets)["loss"].backward()
    assert all(f.grad is None for f in t_feats)


# ---------------------------------------------------------------- InfoMax health


def test_health_of_matched_and_of_collapsed_features():
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(16, 8, generator=g)
    diagonal, off, self_sim = infomax_health(feats * 3.0, feats).tolist()
    assert diagonal == pytest.approx(1.0, abs=1e-6)
    assert abs(off) < 0.3 and abs(self_sim) < 0.3
    healthy = StageHealth(diagonal, off, self_sim)
    # the collapse the review found: every feature points one way, the projections the other
    same = torch.ones(16, 8) + 0.01 * torch.randn(16, 8, generator=g)
    collapsed = StageHealth(*infomax_health(-same, same).tolist())
    assert collapsed.diagonal < -0.99 and collapsed.off_diagonal < -0.99 and collapsed.self_similarity > 0.99
    assert not infomax_collapsed([healthy, healthy, collapsed])
    assert infomax_collapsed([healthy, collapsed, collapsed]) and infomax_collapsed([collapsed])
    authors = IMBWeights(infomax="authors")
    assert collapse_warning([collapsed], authors, step=100).startswith("Warning: the InfoMax term has collapsed")
    assert "\n" not in collapse_warning([collapsed], authors, step=100)
    assert collapse_warning([collapsed], authors, step=HEALTH_WARMUP_STEPS - 1) is None  # still warming up
    assert collapse_warning([healthy], authors, step=100) is None
    assert collapse_warning([collapsed], IMBWeights(l_feat=0.0), step=100) is None  # the term is off


def test_the_objective_keeps_one_health_row_per_stage():
    groups, bricks, stages, t_logits, t_feats, targets = _objective_inputs()
    objective = IMBObjective(groups, [6, 7, 8], [3, 5], WEIGHTS).eval()
    objective(stages, bricks, t_logits, t_feats, targets)
    assert objective.health.shape == (2, 3) and not objective.health.requires_grad
    expected = infomax_health(objective.projectors[1](t_feats[2]), stages[1])
    assert torch.allclose(objective.health[1], expected)


@pytest.mark.parametrize("variant,collapses", [("authors", True), ("1/B", False)])
def test_the_authors_variant_collapses_on_digits_and_1_over_b_does_not(variant, collapses):
    """One epoch of the digits demo (11 steps; the last report averages steps 9-11) shows it; docs/benchmarks.md has the
    same figures over longer runs, more task kinds and the shapes demo."""
    from kfstudio.core.factorize import FactorizeConfig, iter_factorize

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        config = FactorizeConfig(epochs=1, common_width=0.5, task_width=0.25, device="cpu", num_threads=1,
                                 report_every=4, seed=0, imb=IMBWeights(infomax=variant))
        last = [r for r in iter_factorize(config) if r.kind == "step"][-1]
    finally:
        torch.set_num_threads(before)
    assert last.step >= HEALTH_WARMUP_STEPS and len(last.infomax_health) == 3
    assert infomax_collapsed(last.infomax_health) is collapses
    if collapses:  # the signature from the review: anti-aligned pairs, all features one way
        assert all(h.diagonal < -0.3 for h in last.infomax_health)
        assert max(h.self_similarity for h in last.infomax_health) > 0.9
        assert collapse_warning(last.infomax_health, config.imb, last.step) is not None
    else:
        assert sorted(h.separation for h in last.infomax_health)[1] > 2 * COLLAPSE_SEPARATION


def test_the_default_variant_is_1_over_b_and_the_authors_one_is_labelled():
    assert IMBWeights().infomax == "1/B" and INFOMAX_VARIANTS[0] == "1/B"
    assert "authors' code" in INFOMAX_LABELS["authors"]
