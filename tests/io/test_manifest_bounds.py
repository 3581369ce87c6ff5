"""One real manifest field per bound: a brick or common-module file with that field just past
its bound is refused in words naming the field, and the same file at the bound passes the schema.

Each case goes through ``load_brick``/``load_common``, the way the studio and the CLI open a
file, so a bound that went missing would surface as another message (or none) and fail here.
"""

from __future__ import annotations

import json

import pytest

from kfstudio.core.errors import FileFormatError
from kfstudio.core.students.networks import MAX_Z_DIM
from kfstudio.io.bricks import BRICK_KIND, COMMON_KIND, load_brick, load_common, read_manifest
from kfstudio.io.manifests import MAX_CLASSES, MAX_HEAD_WEIGHTS

# (field path, value just past the bound, value at the bound or None, words of the refusal)
BRICK_CASES = [
    ("input.channels", 65, 64, "must be a whole number from 1 to 64"),
    ("input.channels", 0, 1, "must be a whole number from 1 to 64"),
    ("input.channels", True, None, "must be a whole number from 1 to 64"),
    ("input.height", 4097, 4096, "must be a whole number from 1 to 4,096"),
    ("input.width", 0, 1, "must be a whole number from 1 to 4,096"),
    ("input.mean", [], [0.5], "must be a list of 1 to 64 entries"),
    ("input.mean", [0.5] * 65, [0.5] * 64, "must be a list of 1 to 64 entries"),
    ("input.mean[0]", 1_000_000.5, 1_000_000, "must be a number from -1e+06 to 1e+06"),
    ("input.mean[0]", float("nan"), None, "must be a number from -1e+06 to 1e+06"),
    ("input.std[0]", 0, 1e-12, "must be a positive number from 1e-12 to 1e+06"),
    ("input.std[0]", float("inf"), 1e6, "must be a positive number from 1e-12 to 1e+06"),
    ("architecture.width", 0.049, 0.05, "must be a positive number from 0.05 to 8"),
    ("architecture.width", 8.01, 8.0, "must be a positive number from 0.05 to 8"),
    ("architecture.in_channels", 65, 64, "must be a whole number from 1 to 64"),
    ("architecture.z_dim", MAX_Z_DIM + 1, MAX_Z_DIM, f"must be a whole number from 1 to {MAX_Z_DIM:,}"),
    ("architecture.z_dim", 0, None, f"must be a whole number from 1 to {MAX_Z_DIM:,}"),
    ("architecture.num_outputs", 0, 1, f"must be a whole number from 1 to {MAX_CLASSES:,}"),
    ("architecture.num_outputs", MAX_CLASSES + 1, None, f"must be a whole number from 1 to {MAX_CLASSES:,}"),
    ("architecture.gaussian", 1, True, "must be true or false"),
    ("architecture.arch", "no-such-backbone", None, "must be one of"),
    ("task.name", "", "0", "must be a non-empty text of at most 200 characters"),
    ("task.name", "n" * 201, "n" * 200, "must be a non-empty text of at most 200 characters"),
    ("task.source", " ", None, "must be a non-empty text of at most 200 characters"),
    ("task.classes[0]", MAX_CLASSES, MAX_CLASSES - 1, f"must be a whole number from 0 to {MAX_CLASSES - 1:,}"),
    ("task.classes[0]", -1, 0, f"must be a whole number from 0 to {MAX_CLASSES - 1:,}"),
    ("task.class_names[0]", "c" * 501, "c" * 500, "must be a text of at most 500 characters"),
    ("task.kind", "several", None, "must be one of"),
    ("task.rest", "no", None, "must be true or false"),
    ("fingerprint", "", None, "must be a non-empty text of at most 128 characters"),
    ("common_fingerprint", "f" * 129, None, "must be a non-empty text of at most 128 characters"),
    ("title", "t" * 501, "t" * 500, "must be a text of at most 500 characters"),
    ("epochs", -1, 0, "must be a whole number from 0 to 1,000,000,000"),
    ("epochs", 10**9 + 1, 10**9, "must be a whole number from 0 to 1,000,000,000"),
    ("teacher.ref", "r" * 4097, "r" * 4096, "must be a text of at most 4096 characters"),
    ("teacher.sha256", "s" * 129, None, "must be a text of at most 128 characters"),
]


def _set(doc: dict, dotted: str, value) -> None:
    *parents, last = dotted.replace("[", ".[").split(".")
    node = doc
    for key in parents:
        node = node[int(key[1:-1])] if key.startswith("[") else node[key]
    if last.startswith("["):
        node[int(last[1:-1])] = value
    else:
        node[last] = value


def _brick_file(folder):
    return sorted((folder / "bricks").glob("*.json"))[0]


def _rewrite(path, field: str, value) -> None:
    doc = json.loads(path.read_text())
    _set(doc, field, value)
    path.write_text(json.dumps(doc))


def _refusal(load, path) -> str:
    with pytest.raises(FileFormatError) as caught:
        load(path)
    return str(caught.value)


@pytest.mark.parametrize("field,past,at,words", BRICK_CASES, ids=[f"{c[0]}={str(c[1])[:12]}" for c in BRICK_CASES])
def test_brick_field_past_its_bound_is_refused_naming_the_field(digits_copy, field, past, at, words):
    path = _brick_file(digits_copy)
    original = path.read_text()
    _rewrite(path, field, past)
    message = _refusal(load_brick, path)
    assert f"is not a valid brick manifest: {field} {words}" in message
    if at is not None:
        path.write_text(original)
        _rewrite(path, field, at)
        checked = read_manifest(path, BRICK_KIND)
        assert checked is not None


def test_brick_with_a_head_too_large_is_refused(digits_copy):
    path = _brick_file(digits_copy)
    doc = json.loads(path.read_text())
    z_dim = 1000
    doc["architecture"].update(z_dim=z_dim, num_outputs=MAX_HEAD_WEIGHTS // z_dim + 1)
    path.write_text(json.dumps(doc))
    assert "brick manifest: architecture asks for a head too large to build (1,000 x 50,001 weights)." in (
        _refusal(load_brick, path))
    doc["architecture"]["num_outputs"] = MAX_HEAD_WEIGHTS // z_dim     # exactly the bound: the schema lets it by
    path.write_text(json.dumps(doc))
    assert read_manifest(path, BRICK_KIND)["architecture"]["num_outputs"] == 50_000


def test_brick_whose_classes_and_names_differ_in_length_is_refused(digits_copy):
    path = _brick_file(digits_copy)
    doc = json.loads(path.read_text())
    doc["task"]["classes"] = [0, 1]
    path.write_text(json.dumps(doc))
    assert _refusal(load_brick, path).endswith("brick manifest: task lists 2 classes but 1 class_names.")


@pytest.mark.parametrize("field", ["task", "architecture", "input", "fingerprint", "common_fingerprint"])
def test_brick_missing_a_required_field_is_refused_naming_it(digits_copy, field):
    path = _brick_file(digits_copy)
    doc = json.loads(path.read_text())
    del doc[field]
    path.write_text(json.dumps(doc))
    assert f"is not a valid brick manifest: {field} is missing" in _refusal(load_brick, path)


def test_common_module_field_past_its_bound_is_refused_naming_the_field(digits_copy):
    path = digits_copy / "common.json"
    original = path.read_text()
    for field, past, words in [("z_dim", 0, f"must be a whole number from 1 to {MAX_Z_DIM:,}"),
                               ("tasks[0]", "t" * 201, "must be a text of at most 200 characters"),
                               ("architecture.width", 9, "must be a positive number from 0.05 to 8"),
                               ("z_projection", "yes", "must be true or false")]:
        path.write_text(original)
        _rewrite(path, field, past)
        assert f"is not a valid common-module manifest: {field} {words}" in _refusal(load_common, path)


def test_common_module_that_projects_without_a_latent_size_is_refused(digits_copy):
    path = digits_copy / "common.json"
    doc = json.loads(path.read_text())
    doc["z_projection"] = True
    del doc["z_dim"]
    path.write_text(json.dumps(doc))
    assert _refusal(load_common, path).endswith(
        "is not a valid common-module manifest: the manifest projects to a latent size but does not say which "
        "(z_dim).")
    doc["z_projection"] = False     # no projection: no latent size needed
    path.write_text(json.dumps(doc))
    assert read_manifest(path, COMMON_KIND)["z_projection"] is False
    doc.update(z_projection=True, z_dim=24)     # a projection that says its size passes the schema
    path.write_text(json.dumps(doc))
    assert read_manifest(path, COMMON_KIND)["z_dim"] == 24
