"""What a network costs, counted against hand arithmetic, and latency timed on a scripted clock
(so the rules "best of the round medians", warm-up and the time budget are checked exactly)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kfstudio.core.measures import cost as cost_module
from kfstudio.core.measures.cost import Cost, count_macs, count_parameters, measure_latency, module_cost

CPU = torch.device("cpu")


def test_parameters_are_every_weight_and_bias():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Linear(5, 2, bias=False))
    assert count_parameters(net) == (3 * 4 * 9 + 4) + 5 * 2


def test_macs_are_per_input_whatever_the_batch():
    net = nn.Sequential(nn.Conv2d(4, 6, 3, groups=2), nn.Flatten(), nn.Linear(6 * 3 * 3, 7))
    one, four = torch.zeros(1, 4, 5, 5), torch.zeros(4, 4, 5, 5)
    expected = 6 * 3 * 3 * (4 // 2) * 9 + 7 * 54     # conv outputs x (in/groups x kernel) + linear
    assert count_macs(lambda: net(one), net) == expected
    assert count_macs(lambda: net(four), net) == expected
    assert type(count_macs(lambda: net(four), net)) is int     # a whole count, shown with thousands separators


def test_macs_of_a_1d_convolution_use_its_kernel_length():
    conv = nn.Conv1d(2, 3, 4)
    assert count_macs(lambda: conv(torch.zeros(1, 2, 10)), conv) == 3 * 7 * 2 * 4


def test_layers_outside_the_module_are_not_counted_and_hooks_are_removed():
    inner, outer = nn.Linear(3, 2), nn.Linear(2, 5)
    x = torch.zeros(1, 3)
    assert count_macs(lambda: outer(inner(x)), inner) == 6
    assert not inner._forward_hooks and not outer._forward_hooks


class _Fused(nn.Module):
    """Stands in for a fused runner: no conv or linear layer runs while ``fused`` is True."""

    def __init__(self):
        super().__init__()
        self.fused = True
        self.layer = nn.Linear(4, 3)
        self.seen: list[bool] = []

    def forward(self, x):
        self.seen.append(self.fused)
        return x[:, :3] if self.fused else self.layer(x)


def test_fused_networks_are_counted_brick_by_brick_and_left_fused():
    net = _Fused()
    assert count_macs(lambda: net(torch.zeros(1, 4)), net) == 12
    assert net.seen == [False] and net.fused is True


def test_fused_flag_and_hooks_are_restored_when_the_run_fails():
    net = _Fused()

    def broken():
        net(torch.zeros(1, 4))
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        count_macs(broken, net)
    assert net.fused is True and not net.layer._forward_hooks


class _Clock:
    """perf_counter that advances by a script: each run() takes the next duration (seconds)."""

    def __init__(self, durations):
        self.now = 64.0     # not zero, so that an elapsed time is a difference
        self.durations = list(durations)
        self.runs = 0

    def perf_counter(self):
        return self.now

    def run(self):
        self.runs += 1
        self.now += self.durations.pop(0) if self.durations else 0.001


@pytest.fixture
def clock(monkeypatch):
    def make(durations):
        c = _Clock(durations)
        monkeypatch.setattr(cost_module.time, "perf_counter", c.perf_counter)
        return c
    return make


def test_latency_is_the_best_round_median_after_warmup(clock):
    # 2 warm-up runs (not timed), then 3 rounds of 3 runs: medians 5 ms, 2 ms, 9 ms
    c = clock([1.0, 1.0, 0.004, 0.005, 0.006, 0.001, 0.002, 0.003, 0.009, 0.009, 0.009])
    ms = measure_latency(c.run, CPU, warmup=2, repeats=3, rounds=3, budget_s=10)
    assert ms == pytest.approx(2.0)
    assert c.runs == 11


def test_a_round_stops_at_its_budget_but_never_before_three_runs(clock):
    c = clock([0.5] * 20)     # each run alone spends more than the budget
    assert measure_latency(c.run, CPU, warmup=0, repeats=10, rounds=1, budget_s=0.1) == pytest.approx(500.0)
    assert c.runs == 3


def test_a_round_stops_once_its_budget_is_spent_exactly(clock):
    c = clock([0.25] * 20)     # exact in binary: after 3 runs 0.75 s are spent, the whole budget
    measure_latency(c.run, CPU, warmup=0, repeats=10, rounds=1, budget_s=0.75)
    assert c.runs == 3


def test_a_round_takes_all_its_repeats_within_budget(clock):
    c = clock([0.001] * 20)
    measure_latency(c.run, CPU, warmup=1, repeats=7, rounds=2, budget_s=1.0)
    assert c.runs == 1 + 7 * 2


def test_latency_on_the_cpu_runs_on_one_thread_and_restores_the_count():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    seen = []
    try:
        measure_latency(lambda: seen.append(torch.get_num_threads()), CPU, warmup=1, repeats=3, rounds=1)
        assert set(seen) == {1}
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("kind,waits_for", [("cuda", (torch.device("cuda"),)), ("mps", ())])
def test_timing_on_an_accelerator_waits_for_it(monkeypatch, kind, waits_for):
    calls = []
    monkeypatch.setattr(getattr(torch, kind), "synchronize", lambda *args: calls.append(args))
    cost_module._sync(torch.device(kind))
    assert calls == [waits_for]
    cost_module._sync(CPU)
    assert calls == [waits_for]


def test_module_cost_counts_what_run_exercises():
    net = nn.Linear(4, 3)
    x = torch.zeros(1, 4)
    cost = module_cost(net, lambda: net(x), CPU, latency=False)
    assert cost == Cost(15, 12, None)
    assert cost.to_dict() == {"parameters": 15, "macs": 12, "latency_ms": None}
    timed = module_cost(None, lambda: net(x), CPU)
    assert timed.parameters is None and timed.macs is None and timed.latency_ms > 0
