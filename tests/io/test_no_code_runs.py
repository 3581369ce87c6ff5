"""No file ever runs code: crafted .pt2 archives, pickles and teacher references read from
files, through every entry point that reads them. Each attack is first shown to be real
(the unsafe loader or a plain import does create the marker), then shown to be refused."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from kfstudio.cli.app import main
from kfstudio.core.errors import KFError
from kfstudio.core.teachers.safe_pt2 import UnsafeFileError, load_exported_program
from kfstudio.core.teachers.loaders import TeacherOptions, UntrustedCodeError, load_teacher

REPO = Path(__file__).resolve().parents[2]


class Exploit:
    """A pickle that creates a folder when it is unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _exploit_bytes(marker: Path) -> bytes:
    buffer = io.BytesIO()
    torch.save(Exploit(marker), buffer)
    return buffer.getvalue()


def _plain_pt2(path: Path) -> Path:
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Flatten(), torch.nn.Linear(4 * 6 * 6, 10)).eval()
    program = torch.export.export(net, (torch.zeros(2, 1, 8, 8),),
                                  dynamic_shapes={"input": {0: torch.export.Dim("batch", min=1, max=1024)}})
    torch.export.save(program, str(path))
    return path


def _replace_member(path: Path, suffix: str, data: bytes) -> None:
    with zipfile.ZipFile(path) as src:
        members = [(i, src.read(i)) for i in src.infolist()]
    with zipfile.ZipFile(path, "w") as dst:
        for info, content in members:
            dst.writestr(info, data if info.filename.endswith(suffix) else content)


def crafted_pt2(path: Path, marker: Path, how: str = "sample_inputs") -> Path:
    """A valid program whose sample inputs (or first weight) hold a code-running pickle."""
    _plain_pt2(path)
    if how == "sample_inputs":
        _replace_member(path, "data/sample_inputs/model.pt", _exploit_bytes(marker))
    else:  # a weight stored "as a pickle", which torch loads with weights_only=False
        with zipfile.ZipFile(path) as src:
            cfg_name = next(n for n in src.namelist() if n.endswith("weights_config.json"))
            cfg = json.loads(src.read(cfg_name))
        first = next(iter(cfg["config"].values()))
        first["use_pickle"] = True
        _replace_member(path, cfg_name, json.dumps(cfg).encode())
        _replace_member(path, "data/weights/" + first["path_name"], _exploit_bytes(marker))
    return path


@pytest.fixture
def marker(tmp_path):
    return tmp_path / "pwned"


@pytest.mark.parametrize("how", ["sample_inputs", "use_pickle"])
def test_the_crafted_pt2_is_a_real_attack_on_torch_export_load(tmp_path, marker, how):
    path = crafted_pt2(tmp_path / "evil.pt2", marker, how)
    with pytest.raises(Exception):  # torch runs the pickle, then fails on what it returned
        torch.export.load(str(path))
    assert marker.exists()


@pytest.mark.parametrize("how", ["sample_inputs", "use_pickle"])
def test_the_safe_loader_refuses_it_without_running_it(tmp_path, marker, how):
    path = crafted_pt2(tmp_path / "evil.pt2", marker, how)
    with pytest.raises(KFError) as info:
        load_exported_program(path)
    assert "evil.pt2" in str(info.value)
    assert not marker.exists()


def test_unknown_members_such_as_compiled_kernels_are_refused(tmp_path):
    path = _plain_pt2(tmp_path / "aoti.pt2")
    root = zipfile.ZipFile(path).namelist()[0].split("/")[0]
    with zipfile.ZipFile(path, "a") as z:
        z.writestr(f"{root}/data/aotinductor/model/kernel.so", b"\x7fELF")
    with pytest.raises(UnsafeFileError, match="aotinductor"):
        load_exported_program(path)


def test_a_plain_pt2_still_loads_and_runs(tmp_path):
    program = load_exported_program(_plain_pt2(tmp_path / "ok.pt2"))
    assert program.module()(torch.zeros(3, 1, 8, 8)).shape == (3, 10)
    assert torch.load is torch.serialization.load  # the guard put torch.load back


def test_cli_entry_points_never_run_the_crafted_pt2(tmp_path, marker, capsys):
    evil = crafted_pt2(tmp_path / "evil.pt2", marker)
    (tmp_path / "evil.json").write_text(json.dumps({"input": {"channels": 1, "height": 8, "width": 8}}))
    for argv in (["inspect", str(evil)],
                 ["factorize", "--teacher", str(evil), "--data", "builtin:digits", "--out", str(tmp_path / "r")],
                 ["evaluate", str(evil), "--data", "builtin:digits"]):
        assert main(argv) == 2, argv
        assert not marker.exists(), argv
    assert "not a plain torch.export program" in capsys.readouterr().err


def test_an_export_manifest_naming_pt2_never_runs_it(tmp_path, marker, capsys):
    evil = crafted_pt2(tmp_path / "net.pt2", marker)
    Path(str(evil) + ".json").write_text(json.dumps({"schema_version": 1, "kind": "kfstudio-export", "format": "pt2",
                                                     "input": {"channels": 1, "height": 8, "width": 8},
                                                     "tasks": [], "outputs": [], "output_names": []}))
    assert main(["evaluate", str(evil), "--data", "builtin:digits"]) == 2
    assert not marker.exists()


def _folder_with_teacher_ref(digits_copy: Path, ref: str) -> Path:
    manifest = json.loads((digits_copy / "common.json").read_text())
    manifest["teacher"]["ref"] = ref
    (digits_copy / "common.json").write_text(json.dumps(manifest))
    return digits_copy


def test_assemble_never_follows_a_teacher_ref_to_a_crafted_pt2(digits_copy, tmp_path, marker, capsys):
    evil = crafted_pt2(tmp_path / "evil.pt2", marker)
    folder = _folder_with_teacher_ref(digits_copy, str(evil))
    assert main(["assemble", str(folder), "--tasks", "0,1", "--out", str(tmp_path / "a.onnx")]) == 0
    assert not marker.exists()
    assert "Not comparing with the teacher" in capsys.readouterr().out


def _evil_module(folder: Path, marker: Path) -> str:
    (folder / "kf_evil_teacher.py").write_text(f"import os\nos.mkdir({str(marker)!r})\ndef make():\n    return None\n")
    return "kf_evil_teacher:make"


def test_a_module_ref_in_common_json_is_not_imported(digits_copy, tmp_path, marker, monkeypatch, capsys):
    ref = _evil_module(tmp_path, marker)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    folder = _folder_with_teacher_ref(digits_copy, ref)
    assert main(["assemble", str(folder), "--tasks", "0", "--out", str(tmp_path / "a.ts.pt")]) == 0
    assert not marker.exists()
    out = capsys.readouterr().out
    assert "did not run it" in out and f"--teacher {ref}" in out


def _digits_teacher_pt2(path: Path) -> Path:
    """The digits demo teacher as a plain torch.export program (dynamic batch)."""
    teacher = load_teacher("builtin:digits")
    program = torch.export.export(teacher.module.eval(), (torch.zeros(2, *teacher.input_spec.shape),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=1024)},))
    torch.export.save(program, str(path))
    return path


def test_a_pt2_teacher_in_common_json_is_loaded_only_when_named(digits_copy, tmp_path, monkeypatch, capsys):
    teacher = _digits_teacher_pt2(tmp_path / "digits_teacher.pt2")
    folder = _folder_with_teacher_ref(digits_copy, str(teacher))
    loads = []
    real_load = torch.export.load
    monkeypatch.setattr(torch.export, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    assert main(["assemble", str(folder), "--tasks", "0", "--out", str(tmp_path / "a.onnx")]) == 0
    out = capsys.readouterr().out
    assert not loads  # read from common.json: not even opened
    assert "Not comparing with the teacher" in out and "torch.export program" in out
    assert "did not run it" in out and f"--teacher {teacher}" in out
    assert main(["assemble", str(folder), "--tasks", "0", "--teacher", str(teacher),
                 "--out", str(tmp_path / "b.onnx")]) == 0
    out = capsys.readouterr().out
    assert loads and "Not comparing" not in out and "assembled       teacher" in out  # named by the user: loaded


def test_a_pt2_named_in_a_file_is_treated_as_code(tmp_path):
    path = _plain_pt2(tmp_path / "t.pt2")
    with pytest.raises(UntrustedCodeError, match="torch.export program") as info:
        load_teacher(str(path))
    assert "Python" in str(info.value)
    assert load_teacher(str(path), allow_code=True).output_names  # named by the user: checked, then loaded


def test_a_module_ref_runs_only_when_the_user_names_it(tmp_path, marker, monkeypatch):
    ref = _evil_module(tmp_path, marker)
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UntrustedCodeError):
        load_teacher(ref)
    assert not marker.exists()
    with pytest.raises(KFError):  # named by the user: imported (and refused for returning None)
        load_teacher(ref, TeacherOptions(), allow_code=True)
    assert marker.exists()


def test_torchscript_named_in_a_file_is_treated_as_code(tmp_path):
    path = tmp_path / "t.ts.pt"
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(path))
    with pytest.raises(UntrustedCodeError, match="TorchScript"):
        load_teacher(str(path))


def test_python_itself_is_not_a_teacher(capsys):
    assert main(["inspect", "os:abort"]) == 2
    assert "part of Python itself" in capsys.readouterr().err


def test_python_dash_m_kfstudio_refuses_a_module_ref_in_a_folder(digits_copy, tmp_path, marker):
    ref = _evil_module(tmp_path, marker)
    folder = _folder_with_teacher_ref(digits_copy, ref)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "kfstudio", "assemble", str(folder), "--tasks", "0",
                           "--out", str(tmp_path / "b.safetensors")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not marker.exists()


def test_a_malicious_pickle_as_checkpoint_never_runs(tmp_path, marker, capsys):
    bad = tmp_path / "checkpoint.pt"
    torch.save(Exploit(marker), bad)
    argv = ["factorize", "--teacher", "builtin:digits", "--epochs", "1", "--out", str(tmp_path / "r"),
            "--resume", str(bad)]
    assert main(argv) == 2
    assert not marker.exists()


def test_a_malicious_pickle_as_brick_weights_never_runs(digits_copy, tmp_path, marker):
    brick = next((digits_copy / "bricks").glob("*.safetensors"))
    brick.write_bytes(_exploit_bytes(marker))
    assert main(["assemble", str(digits_copy), "--out", str(tmp_path / "x.onnx")]) == 2
    assert not marker.exists()
    shutil.rmtree(digits_copy)
