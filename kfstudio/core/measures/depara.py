"""DEPARA: how related two networks' knowledge is (Song et al., CVPR 2020).

For a network at a layer and a fixed, seeded probe set of N inputs, the attribution graph
has one node per input, carrying its attribution map (gradient x input of the layer's mean
output), and one edge per pair of inputs, weighted by the cosine similarity of their
features at that layer. Two graphs on the same probes compare by

    S = mean_i cos(a1_i, a2_i) + lambda * spearman(edges1, edges2)

Higher means more transferable; two identical networks score the maximum, 1 + lambda.
A "layer" here is any function from inputs to features, so the same code serves a
teacher's tapped layer, a common-module stage and a brick's task logits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import torch
from torch import nn
from torch.nn import functional as F

from kfstudio.core.errors import ConfigError, TeacherError
from kfstudio.core.students.networks import CommonModule, TaskBrick
from kfstudio.core.teachers.loaders import Teacher

DEFAULT_LAMBDA = 0.1  # the paper uses 0.03-0.27 depending on the probe set
DEFAULT_PROBES = 64

Layer = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class AttributionGraph:
    """One network's graph on a probe set: attributions (N, D) and edge weights (N(N-1)/2,)."""

    attributions: torch.Tensor
    edges: torch.Tensor


def probe_set(x: torch.Tensor, n: int = DEFAULT_PROBES, seed: int = 0) -> torch.Tensor:
    """``n`` inputs of ``x`` drawn with a fixed seed, in their original order."""
    if n < 3:
        raise ConfigError("DEPARA needs at least 3 probe inputs (the edges are ranked).")
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[order.sort().values]


def attribution_graph(layer: Layer, probes: torch.Tensor, batch: int = 128) -> AttributionGraph:
    """The attribution graph of ``layer`` on ``probes`` (networks must be in eval mode, so that
    each input's gradient depends on that input alone)."""
    attributions, features = [], []
    for chunk in probes.split(batch):
        x = chunk.detach().clone().float().requires_grad_(True)  # a fresh input: its gradient starts at zero
        with torch.enable_grad():
            out = layer(x)
            grad, = torch.autograd.grad(out.flatten(1).mean(dim=1).sum(), x)
        attributions.append((grad * x).detach().flatten(1))
        features.append(out.detach().float().flatten(1))
    feats = F.normalize(torch.cat(features), dim=1)
    n = len(feats)
    rows, cols = torch.triu_indices(n, n, offset=1)
    return AttributionGraph(torch.cat(attributions), (feats @ feats.t())[rows, cols])


def _ranks(v: torch.Tensor) -> torch.Tensor:
    """Ranks with ties given their average rank (as Spearman's coefficient needs)."""
    v = v.double()
    order = torch.argsort(v)
    ranks = torch.empty_like(v)
    ranks[order] = torch.arange(len(v), dtype=torch.float64)
    unique, inverse = torch.unique(v, return_inverse=True)
    if len(unique) < len(v):
        sums = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, ranks)
        counts = torch.zeros(len(unique), dtype=torch.float64).index_add_(0, inverse, torch.ones_like(ranks))
        ranks = (sums / counts)[inverse]
    return ranks


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation of two equal-length vectors (0 when either is constant)."""
    if a.shape != b.shape or a.numel() < 2:
        raise ConfigError("Spearman's correlation needs two vectors of the same length (at least 2).")
    ra, rb = _ranks(a.flatten()), _ranks(b.flatten())
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denominator = math.sqrt(float((ra * ra).sum()) * float((rb * rb).sum()))
    return 0.0 if denominator == 0 else float((ra * rb).sum()) / denominator


def similarity(g1: AttributionGraph, g2: AttributionGraph, lam: float = DEFAULT_LAMBDA) -> float:
    """DEPARA's S: node (attribution) similarity plus ``lam`` times edge (rank) similarity."""
    if g1.attributions.shape != g2.attributions.shape:
        raise ConfigError("The two graphs were not built on the same probe inputs.")
    return node_similarity(g1, g2) + lam * edge_similarity(g1, g2)


def node_similarity(g1: AttributionGraph, g2: AttributionGraph) -> float:
    return float(F.cosine_similarity(g1.attributions.double(), g2.attributions.double(), dim=1, eps=1e-12).mean())


def edge_similarity(g1: AttributionGraph, g2: AttributionGraph) -> float:
    return spearman(g1.edges, g2.edges)


@dataclass(frozen=True)
class Relatedness:
    """A symmetric matrix of S between named graphs, with its two parts."""

    names: tuple[str, ...]
    score: tuple[tuple[float, ...], ...]
    nodes: tuple[tuple[float, ...], ...]
    edges: tuple[tuple[float, ...], ...]
    lam: float

    def to_dict(self) -> dict:
        return {"names": list(self.names), "lambda": self.lam, "score": [list(r) for r in self.score],
                "attribution": [list(r) for r in self.nodes], "edges": [list(r) for r in self.edges]}


def relatedness(graphs: Mapping[str, AttributionGraph], lam: float = DEFAULT_LAMBDA) -> Relatedness:
    """S for every pair of graphs (each pair computed once, so the matrix is exactly symmetric)."""
    names = list(graphs)
    n = len(names)
    nodes = [[0.0] * n for _ in range(n)]
    edges = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i, n):
            a, b = graphs[names[i]], graphs[names[j]]
            nodes[i][j] = nodes[j][i] = node_similarity(a, b)
            edges[i][j] = edges[j][i] = edge_similarity(a, b)
    score = [[nodes[i][j] + lam * edges[i][j] for j in range(n)] for i in range(n)]
    as_tuple = lambda m: tuple(tuple(round(v, 6) for v in row) for row in m)  # noqa: E731
    return Relatedness(tuple(names), as_tuple(score), as_tuple(nodes), as_tuple(edges), lam)


# ---------------------------------------------------------------- layers of KF Studio's networks

def brick_layer(brick: TaskBrick, common: CommonModule) -> Layer:
    """A brick's task logits on the common feature: what the brick answers, input by input.

    (The brick's own ``z_k`` alone was tried first: its mean has no meaning shared between
    bricks, and a regrown "7" brick did not come out nearest the run's own "7"; on the
    logits it does.)"""
    brick.eval()
    common.eval()
    return lambda x: common.encode(x).run(brick)


def common_layer(common: CommonModule, stage: int = -1) -> Layer:
    """A stage of the common module (the last one is the common feature map behind z_c)."""
    common.eval()
    return lambda x: common.backbone(x)[stage]


def module_layer(module: nn.Module, name: str) -> Layer:
    """The output of the submodule ``name`` of ``module`` (a forward hook catches it)."""
    modules = dict(module.named_modules())
    if name not in modules:
        raise TeacherError(f"The network has no layer '{name}'.")
    module.eval()

    def run(x: torch.Tensor) -> torch.Tensor:
        caught: list[torch.Tensor] = []
        handle = modules[name].register_forward_hook(lambda _m, _i, out: caught.append(out))
        try:
            module(x)
        finally:
            handle.remove()
        if not caught or not isinstance(caught[0], torch.Tensor):
            raise TeacherError(f"The layer '{name}' gives no tensor to read.")
        return caught[0]

    return run


def teacher_taps(teacher: Teacher) -> list[str]:
    """The teacher layers that InfoMax reads (the tapped layers), when the teacher is a torch module."""
    return list(getattr(teacher.run, "taps", []) or [])


def teacher_layer(teacher: Teacher, tap: str | None = None) -> Layer:
    """A torch teacher's tapped layer (default: the deepest tap). Other formats give no gradients."""
    taps = teacher_taps(teacher)
    if teacher.module is None or not taps:
        raise TeacherError(f"DEPARA needs gradients through the teacher's layers; {teacher.name} is not a torch "
                           "module with tapped layers (ONNX, TorchScript and .pt2 teachers are not).")
    return module_layer(teacher.module, tap or taps[-1])


def graphs_of(layers: Mapping[str, Layer], probes: torch.Tensor) -> dict[str, AttributionGraph]:
    return {name: attribution_graph(layer, probes) for name, layer in layers.items()}


def layer_ranking(scores: Sequence[float]) -> list[int]:
    """Positions of ``scores`` from best to worst."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


@torch.no_grad()
def pooled_features(layer: Layer, x: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """A layer's features for ``x``, spatially averaged (for a linear probe)."""
    outs = []
    for chunk in x.split(batch):
        out = layer(chunk).float()
        outs.append(out.flatten(2).mean(dim=2) if out.dim() > 2 else out.flatten(1))
    return torch.cat(outs)


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                 seed: int = 0) -> float:
    """Test accuracy of a logistic regression on frozen features: how linearly readable a task is."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    if len(torch.unique(train_y)) < 2:
        raise ConfigError("A linear probe needs training labels of at least two classes.")
    scaler = StandardScaler().fit(train_x.numpy())
    model = LogisticRegression(max_iter=2000, random_state=seed)
    model.fit(scaler.transform(train_x.numpy()), train_y.numpy())
    return float((model.predict(scaler.transform(test_x.numpy())) == test_y.numpy()).mean())
