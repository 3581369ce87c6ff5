"""Latency against the teacher compares like with like: same runtime, same form, timed in turns."""

from __future__ import annotations

import torch
from torch import nn

from kfstudio.assembly.build import build_from_files
from kfstudio.assembly.measure import compare_latency, inference_form, measure_costs
from kfstudio.core.measures.cost import measure_latencies
from kfstudio.core.teachers.loaders import load_teacher


def test_the_teacher_is_timed_folded_and_channels_last_like_the_fused_network():
    teacher = load_teacher("builtin:digits")
    assert any(isinstance(m, nn.BatchNorm2d) for m in teacher.module.modules())
    timed, folded = inference_form(teacher.module)
    assert folded and not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in timed.modules())
    x = torch.randn(5, *teacher.input_spec.shape)
    with torch.no_grad():
        torch.testing.assert_close(timed(x), teacher.module(x), atol=1e-5, rtol=1e-5)
    assert teacher.features(x)   # the teacher's own hooks still tap its features: the copy is separate


def test_a_teacher_fx_cannot_trace_is_timed_as_it_is():
    class Branchy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv, self.bn = nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)

        def forward(self, x):
            if x.sum() > 0:   # data-dependent control flow: torch.fx cannot trace it
                x = -x
            return self.bn(self.conv(x)).mean((2, 3))

    timed, folded = inference_form(Branchy().eval())
    assert not folded and timed(torch.randn(2, 1, 8, 8)).shape == (2, 2)


def test_measure_costs_says_in_which_form_both_were_timed(digits_common, digits_bricks):
    network = build_from_files(digits_common, [digits_bricks["0"], digits_bricks["1"]])
    costs = measure_costs(network, torch.device("cpu"), load_teacher("builtin:digits"))
    assert costs.latency_form == "both BatchNorm folded, channels_last"
    assert costs.network.latency_ms > 0 and costs.teacher.latency_ms > 0
    assert measure_costs(network, torch.device("cpu")).latency_form.startswith("network fused")


def test_runs_are_timed_in_turns():
    calls: list[str] = []
    runs = {name: (lambda n=name: calls.append(n)) for name in ("a", "b")}
    measure_latencies(runs, torch.device("cpu"), warmup=1, repeats=3, rounds=2, budget_s=10.0)
    assert calls == ["a", "b"] + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3


def test_a_run_that_fails_at_a_batch_size_has_no_figure_there():
    def fixed_batch_one(x):
        if x.shape[0] != 1:
            raise RuntimeError("exported for batch 1")
        return x

    result = compare_latency({"network": lambda x: x * 2, "teacher": fixed_batch_one}, (1, 4, 4), "eager torch",
                             "as given", batches=(1, 8), repeats=3, rounds=1)
    assert set(result.ms["network"]) == {1, 8} and set(result.ms["teacher"]) == {1}
    assert result.ratio(8) is None and result.ratio(1) > 0
    text = result.describe()
    assert text.startswith("latency vs teacher, both in eager torch (as given), 1 thread: batch 1: ")
    assert "batch 8: " in text and f"({result.ratio(1):.0%})" in text
