"""The command line in-process: factorize, inspect, train-teacher, and one clear line for every bad input."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import TinyCNN
from kfstudio.cli.app import main

TINY = ["--epochs", "1", "--batch-size", "512", "--common-width", "0.5", "--task-width", "0.25", "--threads", "1", "--device", "cpu",
        "--quiet"]
DIGIT_TASKS = [str(i) for i in range(10)]


@pytest.fixture(scope="module")
def digits_out(tmp_path_factory):
    """One real ``kfstudio factorize`` of the digits demo: (folder, exit code, stdout, stderr)."""
    out = tmp_path_factory.mktemp("cli") / "digits"
    stdout, stderr = io.StringIO(), io.StringIO()
    before = torch.get_num_threads()
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            code = main(["factorize", "--teacher", "builtin:digits", "--out", str(out), *TINY])
    finally:
        torch.set_num_threads(before)
    return out, code, stdout.getvalue(), stderr.getvalue()


def _json(path: Path) -> dict:
    return json.loads(path.read_text())


# ---------------------------------------------------------------- factorize


def test_factorize_writes_the_common_module_bricks_run_and_checkpoint(digits_out):
    out, code, stdout, stderr = digits_out
    assert code == 0, stderr
    # .kfstudio.lock: the folder's writer lock, kept (empty) for the next writer (kfstudio/io/locks.py)
    expected = {"common.safetensors", "common.json", "run.json", "checkpoint.pt", "reports.jsonl", ".kfstudio.lock"}
    expected |= {f"bricks/{t}.{ext}" for t in DIGIT_TASKS for ext in ("safetensors", "json")}
    written = {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}
    assert written == expected  # and no temporary files left behind
    assert "Finished after 1 epoch(s)" in stdout and "10 bricks" in stdout
    assert "digit 7" in stdout and "agrees with teacher" in stdout
    assert "Traceback" not in stderr
    # Each brick alone, as a detector calibrated on held-out training images: its AUC and accuracy.
    assert "alone: AUC  detector" in stdout and "held out to calibrate" in stdout
    row = next(line for line in stdout.splitlines() if line.startswith("digit 7 ")).split()
    assert 0.5 < float(row[-2]) <= 1 and row[-1].endswith("%")


def test_factorize_manifests(digits_out):
    out, *_ = digits_out
    common = _json(out / "common.json")
    assert common["schema_version"] == 1 and common["kind"] == "common-module"
    assert len(common["fingerprint"]) == 16 and int(common["fingerprint"], 16) >= 0
    assert common["tasks"] == DIGIT_TASKS
    assert common["architecture"] == {"arch": "tiny", "width": 0.5, "in_channels": 1}
    assert common["input"]["channels"] == 1 and common["complete"] is True and common["epochs"] == 1
    fingerprints = set()
    for task in DIGIT_TASKS:
        brick = _json(out / "bricks" / f"{task}.json")
        assert brick["schema_version"] == 1 and brick["kind"] == "task-brick"
        assert brick["common_fingerprint"] == common["fingerprint"]
        assert len(brick["fingerprint"]) == 16
        fingerprints.add(brick["fingerprint"])
        assert brick["task"] == {"name": task, "source": "digit", "classes": [int(task)], "class_names": [task],
                                 "kind": "one-vs-rest", "rest": False}
        assert brick["title"] == f"digit {task}"
        assert brick["architecture"]["width"] == 0.25 and brick["architecture"]["num_outputs"] == 1
        assert 0.0 <= brick["metrics"]["agreement"] <= 1.0
    assert len(fingerprints) == 10  # every brick has its own weights
    run = _json(out / "run.json")
    assert run["schema_version"] == 1 and run["kind"] == "factorization-run"
    assert run["config"]["epochs"] == 1 and run["config"]["num_threads"] == 1 and run["config"]["device"] == "cpu"
    assert run["cancelled"] is False and run["epochs_done"] == 1
    assert run["checkpoint"] == str(out / "checkpoint.pt")
    assert set(run["metrics"]["tasks"]) == set(DIGIT_TASKS)


def test_factorize_files_load_back_and_match_their_fingerprints(digits_out):
    from kfstudio.io.bricks import fingerprint, list_bricks, load_brick, load_common

    out, *_ = digits_out
    common = load_common(out / "common.safetensors")
    assert fingerprint(common.module.state_dict()) == common.fingerprint
    bricks = [load_brick(p) for p in list_bricks(out)]
    assert [b.task.name for b in bricks] == DIGIT_TASKS
    assert all(b.common_fingerprint == common.fingerprint for b in bricks)


def test_factorize_resume_from_the_cli(digits_out, tmp_path, capsys):
    out, *_ = digits_out
    shutil.copy(out / "checkpoint.pt", tmp_path / "start.pt")
    args = ["factorize", "--teacher", "builtin:digits", "--out", str(tmp_path / "more"), *TINY,
            "--resume", str(tmp_path / "start.pt")]
    args[args.index("--epochs") + 1] = "2"
    assert main(args) == 0
    captured = capsys.readouterr()
    assert "Resumed from" in captured.out and "(epoch 2)" in captured.out
    assert _json(tmp_path / "more" / "run.json")["epochs_done"] == 2


def test_ctrl_c_cancels_saves_a_checkpoint_and_exits_130(tmp_path, capsys, monkeypatch):
    import signal

    from kfstudio.core import factorize

    real = factorize.iter_factorize

    def interrupted(*args, **kwargs):
        gen = real(*args, **kwargs)
        report = next(gen)
        while True:
            yield report
            if report.kind == "step" and report.step < report.total_steps:
                signal.raise_signal(signal.SIGINT)  # the user presses Ctrl-C once
            try:
                report = next(gen)
            except StopIteration as stop:
                return stop.value

    monkeypatch.setattr(factorize, "iter_factorize", interrupted)
    before = signal.getsignal(signal.SIGINT)
    out = tmp_path / "out"
    args = ["factorize", "--teacher", "builtin:digits", "--out", str(out), *TINY]
    args[args.index("--batch-size") + 1] = "128"
    assert main(args) == 130
    captured = capsys.readouterr()
    assert "Stopping after this step" in captured.err
    assert "Cancelled after 0 epoch(s)" in captured.out and f"--resume {out / 'checkpoint.pt'}" in captured.out
    assert _json(out / "run.json")["cancelled"] is True
    assert _json(out / "common.json")["complete"] is False
    assert (out / "checkpoint.pt").is_file() and len(list((out / "bricks").glob("*.safetensors"))) == 10
    assert signal.getsignal(signal.SIGINT) is before  # the handler is put back (SIG_IGN under a background job)


# ---------------------------------------------------------------- inspect


def test_inspect_a_brick_a_common_module_and_a_teacher(digits_out, capsys):
    out, *_ = digits_out
    assert main(["inspect", str(out / "bricks" / "7.safetensors")]) == 0
    brick = json.loads(capsys.readouterr().out)
    assert brick["kind"] == "task-brick" and brick["task"]["name"] == "7" and brick["parameters"] > 0
    assert brick["common_fingerprint"] == _json(out / "common.json")["fingerprint"]

    assert main(["inspect", str(out / "common.json")]) == 0
    common = json.loads(capsys.readouterr().out)
    assert common["kind"] == "common-module" and common["parameters"] > 0 and common["z_dim"] > 0

    assert main(["inspect", "builtin:digits"]) == 0
    teacher = json.loads(capsys.readouterr().out)
    assert teacher["kind"] == "teacher" and teacher["outputs"] == {"digit": DIGIT_TASKS}
    assert teacher["input"]["height"] == 8 and teacher["parameters"] > 0 and len(teacher["sha256"]) == 64


def test_inspect_a_torchscript_teacher_needs_and_takes_an_input_spec(tmp_path, capsys):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.script(TinyCNN().eval()).save(str(tmp_path / "t.pt"))
    line = _fails(capsys, ["inspect", str(tmp_path / "t.pt")], "inspect")
    assert "--input" in line
    assert main(["inspect", str(tmp_path / "t.pt"), "--input", "1,8,8:0.5:0.25"]) == 0
    teacher = json.loads(capsys.readouterr().out)
    assert teacher["input"] == {"channels": 1, "height": 8, "width": 8, "mean": [0.5], "std": [0.25]}


def test_inspect_an_onnx_teacher(tmp_path, capsys):
    path = _onnx(tmp_path / "teacher.onnx")
    assert main(["inspect", str(path)]) == 0
    teacher = json.loads(capsys.readouterr().out)
    assert teacher["kind"] == "teacher" and teacher["input"]["channels"] == 1
    assert teacher["outputs"] == {"logits": ["0", "1", "2"]}
    assert teacher["parameters"] == sum(p.numel() for p in TinyCNN().parameters())  # counted from the graph


# ---------------------------------------------------------------- train-teacher


def test_train_teacher_writes_a_deterministic_teacher(tmp_path, capsys, monkeypatch):
    from kfstudio.core.teachers import demos as demo_teachers

    # The real recipe (40 epochs) takes ~15 s; two epochs exercise the same command path.
    monkeypatch.setattr(demo_teachers, "_recipe", lambda name: {"epochs": 2, "lr": 0.05, "batch": 128})
    torch.set_num_threads(1)  # the command keeps the current thread count
    for folder in ("a", "b"):
        assert main(["train-teacher", "digits", "--out", str(tmp_path / folder), "--seed", "3"]) == 0
    stdout = capsys.readouterr().out
    assert "epoch   2/2" in stdout and "test accuracy digit" in stdout and "Wrote" in stdout
    weights = (tmp_path / "a" / "digits.safetensors").read_bytes()
    assert weights == (tmp_path / "b" / "digits.safetensors").read_bytes()  # same seed, same bytes
    manifest = _json(tmp_path / "a" / "digits.json")
    assert manifest["schema_version"] == 1 and manifest["kind"] == "teacher"
    assert manifest["trained_by"] == "kfstudio train-teacher digits --seed 3"
    assert manifest["input"]["channels"] == 1 and manifest["outputs"] == ["digit"]
    assert 0.0 <= manifest["metrics"]["test_accuracy"]["digit"] <= 1.0


# ---------------------------------------------------------------- bad input: one line, exit code 2


class NotWeights:
    def __init__(self) -> None:
        self.payload = "code"


def _onnx(path: Path, dynamic: bool = True) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(TinyCNN().eval(), (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False,
                          external_data=False, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}} if dynamic else None)
    return path


def _npz(path: Path, shape=(1, 8, 8), n: int = 40) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.standard_normal((n, *shape)).astype(np.float32), y=(np.arange(n) % 3).astype(np.int64))
    return path


def _fails(capsys, args: list[str], command: str = "factorize") -> str:
    code = main(args)
    captured = capsys.readouterr()
    assert code == 2, captured
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"kfstudio {command}: ")
    assert "Traceback" not in captured.err + captured.out
    return lines[0]


def _factorize(tmp_path: Path, *extra: str) -> list[str]:
    return ["factorize", "--out", str(tmp_path / "out"), *TINY, *extra]


def test_missing_teacher_file(tmp_path, capsys):
    line = _fails(capsys, _factorize(tmp_path, "--teacher", str(tmp_path / "nope.onnx"), "--data",
                                     str(_npz(tmp_path / "d.npz"))))
    assert "does not exist" in line and "nope.onnx" in line


@pytest.mark.parametrize("name,word", [("bad.onnx", "not a readable ONNX model"), ("bad.pt", "not a TorchScript"),
                                       ("bad.pt2", "torch.export")])
def test_corrupt_teacher_file(tmp_path, capsys, name, word):
    (tmp_path / name).write_bytes(b"\x00garbage" * 100)
    line = _fails(capsys, _factorize(tmp_path, "--teacher", str(tmp_path / name), "--data",
                                     str(_npz(tmp_path / "d.npz"))))
    assert word in line


def test_plain_weights_given_as_a_teacher_suggest_a_factory(tmp_path, capsys):
    torch.save(TinyCNN().state_dict(), tmp_path / "weights.pt")
    line = _fails(capsys, _factorize(tmp_path, "--teacher", str(tmp_path / "weights.pt"), "--input", "1,8,8",
                                     "--data", str(_npz(tmp_path / "d.npz"))))
    assert "--weights weights.pt" in line


def test_a_pickle_that_is_not_plain_weights(tmp_path, capsys, monkeypatch):
    (tmp_path / "kf_cli_factory.py").write_text(
        "from torch import nn\n\ndef make():\n    return nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.LazyLinear(3))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "kf_cli_factory", raising=False)
    torch.save(NotWeights(), tmp_path / "code.pt")
    line = _fails(capsys, _factorize(tmp_path, "--teacher", "kf_cli_factory:make", "--weights",
                                     str(tmp_path / "code.pt"), "--input", "1,8,8", "--data",
                                     str(_npz(tmp_path / "d.npz"))))
    assert "not a plain weights file" in line


@pytest.mark.parametrize("shape", [(3, 8, 8), (1, 16, 16), (1, 8, 6)])
def test_data_that_does_not_fit_the_teacher(tmp_path, capsys, shape):
    line = _fails(capsys, _factorize(tmp_path, "--teacher", "builtin:digits", "--data",
                                     str(_npz(tmp_path / "d.npz", shape=shape))))
    assert "teacher expects 1x8x8" in line


@pytest.mark.parametrize("tasks,word", [("one-vs-rest:eleven", "'eleven'"), ("colour", "no output 'colour'"),
                                        ("small=0", "at least two")])
def test_unknown_task_or_class(tmp_path, capsys, tasks, word):
    line = _fails(capsys, _factorize(tmp_path, "--teacher", "builtin:digits", "--tasks", tasks))
    assert word in line


def test_empty_data(tmp_path, capsys):
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    line = _fails(capsys, _factorize(tmp_path, "--teacher", "builtin:digits", "--data", str(tmp_path / "empty.npz")))
    assert "no images" in line


@pytest.mark.parametrize("device", ["tpu", "cuda:99", "mps-ish"])
def test_bad_device(tmp_path, capsys, device):
    args = _factorize(tmp_path, "--teacher", "builtin:digits")
    args[args.index("--device") + 1] = device
    line = _fails(capsys, args)
    assert "device" in line.lower() or "GPU" in line


def test_missing_data_for_a_file_teacher_and_bad_numbers(tmp_path, capsys):
    line = _fails(capsys, _factorize(tmp_path, "--teacher", str(_onnx(tmp_path / "t.onnx"))))
    assert "--data" in line
    args = _factorize(tmp_path, "--teacher", "builtin:digits")
    args[args.index("--epochs") + 1] = "0"
    assert "number of epochs from 1" in _fails(capsys, args)  # refused by the parser, in one line


def test_inspect_bad_files(tmp_path, capsys):
    assert "does not exist" in _fails(capsys, ["inspect", str(tmp_path / "missing.onnx")], "inspect")
    (tmp_path / "brick.safetensors").write_bytes(b"garbage")
    (tmp_path / "brick.json").write_text(json.dumps({"schema_version": 1, "kind": "task-brick"}))
    assert "brick" in _fails(capsys, ["inspect", str(tmp_path / "brick.safetensors")], "inspect")


def test_fixed_batch_onnx_teacher_runs_or_fails_in_one_line(tmp_path, capsys):
    teacher = _onnx(tmp_path / "fixed.onnx", dynamic=False)
    code = main(_factorize(tmp_path, "--teacher", str(teacher), "--data", str(_npz(tmp_path / "d.npz"))))
    assert code in (0, 2)


REAL_PROCESS_SCRIPT = r'''
import sys
from kfstudio.cli.app import main
for args in __CASES__:
    code = main(args)
    print("@@case", code, file=sys.stderr, flush=True)
'''


def test_bad_input_prints_exactly_one_line_to_the_real_stderr(tmp_path):
    """In a real process: no library logging, warning or traceback joins the one-line message."""

    (tmp_path / "bad.pt2").write_bytes(b"\x00garbage" * 100)
    half = _onnx(tmp_path / "half.onnx")
    half.write_bytes(half.read_bytes()[:200])
    np.savez(tmp_path / "empty.npz", x=np.zeros((0, 1, 8, 8), np.float32))
    data = str(_npz(tmp_path / "d.npz"))
    out = ["--out", str(tmp_path / "out"), "--epochs", "1", "--device", "cpu", "--quiet"]
    cases = [
        ["factorize", "--teacher", str(tmp_path / "bad.pt2"), "--data", data, *out],
        ["factorize", "--teacher", str(half), "--data", data, *out],
        ["factorize", "--teacher", str(tmp_path / "missing.pt"), "--data", data, *out],
        ["factorize", "--teacher", "builtin:digits", "--data", str(tmp_path / "empty.npz"), *out],
        ["factorize", "--teacher", "builtin:digits", "--tasks", "ovr:eleven", *out],
    ]
    script = REAL_PROCESS_SCRIPT.replace("__CASES__", repr(cases))
    proc = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=120)
    sections = proc.stderr.split("@@case")
    assert len(sections) == len(cases) + 1, proc.stderr
    for i, section in enumerate(sections[:-1]):
        lines = [line for line in section.splitlines() if line.strip() and not line.strip().isdigit()]
        assert len(lines) == 1 and lines[0].startswith("kfstudio factorize: "), (cases[i], section)
    codes = [int(s.split()[0]) for s in sections[1:]]
    assert codes == [2] * len(cases)


# ---------------------------------------------------------------- the objective's knobs


def _config(*extra: str):
    from kfstudio.cli.app import build_parser
    from kfstudio.cli.factorize_cmd import config_from_args

    return config_from_args(build_parser().parse_args(["factorize", "--out", "unused", *extra]))


def test_every_objective_knob_reaches_the_config():
    config = _config("--infomax", "authors", "--beta", "0.01", "--l-feat", "0.5", "--l-kd", "0", "--w-task", "0.25",
                     "--temperature", "4", "--gaussian-bricks")
    w = config.imb
    assert (w.infomax, w.beta, w.l_feat, w.l_kd, w.w_task, w.temperature) == ("authors", 0.01, 0.5, 0.0, 0.25, 4.0)
    assert config.gaussian_bricks
    default = _config()
    assert default.imb.infomax == "1/B" and not default.gaussian_bricks and default.imb.l_kd == 0.1


def test_the_cli_offers_exactly_the_core_infomax_variants():
    from kfstudio.cli.factorize_cmd import INFOMAX_CHOICES
    from kfstudio.core.imb import INFOMAX_VARIANTS

    assert INFOMAX_CHOICES == INFOMAX_VARIANTS


@pytest.mark.parametrize("flag,value,words", [
    ("--beta", "-1", "at least 0"), ("--l-feat", "-0.5", "at least 0"), ("--l-kd", "nan", "at least 0"),
    ("--w-task", "inf", "at least 0"), ("--temperature", "0", "above 0"), ("--temperature", "warm", "not a number"),
    ("--infomax", "1/N", "invalid choice"),
])
def test_out_of_range_objective_values_are_refused_in_plain_words(capsys, flag, value, words):
    with pytest.raises(SystemExit) as info:
        _config(flag, value)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err and words in err and "Traceback" not in err


def test_a_collapsed_infomax_term_is_reported_in_one_line(tmp_path, capsys):
    args = ["factorize", "--out", str(tmp_path / "out"), "--epochs", "1", "--common-width", "0.5", "--task-width",
            "0.25", "--threads", "1", "--device", "cpu", "--quiet", "--infomax", "authors"]
    assert main(args) == 0
    err = capsys.readouterr().err
    warnings_ = [line for line in err.splitlines() if "InfoMax term has collapsed" in line]
    assert len(warnings_) == 1 and "--infomax 1/B" in warnings_[0]


def test_a_one_class_run_shows_its_balanced_accuracy_and_the_rest(tmp_path, capsys):
    args = ["factorize", "--out", str(tmp_path / "out"), *TINY, "--tasks", "ovr:3"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "balanced" in out and "none of these" in out
    row = next(line for line in out.splitlines() if line.startswith("digit 3 ")).split()
    # teacher, brick, balanced, agreement, then the brick alone as a calibrated detector: AUC, accuracy
    assert len(row) == 8 and all(cell.endswith("%") for cell in row[2:6] + row[7:])
    assert 0.5 < float(row[6]) <= 1 and "alone: AUC" in out
