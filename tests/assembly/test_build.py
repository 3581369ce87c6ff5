"""Build: the assembled network equals the factor networks it came from; cost and parity."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from kfstudio.assembly.build import build_from_files, build_network
from kfstudio.assembly.measure import measure_costs, teacher_parity
from kfstudio.assembly.rules import AttachError, DifferentCommonModule, NoCommonModule
from kfstudio.core.measures.cost import count_macs, count_parameters, module_cost
from kfstudio.core.data.sources import load_data, prepare


@pytest.fixture(scope="module")
def digits_x(digits_common):
    return prepare(load_data("builtin:digits").test, digits_common.input_spec).x[:64]


@pytest.mark.parametrize("tasks", [("0", "1", "7"), tuple("0123456789"), ("7",)])
def test_assembled_outputs_equal_the_factor_network(digits_run, digits_common, digits_bricks, digits_x, tasks):
    factor = digits_run[0].network.cpu().eval()
    net = build_from_files(digits_common, [digits_bricks[t] for t in tasks])
    with torch.no_grad():
        want, got = factor(digits_x), net(digits_x)
    for t in tasks:
        assert (want[t] - got[t]).abs().max() <= 1e-5
    stacked = torch.cat([want[t] for t in tasks], dim=1)
    classes = torch.tensor([int(t) for t in tasks])
    if len(tasks) < 10:
        # A subset of calibrated bricks: margins above each threshold, and "none of these" (-1) at 0.
        margins = stacked - torch.tensor([[digits_bricks[t].detector["threshold"] for t in tasks]])
        stacked, classes = torch.cat([margins, torch.zeros(len(margins), 1)], 1), torch.cat([classes, torch.tensor([-1])])
    assert torch.equal(got["digit_prediction"], classes[stacked.argmax(1)])
    assert net.output_names == [*tasks, "digit_prediction"]


def test_the_assembly_runs_fused_and_matches_its_bricks_one_by_one(digits_common, digits_bricks, digits_x):
    net = build_from_files(digits_common, [digits_bricks[str(d)] for d in range(10)])
    assert net.fused and len(net.fused_runner.groups) == 1
    with torch.no_grad():
        fused, unfused = net(digits_x), net.forward_unfused(digits_x)
        assert max(float((fused[t] - unfused[t]).abs().max()) for t in "0123456789") <= 1e-5
        assert torch.equal(fused["digit_prediction"], unfused["digit_prediction"])
        # The frozen weights are no state and no parameters: the bricks' own files are what is saved.
        assert all(k.split(".")[0] in {"common", "bricks"} for k in net.state_dict())
        assert count_parameters(net) == count_parameters(net.common) + sum(count_parameters(b) for b in net.bricks.values())
        x = digits_x[:1]
        assert count_macs(lambda: net(x), net) == count_macs(lambda: net.forward_unfused(x), net) > 0
        # Changing a brick's weights takes effect in the fused form once it is refreshed.
        brick = net.bricks[net._keys[3][1]]
        brick.head.bias.add_(1.0)
        assert (net(digits_x)["3"] - unfused["3"]).abs().max() < 1e-5
        net.refresh_fused()
        assert (net(digits_x)["3"] - unfused["3"] - 1.0).abs().max() < 1e-5
        net.fused = False
        assert torch.equal(net(digits_x)["3"], net.forward_unfused(digits_x)["3"])


def test_build_network_follows_the_canvas(graph, digits_bricks):
    for t in ("7", "0", "3"):
        graph.add_brick(digits_bricks[t], (1, 2))
    graph.attach("brick:0")
    graph.attach("brick:7")
    graph.rename("brick:7", "seven")
    net = build_network(graph)
    assert [t.name for t in net.tasks] == ["7", "0"]
    assert [b.title for b in net.provenance.bricks] == ["seven", "digit 0"]
    assert net.common is not graph.common.module  # copies: exporting never touches the canvas


def test_nothing_to_build_is_explained(graph, digits_common, digits_bricks, shapes_brick):
    with pytest.raises(AttachError, match="No brick is attached"):
        build_network(graph)
    graph.set_common(None)
    with pytest.raises(NoCommonModule):
        build_network(graph)
    with pytest.raises(DifferentCommonModule):
        build_from_files(digits_common, [digits_bricks["0"], shapes_brick])


def test_macs_of_conv_and_linear_are_counted_exactly():
    toy = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.Flatten(), nn.Linear(4 * 5 * 5, 3))
    x = torch.zeros(2, 2, 5, 5)
    assert count_macs(lambda: toy(x), toy) == 4 * 25 * 2 * 9 + 100 * 3
    cost = module_cost(toy, lambda: toy(x[:1]), torch.device("cpu"))
    assert cost.parameters == count_parameters(toy) and cost.latency_ms > 0


def test_costs_add_up_and_the_teacher_is_measured(digits_common, digits_bricks):
    from kfstudio.core.teachers.loaders import load_teacher

    net = build_from_files(digits_common, [digits_bricks[t] for t in "017"])
    report = measure_costs(net, torch.device("cpu"), load_teacher("builtin:digits"))
    parts = [report.common] + list(report.bricks.values())
    assert report.network.parameters == sum(p.parameters for p in parts) == count_parameters(net)
    assert report.network.macs == sum(p.macs for p in parts) > 0
    assert report.teacher.parameters == 288_170 and report.teacher.macs > report.common.macs
    assert set(report.bricks) == {"0", "1", "7"} and report.to_dict()["device"] == "cpu"
    assert report.fused and report.fused_groups == 1 and report.unfused_latency_ms > 0
    assert report.network.latency_ms > 0 and report.to_dict()["fused"] is True


def test_teacher_parity_scores_the_attached_classes(digits_common, digits_bricks):
    from kfstudio.core.teachers.loaders import load_teacher

    net = build_from_files(digits_common, [digits_bricks[t] for t in "017"])
    parity = teacher_parity(net, load_teacher("builtin:digits"), load_data("builtin:digits").test)
    group = parity.groups["digit"]
    # Calibrated 0/1/7 bricks answer "none of these": scored on every image, the other digits included.
    assert group.samples == 360 and group.agreement > 0.5 and group.accuracy is not None
    assert group.rest_accuracy >= 0.7 and 0.5 < parity.tasks["7"].auc <= 1
    assert set(parity.tasks) == {"0", "1", "7"} and parity.with_teacher
