"""Shared fixtures. Qt must be told to render offscreen before any QApplication exists."""

from __future__ import annotations

import json
import os
import tempfile


def _offscreen_with_a_real_screen() -> str:
    """The offscreen platform with one 1920x1080 screen. Its own is 800x600, smaller than the
    studio's 1280x800 window, which the studio shrinks to fit the screen it is on."""
    path = os.path.join(tempfile.gettempdir(), "kfstudio-tests-offscreen-screen.json")
    screen = {"name": "test", "x": 0, "y": 0, "width": 1920, "height": 1080, "logicalDpi": 96,
              "logicalBaseDpi": 96, "dpr": 1}
    with open(path, "w") as file:
        json.dump({"screens": [screen]}, file)
    return f"offscreen:configfile={path}"


if os.environ.get("QT_QPA_PLATFORM", "offscreen") == "offscreen":
    os.environ["QT_QPA_PLATFORM"] = _offscreen_with_a_real_screen()

import shutil  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

# One thread: the suite shares two cores with the GUI thread, and two threads crawl under load
# (a 2-epoch digits run measured 60-90 s with 2 OpenMP threads spinning against each other, ~1 s
# with 1). Set at import so that session fixtures such as ``digits_run`` train on one thread too.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Every test starts on one thread and leaves the count as it found it: a command run with
    ``--threads`` must not change the next test's speed."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _quick_factorization(out: Path, teacher: str, epochs: int = 2, **overrides):
    from kfstudio.core.factorize import FactorizeConfig, factorize
    from kfstudio.io.bricks import save_factorization

    config = FactorizeConfig(teacher=teacher, data=teacher, epochs=epochs, common_width=0.5, task_width=0.25,
                             device="cpu", seed=0, checkpoint=str(out / "checkpoint.pt"), **overrides)
    result = factorize(config)
    save_factorization(result, out)
    return result


@pytest.fixture(scope="session")
def digits_run(tmp_path_factory):
    """A short, real factorization of the digits demo: (result, folder with common + 10 bricks)."""
    out = tmp_path_factory.mktemp("digits_run")
    return _quick_factorization(out, "builtin:digits"), out


@pytest.fixture(scope="session")
def shapes_run(tmp_path_factory):
    """A short, real factorization of the shapes demo: one brick per teacher head."""
    out = tmp_path_factory.mktemp("shapes_run")
    return _quick_factorization(out, "builtin:shapes", epochs=1), out


def _source_key() -> str:
    """A digest of the kfstudio source this session imports and of torch's version: a cached run
    is reused only by the code that made it."""
    import hashlib

    import kfstudio

    digest = hashlib.sha256(torch.__version__.encode())
    for path in sorted(Path(kfstudio.__file__).parent.rglob("*.py")):
        digest.update(str(path.relative_to(Path(kfstudio.__file__).parent)).encode() + path.read_bytes())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def digits_folder():
    """The folder of a real digits factorization (common + 10 bricks + run.json, written by
    save_factorization; read only), kept on disk between pytest sessions under the temp folder and
    keyed by ``_source_key``. ``make mutate`` starts a fresh session per mutant, which would redo
    ``digits_run``'s factorization each time (30-60 s here); this is made once per source."""
    root = Path(tempfile.gettempdir()) / "kfstudio-test-runs"
    folder = root / f"digits-{_source_key()}"
    if not (folder / "common.safetensors").is_file():
        root.mkdir(exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=root, prefix=".making-"))
        _quick_factorization(stage / "run", "builtin:digits")
        (stage / "run" / "checkpoint.pt").unlink(missing_ok=True)
        try:
            os.rename(stage / "run", folder)  # atomic: a session running beside this one sees all or nothing
        except OSError:  # that session renamed its own first: use it
            pass
        shutil.rmtree(stage, ignore_errors=True)
    return folder


# ---------------------------------------------------------------- the runs' files, loaded

@pytest.fixture(scope="session")
def digits_common(digits_run):
    from kfstudio.io.bricks import load_common

    return load_common(digits_run[1] / "common.safetensors")


@pytest.fixture(scope="session")
def digits_bricks(digits_run):
    from kfstudio.io.bricks import list_bricks, load_brick

    return {b.task.name: b for b in (load_brick(p) for p in list_bricks(digits_run[1]))}


@pytest.fixture(scope="session")
def shapes_brick(shapes_run):
    from kfstudio.io.bricks import list_bricks, load_brick

    return load_brick(list_bricks(shapes_run[1])[0])


@pytest.fixture
def digits_copy(digits_run, tmp_path):
    """A private copy of the digits factorization folder (safe to spoil)."""
    out = tmp_path / "run"
    shutil.copytree(digits_run[1], out, ignore=shutil.ignore_patterns("checkpoint.pt"))
    return out


# ---------------------------------------------------------------- a teacher as users bring it

@pytest.fixture(scope="session")
def own_teacher(tmp_path_factory):
    """A factory + state_dict teacher with mean 0.3 / std 0.2 and labelled normalized .npz files,
    plus its ONNX and TorchScript copies (see tests/own_teacher.py)."""
    from own_teacher import make_own_teacher

    return make_own_teacher(tmp_path_factory.mktemp("own_teacher"))


@pytest.fixture
def own_teacher_importable(own_teacher, monkeypatch):
    """``own_teacher`` with its folder on sys.path, so that ``mynet:build`` imports."""
    monkeypatch.syspath_prepend(str(own_teacher.folder))
    return own_teacher
