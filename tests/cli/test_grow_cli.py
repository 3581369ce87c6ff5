"""``kfstudio add-brick`` and ``kfstudio relate`` in-process, on copies of the session's real runs."""

from __future__ import annotations

import contextlib
import io
import json
import shutil

import numpy as np
import pytest

from kfstudio.cli.app import main
from kfstudio.core.data.sources import load_digits_dataset, prepare
from kfstudio.core.data.shapes import make_shapes
from kfstudio.io.bricks import list_bricks, load_brick, load_common

FAST = ["--epochs", "1", "--batch-size", "128", "--threads", "1", "--device", "cpu", "--quiet"]


def _run(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def shapes_copy(shapes_run, tmp_path):
    out = tmp_path / "shapes"
    shutil.copytree(shapes_run[1], out, ignore=shutil.ignore_patterns("checkpoint.pt"))
    return out


def _npz(path, ds, spec, label):
    x = prepare(ds, spec).x.numpy()
    np.savez(path, x=x, y=ds.labels[label].numpy(), class_names=np.array(ds.class_names[label]))
    return path


def test_add_brick_on_the_digits_demo_leaves_the_common_module_as_it_was(digits_copy):
    common_bytes = (digits_copy / "common.safetensors").read_bytes()
    common_json = (digits_copy / "common.json").read_bytes()
    code, out, err = _run("add-brick", digits_copy, "--data", "builtin:digits", "--task", "small=0,1,2", *FAST)
    assert code == 0, err
    assert "small (group): test accuracy" in out and "common module is unchanged" in out
    assert (digits_copy / "common.safetensors").read_bytes() == common_bytes
    assert (digits_copy / "common.json").read_bytes() == common_json
    brick = load_brick(digits_copy / "bricks" / "small.safetensors")
    assert brick.common_fingerprint == load_common(digits_copy / "common.safetensors").fingerprint
    assert brick.manifest["grown"]["data"] == "builtin:digits" and brick.manifest["metrics"]["samples"] > 0
    assert list_bricks(digits_copy)[-1].stem == "small"  # listed after the run's own bricks
    code, out, _ = _run("evaluate", digits_copy, "--data", "builtin:digits")
    assert code == 0 and "small" in out


def test_add_brick_one_vs_rest_from_an_npz_with_a_teacher(digits_copy, tmp_path):
    spec = load_common(digits_copy / "common.safetensors").input_spec
    data = _npz(tmp_path / "digits.npz", load_digits_dataset().subset(list(range(600))), spec, "digit")
    code, out, err = _run("add-brick", digits_copy, "--data", data, "--task", "seven=7", "--teacher", "builtin:digits",
                          *FAST)
    assert code == 0, err
    assert "Distilling from" in out and "one-vs-rest" in out
    manifest = json.loads((digits_copy / "bricks" / "seven.json").read_text())
    assert manifest["task"]["kind"] == "one-vs-rest" and manifest["grown"]["distilled_from"]["ref"] == "builtin:digits"
    assert manifest["teacher_metrics"]["accuracy"] > 0.9


def test_add_brick_for_the_shapes_held_back_y_factor_from_an_npz(shapes_copy, tmp_path):
    spec = load_common(shapes_copy / "common.safetensors").input_spec
    data = _npz(tmp_path / "shapes_y.npz", make_shapes(500, seed=5), spec, "y")
    code, out, err = _run("add-brick", shapes_copy, "--data", data, "--task", "y", *FAST)
    assert code == 0, err
    assert load_brick(shapes_copy / "bricks" / "y.safetensors").task.class_names == ("top", "middle", "bottom")
    # The shipped shapes teacher has no y head: asking it to teach y is refused in words.
    code, _, err = _run("add-brick", shapes_copy, "--data", data, "--task", "y", "--teacher", "builtin:shapes",
                        "--replace", *FAST)
    assert code == 2 and "does not know this task" in err and err.count("\n") == 1


def test_add_brick_refuses_a_name_the_run_already_has(digits_copy):
    before = (digits_copy / "bricks" / "7.safetensors").read_bytes()
    code, _, err = _run("add-brick", digits_copy, "--data", "builtin:digits", "--task", "7=7", *FAST)
    assert code == 2 and "already has a brick '7'" in err
    assert (digits_copy / "bricks" / "7.safetensors").read_bytes() == before


def test_add_brick_bad_inputs_are_one_line(digits_copy, tmp_path):
    code, _, err = _run("add-brick", tmp_path, "--data", "builtin:digits", "--task", "a=1", *FAST)
    assert code == 2 and err.startswith("kfstudio add-brick:") and err.count("\n") == 1
    code, _, err = _run("add-brick", digits_copy, "--data", "builtin:digits", "--task", "a=eleven", *FAST)
    assert code == 2 and "no class 'eleven'" in err


# ---------------------------------------------------------------- relate


def test_relate_prints_a_symmetric_matrix_and_writes_relatedness_json(digits_copy):
    from kfstudio.io.relatedness import cached_relatedness

    code, out, err = _run("relate", digits_copy, "--probes", "24")
    assert code == 0, err
    assert "Brick relatedness" in out and "Most related:" in out
    doc = json.loads((digits_copy / "relatedness.json").read_text())
    score = np.array(doc["matrix"]["score"])
    assert score.shape == (10, 10) and np.allclose(score, score.T)
    assert np.allclose(np.diag(score), 1 + doc["lambda"], atol=1e-5)
    assert (score[~np.eye(10, dtype=bool)] < 1 + doc["lambda"] - 1e-4).all()
    assert doc["probes"] == {"data": "builtin:digits", "n": 24, "requested": 24, "seed": 0}
    assert cached_relatedness(digits_copy, n_probes=24) == doc
    assert cached_relatedness(digits_copy, n_probes=32) is None  # another probe set: compute again
    code, _, err = _run("add-brick", digits_copy, "--data", "builtin:digits", "--task", "low=0,1", *FAST)
    assert code == 0, err
    assert cached_relatedness(digits_copy, n_probes=24) is None  # a new brick: the cache is stale


def test_relate_says_how_well_the_common_module_suits_new_data(shapes_copy, tmp_path):
    spec = load_common(shapes_copy / "common.safetensors").input_spec
    data = _npz(tmp_path / "shapes_y.npz", make_shapes(400, seed=6), spec, "y")
    code, out, err = _run("relate", shapes_copy, "--probes", "16", "--data", data)
    assert code == 0, err
    fit = json.loads((shapes_copy / "relatedness.json").read_text())["data_fit"][str(data)]
    assert fit["label"] == "label" and fit["teacher_layer"] and fit["test_images"] == 80
    assert 0 <= fit["probe_accuracy_common"] <= 1 and fit["probe_accuracy_common"] > fit["chance"]
    assert -1 <= fit["depara_common_vs_teacher"] <= 1.1
    assert "linear probe on the frozen z_c" in out and "DEPARA common module vs teacher" in out
    code, _, err = _run("relate", shapes_copy, "--probes", "16", "--data", "builtin:shapes")
    assert code == 2 and "--label" in err and err.count("\n") == 1


def test_add_brick_refuses_a_name_too_alike_to_an_existing_one(digits_copy):
    code, _, err = _run("add-brick", digits_copy, "--data", "builtin:digits", "--task", "Low=0,1", *FAST)
    assert code == 0, err
    # "low" would share "Low"'s brick file on a case-insensitive file system.
    code, _, err = _run("add-brick", digits_copy, "--data", "builtin:digits", "--task", "low=0,1", *FAST)
    assert code == 2 and "too alike" in err
