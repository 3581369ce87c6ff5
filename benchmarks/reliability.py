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
sys.path.insert(0, str(ROOT / "tests" / "cli"))
TINY = ["--epochs", "1", "--common-width", "0.25", "--task-width", "0.25", "--threads", "1", "--quiet"]


@dataclass
class Outcome:
    row: str
    argv: list[str]
    code: int | None
    line: str
    traceback: str = ""
    err_lines: int = 1  # non-empty lines on stderr: a refusal is exactly one
    works: bool = False  # an input that must work (exit 0), not be refused

    @property
    def refused_in_one_line(self) -> bool:
        return not self.works and self.code == 2 and self.err_lines == 1 and not self.traceback


def run_cli(argv: list[str]) -> tuple[int | None, str, str, int]:
    """(exit code, the line the user reads, traceback, how many lines stderr holds)."""
    from kfstudio.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:  # argparse refusing a flag: its one line is on stderr
        code = int(exc.code or 0)
    except BaseException as exc:  # noqa: BLE001 - counting exactly these
        return None, "", f"{type(exc).__name__}: {exc}", 0
    lines = [ln for ln in (err.getvalue() + out.getvalue()).splitlines() if ln.strip()]
    err_lines = [ln for ln in err.getvalue().splitlines() if ln.strip()]
    last = err_lines[-1] if err_lines else lines[-1] if lines else ""
    return code, last, "", len(err_lines)


def run_child(argv: list[str]) -> tuple[int | None, str, str, int]:
    """``run_cli`` in a child process, for cases that could abort the whole process (SIGABRT)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "kfstudio", *argv], env=env, capture_output=True, text=True)
    err_lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
    if done.returncode < 0 or "Traceback" in done.stderr:
        return None, "", f"exit {done.returncode}: {(err_lines or [''])[-1]}", len(err_lines)
    last = err_lines[-1] if err_lines else (done.stdout.strip().splitlines() or [""])[-1]
    return done.returncode, last, "", len(err_lines)


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

    def case(row: str, argv: list[str], works: bool = False) -> None:
        code, line, tb, n = run_cli(argv)
        outcomes.append(Outcome(row, argv, code, line, tb, n, works))

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
                                                                     str(folder / "a.ts.pt")], works=True)
    case("--teacher crafted.pt2 (inspect)", ["inspect", str(evil)])
    case("--tasks with a 40-character name", ["factorize", "--out", str(work / "long"), "--epochs", "1",
                                              "--common-width", "0.25", "--task-width", "0.25", "--quiet",
                                              "--tasks", "x" * 40 + "=0,1,2;" + "é" * 40 + "=3,4"], works=True)
    case("--tasks 'a/b=0,1;a_b=2,3' (names that once collided)",
         ["factorize", "--out", str(work / "collide"), "--epochs", "1", "--common-width", "0.25",
          "--task-width", "0.25", "--quiet", "--tasks", "a/b=0,1;a_b=2,3"], works=True)
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
    round3_cases(work, run, fresh, case, marker)
    outcomes.append(Outcome("code run from a crafted file", [], 0 if not marker.exists() else 1,
                            "marker absent" if not marker.exists() else "MARKER CREATED"))
    return outcomes


def round3_cases(work: Path, run: Path, fresh, case, marker: Path) -> None:
    """Header bombs in every loader, deep JSON, a damaged export manifest, --input, a pickle."""
    from test_bad_files_cli import _header_bomb
    from test_no_code_runs import _exploit_bytes

    bomb = _header_bomb(work / "bomb.npz", 1000, (3, 18000, 18000))
    for argv in (["evaluate", str(run)], ["add-brick", str(fresh()), "--task", "y", *TINY[:2], "--quiet"],
                 ["relate", str(run)]):
        case(f".npz of 4 KB whose header claims 3.5 TiB: {argv[0]}", [*argv, "--data", str(bomb)])
    rows = _header_bomb(work / "rows.npz", 10**9, (1, 28, 28))
    case(".npz of 4 KB whose header claims 10^9 images: factorize", ["factorize", "--data", str(rows), "--out",
                                                                     str(work / "b"), *TINY])
    deep = fresh()
    (deep / "common.json").write_text("[" * 5000 + "]" * 5000)
    case("common.json nested 5 000 deep, then assemble", ["assemble", str(deep), "--out", str(deep / "a.onnx"),
                                                          "--no-teacher"])
    net = work / "net.safetensors"
    case("assemble 2 bricks to .safetensors", ["assemble", str(run), "--tasks", "0,1", "--out", str(net),
                                               "--no-teacher"], works=True)
    _edit_json(Path(str(net) + ".json"), lambda d: {**d, "output_names": d["output_names"][1:]})
    case("export manifest that lost an output name, then evaluate", ["evaluate", str(net), "--data",
                                                                      "builtin:digits"])
    case("--input x (checked before the teacher loads)", ["factorize", "--input", "x", "--out", str(work / "i")])
    evil = work / "evil_checkpoint.pt"
    evil.write_bytes(_exploit_bytes(marker))  # a pickle that runs os.mkdir(marker) when unpickled
    case("--resume a crafted pickle", ["factorize", "--out", str(work / "p"), *TINY, "--resume", str(evil)])


def full_disk_cases(work: Path, run: Path) -> tuple[list[Outcome], int, str]:
    """Each writing command on a real 2 MB tmpfs left nearly full, in a child process (a regression
    could abort it); (outcomes, files left half-written or temp, why not run)."""
    disk = work / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(disk)], capture_output=True,
                             text=True)
    if mounted.returncode != 0:
        return [], 0, f"not run: this machine does not allow mounting a small filesystem ({mounted.stderr.strip()})"
    outcomes, left = [], 0
    copy = disk / "copy"
    cases = [("factorize", 200_000, ["factorize", "--out", str(disk / "run"), *TINY]),
             ("add-brick", 8_000, ["add-brick", str(copy), "--data", "builtin:digits", "--task", "odd=1,3,5,7,9",
                                   *TINY[:2], "--quiet"]),
             ("train-teacher digits", 50_000, ["train-teacher", "digits", "--out", str(disk / "t")]),
             ("assemble to .ts.pt", 30_000, ["assemble", str(run), "--tasks", "0,1", "--out", str(disk / "n.ts.pt"),
                                             "--no-teacher"]),
             ("assemble to .pt2", 30_000, ["assemble", str(run), "--tasks", "0,1", "--out", str(disk / "n.pt2"),
                                           "--no-teacher"])]
    try:
        for name, free, argv in cases:
            for path in disk.iterdir():
                shutil.rmtree(path) if path.is_dir() else path.unlink()
            shutil.copytree(run, copy, ignore=shutil.ignore_patterns("checkpoint.pt", "reports.jsonl"))
            before = {p for p in disk.rglob("*")}
            (disk / "filler").write_bytes(b"\0" * max(0, shutil.disk_usage(disk).free - free))
            code, line, tb, n = run_child(argv)
            outcomes.append(Outcome(f"full disk (tmpfs): {name}", argv, code, line.replace(str(work), "<tmp>"), tb, n))
            new = {p for p in disk.rglob("*")} - before - {disk / "filler"}
            left += len([p for p in new if p.is_file() and not p.name.startswith(".kfstudio.lock")])
    finally:
        subprocess.run(["umount", str(disk)], check=False)
    return outcomes, left, ""


def two_writers(work: Path, run: Path) -> tuple[list[Outcome], int]:
    """Two commands writing one folder at once (the first paused while it holds the folder);
    (the second's outcome, runs lost or damaged without a word)."""
    from test_one_writer_cli import _second_while_first_holds

    from kfstudio.io.bricks import list_bricks, load_common

    outcomes, lost = [], 0
    out = work / "both"
    args = ["factorize", "--out", str(out), *TINY]
    first, _, second = _second_while_first_holds(args, "Factorizing into", args)
    outcomes.append(_child_outcome("two factorize --out SAME at once: the second", args, second))
    lost += first.returncode != 0 or len(list_bricks(out)) != 10 or not load_common(out / "common.safetensors")
    folder = work / "grow"
    shutil.copytree(run, folder, ignore=shutil.ignore_patterns("checkpoint.pt"))
    args = ["add-brick", str(folder), "--data", "builtin:digits", "--task", "odd=1,3,5,7,9", *TINY[:2], "--quiet"]
    first, _, second = _second_while_first_holds(args, "builtin:digits has", args)
    outcomes.append(_child_outcome("two add-brick of one task, no --replace: the second", args, second))
    lost += first.returncode != 0 or not (folder / "bricks" / "odd.safetensors").is_file()
    return outcomes, lost


def _child_outcome(row: str, argv: list[str], done) -> Outcome:
    err = [ln for ln in done.stderr.splitlines() if ln.strip()]
    tb = "Traceback" if "Traceback" in done.stderr or done.returncode < 0 else ""
    return Outcome(row, argv, done.returncode, (err or [""])[-1], tb, len(err))


def killed_export_temps(work: Path, run: Path) -> int:
    """An export SIGKILLed mid-write, then another write into its folder: temp folders left."""
    from test_stale_temps import EXPORT, _writer_stuck_mid_write

    from kfstudio.io.atomic import write_json

    folder = work / "exports"
    folder.mkdir()
    proc, temp = _writer_stuck_mid_write(EXPORT, folder, str(run))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    write_json(folder / "next.json", {})
    return int(temp.exists())


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

@dataclass
class Extra:
    """The round-3 figures beside the replayed inputs."""

    disk: list[Outcome]
    disk_left: int
    disk_note: str
    writers: list[Outcome]
    lost: int
    temps_left: int


def report(outcomes: list[Outcome], kills: tuple[int, int, bool], extra: Extra, seconds: float) -> str:
    rows_all = outcomes[:-1] + extra.disk + extra.writers  # the last outcome is the code-run check
    refusals = [o for o in rows_all if not o.works]
    working = [o for o in rows_all if o.works]
    tracebacks = [o for o in rows_all if o.traceback]
    rows = "\n".join(f"| {o.row} | {'traceback' if o.traceback else o.code} | {o.err_lines if not o.works else '-'} | "
                     f"{(o.traceback or o.line)[:150]} |" for o in outcomes[:-1] + extra.disk + extra.writers)
    n_kills, corrupted, resumed = kills
    disk = (f"{len(extra.disk)}" if extra.disk else extra.disk_note)
    return f"""# Reliability: bad input, full disks, two writers, kills, crafted files

Generated by `python -m benchmarks.reliability` on {time.strftime('%Y-%m-%d')} ({seconds:.0f} s, {_cpu()},
1 torch thread). Bad inputs run through the real command line in this process; full-disk cases and two
writers run as child processes (`python -m kfstudio ...`), where an abort (SIGABRT) would show. "exit" is
the exit code; "lines" is how many lines the command wrote to stderr: a refusal counts as answered only
with exit code 2 and exactly one line.

| figure | count |
|---|---|
| bad inputs tried (each must be refused) | {len(refusals)} |
| refused with exit code 2 and exactly one line | {sum(o.refused_in_one_line for o in refusals)} of {len(refusals)} |
| inputs that must work (exit 0) and did | {sum(o.code == 0 for o in working)} of {len(working)} |
| tracebacks or aborts | {len(tracebacks)} |
| full-disk cases on a real 2 MB tmpfs | {disk} |
| files or temp files they left behind | {extra.disk_left} |
| two writers on one folder (the first holds it) | {len(extra.writers)} |
| work lost silently | {extra.lost} |
| temp folders of a SIGKILLed export left after the next write | {extra.temps_left} |
| SIGKILLs of `factorize` at random moments | {n_kills} |
| files left corrupted by the kills | {corrupted} |
| `--resume` finished the killed run | {'yes' if resumed else 'NO'} |
| code executed from crafted files and pickles | {0 if outcomes[-1].code == 0 else 1} |

Besides these, `make test` runs the same kinds of case as tests (each fails on the code before its
fix): tests/cli/test_bad_files_cli.py (header bombs in every loader, deep JSON, a damaged export
manifest, `--input`), tests/cli/test_full_disk_cli.py (a real tmpfs; skipped, with the reason, where
mounting is not allowed), tests/cli/test_one_writer_cli.py (two real processes, the first paused with
SIGSTOP while it holds the folder), tests/io/test_stale_temps.py (killed writers' temp files),
tests/gui/test_main_window.py (recovery after a crash whose PID was reused; two studios after one
crash), tests/gui/test_build_page.py (a `.pt2` teacher exported for one batch size). A fuzzer
(tests/io/test_fuzz.py, hypothesis, seeded) mutates ~750 manifests, projects and `--tasks` strings;
tests/io/test_crash_safety.py kills a save after each of its renames; tests/io/test_no_code_runs.py
shows each crafted file is a real attack on the plain loaders and is refused by ours.

| input | exit | lines | what the user reads |
|---|---|---|---|
{rows}
"""


def _cpu() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, load {os.getloadavg()[0]:.1f}"
    except OSError:
        pass
    return f"{os.cpu_count()}-core CPU"


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
        code, line, tb, _ = run_cli(["factorize", "--out", str(run), "--epochs", "1", "--common-width", "0.25",
                                     "--task-width", "0.25", "--quiet"])
        assert code == 0, line + tb
        outcomes = replay(work, run, rng)
        disk, disk_left, disk_note = full_disk_cases(work, run)
        writers, lost = two_writers(work, run)
        extra = Extra(disk, disk_left, disk_note, writers, lost, killed_export_temps(work, run))
        for o in outcomes + disk + writers:  # the user's own paths read better than this run's temp folder
            o.line = o.line.replace(str(work), "<tmp>")
        kills = kill_campaign(work, 2 if args.quick else 10, rng)
    text = report(outcomes, kills, extra, time.perf_counter() - start)
    print(text)
    if not args.no_write:
        DOC.write_text(text)


if __name__ == "__main__":
    main()
