"""A fuzzer for every file we read: mutated manifests, projects, bundles, .pt2 programs and
--tasks strings either load or raise a KFError (a message in words), never another exception,
and never run code.

Seeded (derandomized) and bounded: a few hundred examples per file kind, a few seconds each.
"""

from __future__ import annotations

import copy
import json
import shutil
import zipfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kfstudio.core.errors import KFError
from kfstudio.core.names import check_task_names
from kfstudio.core.tasks import resolve_tasks
from kfstudio.io.bricks import list_bricks, load_brick, load_common
from kfstudio.io.project import load_project, project_from_graph, save_project

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=8,
)


def _paths(node, prefix=()):
    yield prefix
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        yield from _paths(child, (*prefix, key))


def _set(doc, path, value):
    if not path:
        return value
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    parent[path[-1]] = value
    return doc


def _delete(doc, path):
    if not path:
        return {}
    parent = doc
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return doc


@st.composite
def mutations(draw, original: dict, values=json_values):
    """One to three edits anywhere in the document: replace a value, delete it, or swap in a copy of another."""
    doc = copy.deepcopy(original)
    for _ in range(draw(st.integers(1, 3))):
        paths = list(_paths(doc))
        path = draw(st.sampled_from(paths))
        action = draw(st.sampled_from(["replace", "delete", "copy"]))
        if action == "replace":
            doc = _set(doc, path, draw(values))
        elif action == "delete":
            doc = _delete(doc, path)
        else:
            source = draw(st.sampled_from(paths))
            value = doc
            for key in source:
                value = value[key]
            doc = _set(doc, path, copy.deepcopy(value))
        if not isinstance(doc, (dict, list)):
            break
    return doc


def _outcome(load) -> str:
    try:
        load()
    except KFError as exc:
        assert str(exc).strip() and "Traceback" not in str(exc)
        return "refused"
    return "loaded"


@pytest.fixture(scope="module")
def run_copy(digits_run, tmp_path_factory):
    folder = tmp_path_factory.mktemp("fuzz") / "run"
    shutil.copytree(digits_run[1], folder, ignore=shutil.ignore_patterns("checkpoint.pt"))
    return folder


def _fuzz_manifest(manifest_path: Path, load):
    original = json.loads(manifest_path.read_text())

    @FUZZ
    @given(mutations(original))
    def check(doc):
        manifest_path.write_text(json.dumps(doc))
        _outcome(load)

    try:
        check()
    finally:
        manifest_path.write_text(json.dumps(original))


def test_mutated_common_manifests_load_or_say_why(run_copy):
    _fuzz_manifest(run_copy / "common.json", lambda: (load_common(run_copy / "common.safetensors"),
                                                      list_bricks(run_copy)))


def test_mutated_brick_manifests_load_or_say_why(run_copy):
    brick = list_bricks(run_copy)[0]
    _fuzz_manifest(brick.with_suffix(".json"), lambda: load_brick(brick))


@FUZZ
@given(data=st.binary(max_size=300), cut=st.integers(0, 4000), flip=st.integers(0, 40_000))
def test_damaged_manifest_bytes_are_refused_in_words(run_copy, data, cut, flip):
    path = run_copy / "common.json"
    good = path.read_bytes()
    damaged = bytearray(good[:cut] + data)
    if damaged:
        damaged[flip % len(damaged)] ^= 1 << (flip % 8)
    try:
        path.write_bytes(bytes(damaged))
        _outcome(lambda: load_common(run_copy / "common.safetensors"))
    finally:
        path.write_bytes(good)


def test_mutated_projects_open_or_say_why(run_copy, tmp_path, digits_common, digits_bricks):
    from kfstudio.assembly.graph import BrickGraph

    graph = BrickGraph()
    graph.set_common(load_common(run_copy / "common.safetensors"))
    for i, path in enumerate(list_bricks(run_copy)[:3]):
        graph.attach(graph.add_brick(load_brick(path), (200.0, 100.0 * i)))
    path = save_project(project_from_graph(graph, run_copy), tmp_path / "p.kfproj")
    original = json.loads(path.read_text())

    @FUZZ
    @given(mutations(original))
    def check(doc):
        path.write_text(json.dumps(doc))
        _outcome(lambda: load_project(path))

    check()


OUTPUTS = {"digit": [str(i) for i in range(10)]}
task_words = st.sampled_from(["one-vs-rest", "ovr", "heads", "auto", "digit", "=", ";", ",", ":", "/", "_",
                              "a", "a/b", "a_b", "A", " ", "0", "7", "12", "-1", "é" * 40, "x" * 80])


@FUZZ
@given(st.lists(task_words, max_size=8).map("".join) | st.text(max_size=60))
def test_any_tasks_string_resolves_or_says_why(text):
    def resolve():
        tasks = resolve_tasks(text, OUTPUTS)
        check_task_names(t.name for t in tasks)

    _outcome(resolve)


# ---------------------------------------------------------------- .pt2 program JSON

@pytest.fixture(scope="module")
def plain_pt2(tmp_path_factory) -> Path:
    import torch

    path = tmp_path_factory.mktemp("fuzz_pt2") / "net.pt2"
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                              torch.nn.Linear(2 * 6 * 6, 3)).eval()
    program = torch.export.export(net, (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes={"input": {0: torch.export.Dim("batch", min=1, max=64)}})
    torch.export.save(program, str(path))
    return path


def _code_like(canary: Path):
    """Strings torch would turn into Python in one field or another, each writing the canary."""
    run = f"__import__('pathlib').Path({str(canary)!r}).write_text('x')"
    texts = st.sampled_from([
        run, f"{run} > 0", f"Add(Symbol('s77'), {run})", f"input, _k={run}", f'0.weight", {run}) or ("',
        f"conv2d = {run}", f'File "a.py", line 1, in f\n    x\r{run}', "torch.serialization.os.system",
        "torch.ops.higher_order.cond", "builtins.exec", "Symbol('s9', positive=True)", "2*s77", "s77 // 0",
        "Max(Integer(2), Symbol('s77', positive=True, integer=True))", "torch.ops.aten.relu.default",
        "_operator.getitem", f"torch.ops.aten.{run}.default", "#ns:op", '"), (', "\r", "x" * 300,
    ])
    return texts | st.lists(texts, min_size=1, max_size=2) | json_values | st.integers(-2**66, 2**66)


def test_mutated_pt2_programs_load_or_say_why_and_never_run_code(plain_pt2, tmp_path):
    from kfstudio.core.teachers.loaders import load_teacher

    canary = tmp_path / "CANARY"
    with zipfile.ZipFile(plain_pt2) as src:
        members = [(info, src.read(info)) for info in src.infolist()]
    model = next(info.filename for info, _ in members if info.filename.endswith("models/model.json"))
    original = json.loads({i.filename: c for i, c in members}[model])
    path = tmp_path / "fuzzed.pt2"
    outcomes = []

    @settings(FUZZ, max_examples=80)
    @given(mutations(original, _code_like(canary)))
    def check(doc):
        with zipfile.ZipFile(path, "w") as dst:
            for info, content in members:
                dst.writestr(info, json.dumps(doc).encode() if info.filename == model else content)
        outcomes.append(_outcome(lambda: load_teacher(str(path), allow_code=True)))  # load, build, run
        assert not canary.exists()

    check()
    assert "refused" in outcomes and not canary.exists()
