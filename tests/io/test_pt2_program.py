"""The program JSON inside a .pt2 never runs code: torch turns shape expressions into Python
(sympy's sympify), compiles guards code into the module it builds, resolves node targets to any
callable under torch, and pastes names into generated source. Each attack is first shown to be
real against torch itself, then shown refused in words by KF Studio, with the canary absent."""

from __future__ import annotations

import io
import json
import shutil
import zipfile
from pathlib import Path

import pytest
import torch

from kfstudio.core.errors import KFError
from kfstudio.core.teachers.pt2_program import ProgramRefused, check_expression, check_target
from kfstudio.core.teachers.safe_pt2 import UnsafeFileError, load_exported_program
from kfstudio.core.teachers.loaders import load_teacher


class Sizes(torch.nn.Module):
    """Uses its batch size in arithmetic, so the program carries expressions such as Mul(64, s0)."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(64, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1)  # 64 * batch elements
        return self.fc(flat.view(x.shape[0], 64)) + flat.sum()


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    """A real export with a dynamic batch, written once for the module."""
    path = tmp_path_factory.mktemp("pt2") / "plain.pt2"
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10)).eval()
    program = torch.export.export(net, (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes={"input": {0: torch.export.Dim("batch", min=1, max=1024)}})
    torch.export.save(program, str(path))
    return path


def edit_program(source: Path, target: Path, change) -> Path:
    """A copy of ``source`` whose models/model.json went through ``change(doc)``."""
    with zipfile.ZipFile(source) as src:
        members = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(target, "w") as dst:
        for info, content in members:
            if info.filename.endswith("models/model.json"):
                doc = json.loads(content)
                change(doc)
                content = json.dumps(doc).encode()
            dst.writestr(info, content)
    return target


def replace_member(source: Path, target: Path, suffix: str, data: bytes) -> Path:
    with zipfile.ZipFile(source) as src:
        members = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(target, "w") as dst:
        for info, content in members:
            dst.writestr(info, data if info.filename.endswith(suffix) else content)
    return target


def write_canary(canary: Path) -> str:
    return f"__import__('pathlib').Path({str(canary)!r}).write_text('x')"


def nodes(doc: dict) -> list:
    return doc["graph_module"]["graph"]["nodes"]


def first_size(doc: dict) -> dict:
    """The batch size of the input: an expression (the symbol) with a hint."""
    return doc["graph_module"]["graph"]["tensor_values"]["input"]["sizes"][0]["as_expr"]


@pytest.fixture
def canary(tmp_path) -> Path:
    return tmp_path / "CANARY"


def _refused(path: Path, canary: Path, *words: str) -> str:
    with pytest.raises(UnsafeFileError) as info:
        load_exported_program(path)
    message = str(info.value)
    assert path.name in message and "not a plain torch.export program" in message
    for word in words:
        assert word in message, message
    assert "\n" not in message and "Traceback" not in message
    assert not canary.exists()
    return message


# ---------------------------------------------------------------- the attacks are real

def test_a_crafted_expression_runs_code_in_torch_export_load(plain, tmp_path, canary):
    path = edit_program(plain, tmp_path / "expr.pt2", lambda d: first_size(d).update(expr_str=write_canary(canary)))
    with pytest.raises(Exception):  # sympify evaluates it, then torch fails on the result
        torch.export.load(str(path))
    assert canary.exists()


def test_crafted_guards_code_runs_in_the_module_torch_builds(plain, tmp_path, canary):
    path = edit_program(plain, tmp_path / "guards.pt2",
                        lambda d: d.update(guards_code=[write_canary(canary) + " > 0"]))
    module = torch.export.load(str(path)).module()  # compiles the guards into Python source
    module(torch.zeros(3, 1, 8, 8))  # and runs them on every call
    assert canary.exists()


def test_crafted_sample_input_keys_run_code_through_the_generated_guards(plain, tmp_path, canary):
    key = '"), ' + write_canary(canary).replace("'", '"') + ', ("'
    buffer = io.BytesIO()
    torch.save((({key: torch.zeros(2, 1, 8, 8)},), {}), buffer)  # plain data: passes weights_only
    path = replace_member(plain, tmp_path / "samples.pt2", "sample_inputs/model.pt", buffer.getvalue())
    torch.export.load(str(path)).module()(torch.zeros(3, 1, 8, 8))
    assert canary.exists()


# ---------------------------------------------------------------- KF Studio refuses them, in words

def test_a_crafted_expression_is_refused_and_never_evaluated(plain, tmp_path, canary):
    path = edit_program(plain, tmp_path / "expr.pt2", lambda d: first_size(d).update(expr_str=write_canary(canary)))
    _refused(path, canary, "shape expression", "__import__")


def test_an_expression_naming_an_undeclared_symbol_is_refused(plain, tmp_path, canary):
    path = edit_program(plain, tmp_path / "sym.pt2", lambda d: first_size(d).update(expr_str="Symbol('s9')"))
    _refused(path, canary, "'s9'", "does not declare")


def test_guards_code_is_refused_and_never_run(plain, tmp_path, canary):
    path = edit_program(plain, tmp_path / "guards.pt2",
                        lambda d: d.update(guards_code=[write_canary(canary) + " > 0"]))
    _refused(path, canary, "guards code")
    with pytest.raises(KFError, match="guards code"):  # through the teacher loader too
        load_teacher(str(path), allow_code=True)
    assert not canary.exists()


def _call_system(doc: dict, canary: Path) -> None:
    evil = json.loads(json.dumps(nodes(doc)[0]))
    evil.update(target="torch.serialization.os.system", name="evil", outputs=[{"as_int": 0}],
                inputs=[{"name": "command", "arg": {"as_string": f"touch {canary}"}, "kind": 1}])
    nodes(doc).insert(0, evil)


@pytest.mark.parametrize("target", ["torch.serialization.os.system", "torch.ops.higher_order.cond",
                                    "builtins.exec", "torch.ops.aten.from_file.default", "#custom:op"])
def test_node_targets_outside_the_known_tensor_operators_are_refused(plain, tmp_path, canary, target):
    def change(doc):
        _call_system(doc, canary)
        nodes(doc)[0]["target"] = target

    path = edit_program(plain, tmp_path / "target.pt2", change)
    _refused(path, canary, repr(target), "not one of the tensor operators")


@pytest.mark.parametrize("where", ["forward_arg_names", "parameter_name", "node_name", "argument_name",
                                   "stack_trace", "metadata", "in_spec", "custom_obj"])
def test_names_and_text_that_torch_pastes_into_source_are_refused(plain, tmp_path, canary, where):
    payload = write_canary(canary)

    def change(doc):
        gm = doc["graph_module"]
        if where == "forward_arg_names":
            gm["module_call_graph"][0]["signature"]["forward_arg_names"] = [f"input, _k={payload}"]
        elif where == "parameter_name":
            gm["signature"]["input_specs"][0]["parameter"]["parameter_name"] = f'0.weight", {payload}) or ("'
        elif where == "node_name":
            nodes(doc)[0]["name"] = f"conv2d = {payload}"
        elif where == "argument_name":
            nodes(doc)[0]["inputs"][2]["name"] = f"bias=None, **{{{payload}: 1}}, x"
        elif where == "stack_trace":
            nodes(doc)[0]["metadata"]["stack_trace"] = f'File "a.py", line 1, in f\n    x\r{payload}\n'
        elif where == "metadata":
            nodes(doc)[0]["metadata"]["source_fn_stack"] = "evil,torch.serialization.os.system"
        elif where == "in_spec":
            spec = gm["module_call_graph"][0]["signature"]
            spec["in_spec"] = spec["in_spec"].replace("builtins.tuple", "os.system", 1)
        else:
            gm["graph"]["custom_obj_values"] = {"obj": {"name": "obj", "class_fqn": "os.system"}}

    path = edit_program(plain, tmp_path / f"{where}.pt2", change)
    _refused(path, canary)


def test_sample_inputs_keyed_by_code_are_refused(plain, tmp_path, canary):
    key = '"), ' + write_canary(canary).replace("'", '"') + ', ("'
    buffer = io.BytesIO()
    torch.save((({key: torch.zeros(2, 1, 8, 8)},), {}), buffer)
    path = replace_member(plain, tmp_path / "samples.pt2", "sample_inputs/model.pt", buffer.getvalue())
    _refused(path, canary, "sample inputs")


def test_a_member_listed_twice_is_refused(plain, tmp_path, canary):
    path = tmp_path / "twice.pt2"
    shutil.copy(plain, path)
    root = zipfile.ZipFile(path).namelist()[0].split("/")[0]
    with zipfile.ZipFile(path, "a") as archive, pytest.warns(UserWarning):  # zipfile warns about the duplicate
        archive.writestr(f"{root}/models/model.json", json.dumps({"guards_code": [write_canary(canary)]}))
    _refused(path, canary, "twice")


# ---------------------------------------------------------------- real programs still load

def test_programs_with_size_arithmetic_still_load_and_run(tmp_path):
    path = tmp_path / "sizes.pt2"
    program = torch.export.export(Sizes().eval(), (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=64)},))
    torch.export.save(program, str(path))
    doc = json.loads(zipfile.ZipFile(path).read("sizes/models/model.json"))
    assert doc["guards_code"] == []
    exprs = json.dumps(doc)
    assert "Mul(Integer(64), Symbol(" in exprs  # the arithmetic this test is about is there
    module = load_exported_program(path).module()
    assert module(torch.zeros(5, 1, 8, 8)).shape == (5, 3)


SYMBOLS = {"s0", "s1", "s77"}


@pytest.mark.parametrize("text", [
    "Symbol('s77', positive=True, integer=True)", "Mul(Integer(2), Symbol('s77', positive=True, integer=True))",
    "Add(FloorDiv(Symbol('s77', positive=True, integer=True), Integer(2)), Integer(1))",
    "Max(Integer(2), Symbol('s77', positive=True, integer=True))", "Integer(-1)", "s0", "2*s0 - 1",
    "-(s0 + 1) // 2 % 3", "Min(s0, s1)", "Eq(s0, 4)", "s0 <= 2*s1", "And(Eq(s0, 1), Ne(s1, 2))", "true",
])
def test_the_grammar_reads_the_expressions_torch_writes(text):
    check_expression(text, SYMBOLS)


@pytest.mark.parametrize("text", [
    "__import__('os').system('id')", "s2", "x", "Symbol('s9')", "s0.__class__", "s0 ** 2", "s0 / 2",
    "Integer(s0)", "Add()", "FloorDiv(s0)", "Mul(s0, positive=True)", "9" * 30, "s0\n+1", "(" * 50 + "s0" + ")" * 50,
    "", "s0 s1", "lambda: 1", "Symbol('s0', evaluate=True)", "getattr(s0, 'x')", "Float('1.5')",
    "Symbol('s0'); import os", "[s0]", "{s0}", "s0 if s1 else 2", "Pow(s0, Integer(100000))",
])
def test_the_grammar_refuses_everything_else(text):
    with pytest.raises(ProgramRefused, match="shape expression"):
        check_expression(text, SYMBOLS)


def test_the_known_targets_are_tensor_operators():
    for target in ("torch.ops.aten.conv2d.default", "torch.ops.aten.relu_.default", "_operator.getitem",
                   "torch.sym_max", "torch.ops.aten.sym_size.int"):
        check_target(target)
    for target in ("torch.ops.aten.conv2d", "torch.ops.aten.conv2d.default.__call__", "torch.load",
                   "torch.ops.aten.from_file.default", "_operator.attrgetter", "math.__loader__", 3, None):
        with pytest.raises(ProgramRefused):
            check_target(target)
