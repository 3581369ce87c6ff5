"""Subset networks that can say "none of these": bricks calibrated as detectors after a run, and
assemblies of some of them answering "none of these" for the classes they do not hold."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from kfstudio.assembly.build import build_from_files
from kfstudio.assembly.measure import evaluate_tasks
from kfstudio.core.calibration import calibration_size
from kfstudio.core.data.sources import load_data, prepare
from kfstudio.core.measures.detection import balanced_accuracy, roc_auc
from kfstudio.io.bricks import list_bricks, load_brick
from kfstudio.io.bundle import load_bundle_network
from kfstudio.io.export import export_network, load_exported

SUBSET = (0, 1, 7)


@pytest.fixture(scope="module")
def test_split():
    return load_data("builtin:digits").test


@pytest.fixture(scope="module")
def subset(digits_common, digits_bricks):
    return build_from_files(digits_common, [digits_bricks[str(d)] for d in SUBSET])


@pytest.fixture(scope="module")
def onnx_subset(subset, tmp_path_factory):
    return export_network(subset, tmp_path_factory.mktemp("none") / "017.onnx").path


def test_every_brick_is_calibrated_on_held_out_training_images(digits_run):
    result, folder = digits_run
    train = load_data("builtin:digits").train
    held_out = calibration_size(len(train), result.config.calibration_fraction)
    assert held_out > 0
    for path in list_bricks(folder):
        detector = json.loads(path.with_suffix(".json").read_text())["detector"]
        assert detector["calibration_images"] == held_out and detector["source_classes"] == 10
        assert detector["test_images"] == len(load_data("builtin:digits").test)
        assert 0.5 < detector["auc"] <= 1 and 0.5 < detector["accuracy"] <= 1
    assert set(result.detectors) == {str(d) for d in range(10)}


def test_the_recorded_detector_figures_are_the_test_split_s(digits_bricks, digits_common, test_split):
    """The AUC and accuracy a brick records are its own logit's, at its own threshold, on the test images."""
    ten = build_from_files(digits_common, [digits_bricks[str(d)] for d in range(10)])
    x = prepare(test_split, ten.input_spec).x
    with torch.no_grad():
        logits = ten.task_logits(x)
    y = test_split.labels["digit"]
    for name, brick in digits_bricks.items():
        d = brick.detector
        score, is_k = logits[name][:, 0], y == int(name)
        assert roc_auc(score, is_k) == pytest.approx(d["auc"], abs=1e-6)
        assert balanced_accuracy(score, is_k, d["threshold"]) == pytest.approx(d["accuracy"], abs=0.01)
    evaluation = evaluate_tasks(ten.tasks, ten.task_logits, test_split, ten.input_spec, thresholds=ten.thresholds)
    assert evaluation.tasks["7"].auc == pytest.approx(digits_bricks["7"].detector["auc"], abs=1e-6)


def test_the_exported_subset_answers_none_of_these_for_other_digits(onnx_subset, test_split):
    exported = load_exported(onnx_subset)
    x = prepare(test_split, exported.input_spec).x
    pred = exported.outputs(x)["digit_prediction"]
    y = test_split.labels["digit"]
    inside = torch.isin(y, torch.tensor(SUBSET))
    # Measured on the session run: 87 % of the other digits get "none of these", 96 % of 0/1/7 are right.
    assert float((pred[~inside] == -1).float().mean()) >= 0.70
    assert float((pred[inside] == y[inside]).float().mean()) >= 0.85
    entry = exported.manifest["outputs"][-1]
    assert entry["classes"] == [*SUBSET, -1] and entry["class_names"][-1] == "none of these"
    assert "none of these" in entry["meaning"] and "calibrated detector fired" in entry["meaning"]
    assert set(exported.thresholds) == {str(d) for d in SUBSET}
    assert all(t["rest"] for t in exported.manifest["tasks"])


def test_evaluating_the_export_scores_none_of_these(onnx_subset, test_split, subset):
    exported = load_exported(onnx_subset)
    evaluation = evaluate_tasks(exported.tasks, exported.task_logits, test_split, exported.input_spec,
                                thresholds=exported.thresholds)
    group = evaluation.groups["digit"]
    assert group.rest_accuracy >= 0.70 and group.samples == len(test_split)
    # The figure is the network's own prediction output, not a re-derivation that could drift from it.
    x = prepare(test_split, exported.input_spec).x
    pred = exported.outputs(x)["digit_prediction"]
    y = test_split.labels["digit"]
    outcome = torch.where(torch.isin(y, torch.tensor(SUBSET)), y, torch.full_like(y, -1))
    assert group.accuracy == pytest.approx(float((pred == outcome).float().mean()))


def test_the_bundle_keeps_the_thresholds(subset, tmp_path):
    path = export_network(subset, tmp_path / "017.safetensors").path
    rebuilt = load_bundle_network(path)
    assert rebuilt.thresholds == subset.thresholds and [t.rest for t in rebuilt.tasks] == [True] * 3


def test_all_ten_bricks_still_choose_among_their_classes(digits_common, digits_bricks):
    ten = build_from_files(digits_common, [digits_bricks[str(d)] for d in range(10)])
    assert not any(t.rest for t in ten.tasks)
    with torch.no_grad():
        assert bool((ten(ten.example_input(8))["digit_prediction"] >= 0).all())


def test_old_bricks_without_calibration_still_assemble(digits_run, tmp_path):
    folder = tmp_path / "old"
    shutil.copytree(digits_run[1], folder)
    for path in list_bricks(folder):
        manifest_path = path.with_suffix(".json")
        manifest = json.loads(manifest_path.read_text())
        del manifest["detector"]
        manifest_path.write_text(json.dumps(manifest))
    from kfstudio.io.bricks import load_common

    bricks = [load_brick(folder / "bricks" / f"{d}.safetensors") for d in SUBSET]
    assert all(b.detector is None for b in bricks)
    old = build_from_files(load_common(folder / "common.safetensors"), bricks)
    assert old.thresholds == {} and not any(t.rest for t in old.tasks)
    test_split = load_data("builtin:digits").test
    with torch.no_grad():
        pred = old(prepare(test_split, old.input_spec).x)["digit_prediction"]
    assert set(pred.tolist()) <= set(SUBSET)  # as before: every image is a 0, a 1 or a 7
    export_network(old, tmp_path / "old.safetensors")  # and exports, self-test included
