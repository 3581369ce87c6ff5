"""DEPARA on small hand-made networks: the score's order, symmetry, determinism and parts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kfstudio.core.measures.depara import (
    DEFAULT_LAMBDA,
    attribution_graph,
    brick_layer,
    common_layer,
    graphs_of,
    linear_probe,
    module_layer,
    pooled_features,
    probe_set,
    relatedness,
    similarity,
    spearman,
    teacher_layer,
)
from kfstudio.core.errors import ConfigError, TeacherError


def _data(n=256, seed=0):
    """8 inputs; the label is whether the first two agree in sign (a task on inputs 0 and 1 only)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 8, generator=g)
    return x, ((x[:, 0] * x[:, 1]) > 0).long()


def _mlp(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 2))


def _trained(x, y, seed, steps=120):
    net = _mlp(seed)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    return net.eval()


@pytest.fixture(scope="module")
def nets():
    x, y = _data()
    permuted = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(9))]
    return {
        "a": _trained(x, y, seed=1),
        "a_again": _trained(x, y, seed=2),  # the same task, another initialisation
        "permuted": _trained(x, permuted, seed=3),  # the same network trained on shuffled labels
    }


def _hidden(net):
    return module_layer(net, "1")  # the hidden ReLU layer


def test_identical_networks_score_the_maximum_and_a_permuted_label_copy_scores_lower(nets):
    probes = probe_set(_data(seed=5)[0], 64, seed=0)
    g = graphs_of({k: _hidden(v) for k, v in nets.items()}, probes)
    same = similarity(g["a"], g["a"])
    assert same == pytest.approx(1 + DEFAULT_LAMBDA, abs=1e-6)
    related, unrelated = similarity(g["a"], g["a_again"]), similarity(g["a"], g["permuted"])
    assert same > related > unrelated


def test_the_score_is_symmetric_and_deterministic(nets):
    x = _data(seed=5)[0]
    g1 = attribution_graph(_hidden(nets["a"]), probe_set(x, 48, seed=3))
    g2 = attribution_graph(_hidden(nets["permuted"]), probe_set(x, 48, seed=3))
    assert similarity(g1, g2) == similarity(g2, g1)
    again = attribution_graph(_hidden(nets["a"]), probe_set(x, 48, seed=3))
    assert torch.equal(g1.attributions, again.attributions) and torch.equal(g1.edges, again.edges)
    other_probes = attribution_graph(_hidden(nets["a"]), probe_set(x, 48, seed=4))
    assert not torch.equal(g1.edges, other_probes.edges)
    m = relatedness({"a": g1, "p": g2})
    assert m.score[0][1] == m.score[1][0] and m.score[0][0] == pytest.approx(1 + DEFAULT_LAMBDA, abs=1e-5)


def test_attribution_is_gradient_times_input_of_the_layer_mean():
    layer = nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 2.0, 0.0], [3.0, 0.0, -4.0]]))
    x = torch.tensor([[1.0, 1.0, 1.0], [2.0, 0.0, 1.0], [0.5, -1.0, 3.0]])
    g = attribution_graph(layer, x, batch=2)  # batches must not mix inputs' gradients
    expected = torch.tensor([2.0, 1.0, -2.0]) * x  # d mean(Wx) / dx = column means of W
    assert torch.allclose(g.attributions, expected)
    feats = nn.functional.normalize(layer(x).detach(), dim=1)
    assert torch.allclose(g.edges, torch.stack([feats[0] @ feats[1], feats[0] @ feats[2], feats[1] @ feats[2]]))


def test_spearman_handles_ties_and_refuses_bad_input():
    assert spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0, 20.0, 30.0])) == pytest.approx(1.0)
    assert spearman(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([3.0, 2.0, 1.0])) == pytest.approx(-1.0)
    assert spearman(torch.tensor([1.0, 1.0, 2.0]), torch.tensor([5.0, 5.0, 9.0])) == pytest.approx(1.0)
    assert spearman(torch.ones(4), torch.arange(4.0)) == 0.0
    with pytest.raises(ConfigError):
        spearman(torch.ones(3), torch.ones(4))
    with pytest.raises(ConfigError):
        probe_set(torch.zeros(10, 2), 2)


def test_layers_of_a_real_run_and_teacher(digits_common, digits_bricks):
    from kfstudio.core.data.sources import load_data, prepare
    from kfstudio.core.teachers.loaders import load_teacher

    teacher = load_teacher("builtin:digits")
    x = prepare(load_data("builtin:digits").test, teacher.input_spec).x
    probes = probe_set(x, 32)
    layers = {"teacher": teacher_layer(teacher), "common": common_layer(digits_common.module),
              "3": brick_layer(digits_bricks["3"].module, digits_common.module),
              "8": brick_layer(digits_bricks["8"].module, digits_common.module)}
    graphs = graphs_of(layers, probes)
    assert all(g.attributions.shape == (32, 64) for g in graphs.values())
    m = relatedness(graphs)
    assert all(m.score[i][i] == pytest.approx(1 + DEFAULT_LAMBDA, abs=1e-5) for i in range(4))
    assert all(m.score[i][j] < 1 + DEFAULT_LAMBDA - 1e-4 for i in range(4) for j in range(4) if i != j)
    assert pooled_features(layers["common"], x[:10]).shape == (10, digits_common.module.z_dim)
    onnx_like = type(teacher)(**{**teacher.__dict__, "module": None})
    with pytest.raises(TeacherError, match="gradients"):
        teacher_layer(onnx_like)


def test_linear_probe_reads_a_linear_task_and_not_noise():
    x, _ = _data(400)
    y = (x[:, 3] > 0).long()
    assert linear_probe(x[:300], y[:300], x[300:], y[300:]) > 0.9
    noise = torch.randint(0, 2, (400,), generator=torch.Generator().manual_seed(1))
    assert linear_probe(x[:300], noise[:300], x[300:], noise[300:]) < 0.7
