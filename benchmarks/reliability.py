"""Replay the hostile and careless inputs of the hardening issue through the real CLI, kill
``factorize`` at random moments, and count: clear messages, tracebacks, corrupted files, code run.

    python -m benchmarks.reliability [--quick]

Writes docs/reliability.md. Each bad input runs through ``kfstudio.cli.app.main`` in this
process: an exit code with one line is a clear message, any exception escaping ``main`` is a
traceback. Kills are real SIGKILLs of a ``python -m kfstudio factorize`` child.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "reliability.md"
sys.path.insert(0, str(ROOT / "tests" / "io"))


@dataclass
class Outcome:
    row: str
    argv: list[str]
    code: int | None
    line: str
    traceback: str = ""


def run_cli(argv: list[str]) -> tuple[int | None, str, str]:
    from kfstudio.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:  # argparse refusing a flag: its one line is on stderr
        code = int(exc.code or 0)
    except BaseException as exc:  # noqa: BLE001 - counting exactly these
        return None, "", f"{type(exc).__name__}: {exc}"
    lines = [ln for ln in (err.getvalue() + out.getvalue()).splitlines() if ln.strip()]
    last = next((ln for ln in err.getvalue().splitlines()[::-1] if ln.strip()), lines[-1] if lines else "")
    return code, last, ""


# ---------------------------------------------------------------- the inputs

def _edit_json(path: Path, edit) -> None:
    doc = json.loads(path.read_text())
    path.write_text(json.dumps(edit(doc)))


def _bytes_variants(good: bytes, rng: random.Random) -> dict[str, bytes]:
    flipped = bytearray(good)
    flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
    return {"truncated": good[: len(good) // 2], "zero bytes": b"", "random bytes": rng.randbytes(400),
            "one bit flipped": bytes(flipped), "not UTF-8": good[:20] + b"\xff\xfe" + good[22:]}


def _shape_edits() -> dict[str, tuple[str, callable]]:
    def drop(key):
        return lambda d: {k: v for k, v in d.items() if k != key}

    def set_in(keys, value):
        def edit(d):
            node = d
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = value
            return d
        return edit

    return {
        "brick: 'input' removed": ("brick", drop("input")),
        "brick: 'task' removed": ("brick", drop("task")),
        "brick: 'fingerprint' removed": ("brick", drop("fingerprint")),
        "brick: manifest is a list": ("brick", lambda d: [d]),
        "brick: task.classes is []": ("brick", set_in(["task", "classes"], [])),
        "brick: in_channels -1": ("brick", set_in(["architecture", "in_channels"], -1)),
        "brick: num_outputs 1e308": ("brick", set_in(["architecture", "num_outputs"], 1e308)),
        "brick: width 1000": ("brick", set_in(["architecture", "width"], 1000)),
        "common: tasks is 5": ("common", set_in(["tasks"], 5)),
        "common: teacher is a list": ("common", set_in(["teacher"], ["x"])),
        "common: manifest is a list": ("common", lambda d: [d]),
        "common: 'input' removed": ("common", drop("input")),
        "common: 'fingerprint' removed": ("common", drop("fingerprint")),
        "common: architecture.arch unknown": ("common", set_in(["architecture", "arch"], "vgg99")),
    }


def replay(work: Path, run: Path, rng: random.Random) -> list[Outcome]:
    from test_no_code_runs import crafted_pt2  # the same crafted archive the tests use

    outcomes: list[Outcome] = []

    def case(row: str, argv: list[str]) -> None:
        code, line, tb = run_cli(argv)
        outcomes.append(Outcome(row, argv, code, line, tb))

    def fresh() -> Path:
        folder = Path(tempfile.mkdtemp(dir=work))
        shutil.rmtree(folder)
        shutil.copytree(run, folder, ignore=shutil.ignore_patterns("checkpoint.pt"))
        return folder

    good = (run / "common.json").read_bytes()
    for name, data in _bytes_variants(good, rng).items():
        folder = fresh()
        (folder / "common.json").write_bytes(data)
        case(f"common.json {name}, then assemble FOLDER", ["assemble", str(folder), "--out", str(folder / "a.onnx")])
    for row, (which, edit) in _shape_edits().items():
        folder = fresh()
        path = folder / "common.json" if which == "common" else next((folder / "bricks").glob("*.json"))
        _edit_json(path, edit)
        case(row, ["assemble", str(folder), "--out", str(folder / "a.onnx"), "--no-teacher"])
        case(row + " (inspect)", ["inspect", str(path.with_suffix(".safetensors"))])
    marker = work / "pwned"
    evil = crafted_pt2(work / "evil.pt2", marker)
    folder = fresh()
    _edit_json(folder / "common.json", lambda d: {**d, "teacher": {**d["teacher"], "ref": str(evil)}})
    case("common.json teacher.ref -> crafted .pt2, then assemble", ["assemble", str(folder), "--out",
                                                                     str(folder / "a.ts.pt")])
    case("--teacher crafted.pt2 (inspect)", ["inspect", str(evil)])
    case("--tasks with a 40-character name", ["factorize", "--out", str(work / "long"), "--epochs", "1",
                                              "--common-width", "0.25", "--task-width", "0.25", "--quiet",
                                              "--tasks", "x" * 40 + "=0,1,2;" + "é" * 40 + "=3,4"])
    case("--tasks 'a/b=0,1;a_b=2,3' (names that once collided)",
         ["factorize", "--out", str(work / "collide"), "--epochs", "1", "--common-width", "0.25",
          "--task-width", "0.25", "--quiet", "--tasks", "a/b=0,1;a_b=2,3"])
    npz = work / "huge_labels.npz"
    np.savez(npz, x=np.zeros((8, 1, 8, 8), np.float32), y=np.array([0, 1, 2, 3, 4, 5, 6, 10**9]))
    case(".npz labels up to 1e9, no class names", ["factorize", "--data", str(npz), "--out", str(work / "n")])
    case("--seed 18446744073709551616", ["factorize", "--seed", "18446744073709551616", "--out", str(work / "s")])
    case("--threads -1", ["factorize", "--threads", "-1", "--out", str(work / "t")])
    a_file = work / "a_file"
    a_file.write_text("x")
    case("--out an existing file", ["factorize", "--out", str(a_file)])
    case("--out a folder under a file", ["factorize", "--out", str(a_file / "sub")])
    case("--out /proc/...", ["factorize", "--out", "/proc/kfstudio/run"])
    case("assemble --out an existing folder", ["assemble", str(run), "--out", str(work)])
    case("evaluate with data of another teacher's classes", ["evaluate", str(run), "--data", "builtin:shapes"])
    outcomes.append(Outcome("code run from a crafted file", [], 0 if not marker.exists() else 1,
                            "marker absent" if not marker.exists() else "MARKER CREATED"))
    return outcomes


# ---------------------------------------------------------------- kills

def _whole(out: Path) -> list[str]:
    import torch
    from safetensors.torch import load_file

    bad = []
    for path in out.rglob("*"):
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".safetensors":
                load_file(str(path))
            elif path.suffix == ".pt":
                torch.load(str(path), weights_only=True)
        except Exception as exc:  # noqa: BLE001
            bad.append(f"{path.name}: {exc}")
    return bad


def kill_campaign(work: Path, kills: int, rng: random.Random) -> tuple[int, int, bool]:
    out = work / "killed"
    argv = [sys.executable, "-m", "kfstudio", "factorize", "--teacher", "builtin:digits", "--out", str(out),
            "--epochs", "4", "--common-width", "0.25", "--task-width", "0.25", "--threads", "1", "--quiet"]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    corrupted = 0
    for _ in range(kills):
        resume = ["--resume", str(out / "checkpoint.pt")] if (out / "checkpoint.pt").exists() else []
        proc = subprocess.Popen(argv + resume, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            if line.startswith("Factorizing into"):
                break
        time.sleep(rng.uniform(0.0, 6.0))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        corrupted += len(_whole(out))
    resume = ["--resume", str(out / "checkpoint.pt")] if (out / "checkpoint.pt").exists() else []
    done = subprocess.run(argv + resume, env=env, capture_output=True, text=True)
    return kills, corrupted + len(_whole(out)), done.returncode == 0


# ---------------------------------------------------------------- report

def report(outcomes: list[Outcome], kills: tuple[int, int, bool], seconds: float) -> str:
    clear = [o for o in outcomes if o.code is not None and not o.traceback]
    tracebacks = [o for o in outcomes if o.traceback]
    rows = "\n".join(f"| {o.row} | {'traceback' if o.traceback else o.code} | {(o.traceback or o.line)[:150]} |"
                     for o in outcomes)
    n_kills, corrupted, resumed = kills
    return f"""# Reliability: bad input, kills, crafted files

Generated by `python -m benchmarks.reliability` on {time.strftime('%Y-%m-%d')} ({seconds:.0f} s, 2-core CPU,
1 torch thread). Every row runs through the real command line in one process; "exit" is the exit
code (2 = refused with one sentence, 0 = worked), "traceback" would be an exception escaping the CLI.

| figure | count |
|---|---|
| bad inputs tried | {len(outcomes) - 1} |
| answered with one plain line (exit 2) or handled (exit 0) | {len(clear) - 1} |
| tracebacks | {len(tracebacks)} |
| SIGKILLs of `factorize` at random moments | {n_kills} |
| files left corrupted by the kills | {corrupted} |
| `--resume` finished the killed run | {'yes' if resumed else 'NO'} |
| code executed from crafted files and pickles | {0 if outcomes[-1].code == 0 else 1} |

Besides these, `make test` runs a fuzzer (tests/io/test_fuzz.py, hypothesis, seeded): ~750 mutated
common and brick manifests, damaged manifest bytes, projects and `--tasks` strings, each of which must
load or raise a message in words; tests/io/test_crash_safety.py kills a save after each of its
renames (every step of the journal) and checks the folder holds exactly the old or the new run;
tests/io/test_no_code_runs.py shows each crafted file is a real attack on the plain loaders and is
refused by ours.

| input | exit | what the user reads |
|---|---|---|
{rows}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="2 kills instead of 10")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rng = random.Random(0)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        run = work / "digits"
        code, line, tb = run_cli(["factorize", "--out", str(run), "--epochs", "1", "--common-width", "0.25",
                                  "--task-width", "0.25", "--quiet"])
        assert code == 0, line + tb
        outcomes = replay(work, run, rng)
        for o in outcomes:  # the user's own paths read better than this run's temp folder
            o.line = o.line.replace(str(work), "<tmp>")
        kills = kill_campaign(work, 2 if args.quick else 10, rng)
    text = report(outcomes, kills, time.perf_counter() - start)
    print(text)
    if not args.no_write:
        DOC.write_text(text)


if __name__ == "__main__":
    main()
