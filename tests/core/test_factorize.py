"""The factorization generator: reports, determinism, pause/resume/cancel, checkpoints, NaN, teachers.

Every run here is tiny (a few hundred digits, a handful of steps, one CPU thread), so the whole
file takes seconds. Threads are synchronised with Events and a queue, never with sleeps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import queue
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from helpers import TinyCNN, TwoHeadCNN
from kfstudio.core import imb
from kfstudio.core.data.sources import DataSplit, load_data
from kfstudio.core.data.shapes import make_shapes
from kfstudio.core.errors import ConfigError, DataError, TrainingError
from kfstudio.core.factorize import FactorizeConfig, iter_factorize, load_checkpoint
from kfstudio.core.runs import RunControl
from kfstudio.core.imb import TERMS
from kfstudio.core.runs import drain
from kfstudio.core.tasks import GROUP, HEAD, ONE_VS_REST
from kfstudio.core.teachers.loaders import load_teacher

LOSS_KEYS = {"loss", *TERMS}
TINY = {"common_width": 0.5, "task_width": 0.25, "device": "cpu", "batch_size": 64, "num_threads": 1,
        "report_every": 1, "seed": 0}
JOIN_S = 120  # an upper bound for a worker thread to finish; a healthy run needs about a second


@pytest.fixture(scope="module")
def digits_teacher():
    return load_teacher("builtin:digits")


@pytest.fixture(scope="module")
def digits_data():
    """192 training and 64 test digits: 3 steps per epoch at batch size 64."""
    split = load_data("builtin:digits")
    return DataSplit(split.train.subset(list(range(192))), split.test.subset(list(range(64))), "a small digits split")


def _config(**overrides) -> FactorizeConfig:
    return FactorizeConfig(**{**TINY, "epochs": 2, **overrides})


def _run(config: FactorizeConfig, **kwargs):
    """Drive the generator to the end: (reports, result)."""
    reports = []
    return reports, drain(iter_factorize(config, **kwargs), reports.append)


def _of(reports, kind):
    return [r for r in reports if r.kind == kind]


def _state(result):
    return {k: v.clone() for k, v in result.network.state_dict().items()}


def _assert_same_state(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def _assert_finite_losses(report):
    assert set(report.losses) == LOSS_KEYS
    for key, value in report.losses.items():
        assert type(value) is float and math.isfinite(value), (key, value)


# ---------------------------------------------------------------- reports


def test_reports_come_in_order_with_every_loss_term(digits_teacher, digits_data, tmp_path):
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    reports, result = _run(_config(checkpoint=str(checkpoint)), teacher=digits_teacher, data=digits_data)
    assert [r.kind for r in reports] == ["setup"] + (["step"] * 3 + ["eval", "checkpoint"]) * 2

    setup = reports[0]
    assert setup.task_names == tuple(str(i) for i in range(10))
    assert setup.task_titles[7] == "digit 7"
    assert (setup.device, setup.steps_per_epoch, setup.total_steps, setup.start_step) == ("cpu", 3, 6, 0)
    assert set(setup.parameters) == {"common", *setup.task_names} and all(v > 0 for v in setup.parameters.values())
    assert setup.teacher_metrics["digit"].agreement == 1.0  # the teacher agrees with itself
    assert any("small digits split" in m for m in setup.messages)

    steps = _of(reports, "step")
    assert [s.step for s in steps] == [1, 2, 3, 4, 5, 6]
    assert [s.epoch for s in steps] == pytest.approx([1 / 3, 2 / 3, 1.0, 4 / 3, 5 / 3, 2.0])
    for s in steps:
        _assert_finite_losses(s)
        assert s.total_steps == 6 and s.lr > 0 and s.samples_per_s > 0 and s.eta_s >= 0
        total = (s.losses["loss_cls"] + s.losses["loss_task"] + 0.1 * s.losses["loss_kd"]
                 + s.losses["loss_infomax"] + 1e-3 * s.losses["loss_infomin"])
        assert s.losses["loss"] == pytest.approx(total, rel=1e-5)  # the default weights
    assert steps[-1].eta_s == 0

    evals = _of(reports, "eval")
    assert [(e.epoch, e.step) for e in evals] == [(1, 3), (2, 6)]
    for e in evals:
        assert set(e.tasks) == set(setup.task_names) and set(e.groups) == {"digit"}
        for m in [*e.tasks.values(), *e.groups.values()]:
            assert m.accuracy is not None and 0.0 <= m.accuracy <= 1.0 and 0.0 <= m.agreement <= 1.0
        assert e.groups["digit"].samples == 64

    assert [(c.epoch, c.path) for c in _of(reports, "checkpoint")] == [(1, str(checkpoint)), (2, str(checkpoint))]
    assert load_checkpoint(checkpoint)["epoch"] == 2

    assert result.final is evals[-1]
    assert (result.epochs_done, result.cancelled, result.checkpoint) == (2, False, str(checkpoint))
    assert [t.name for t in result.tasks] == list(setup.task_names)
    assert result.last_losses == steps[-1].losses
    assert not result.network.training and next(result.network.parameters()).device.type == "cpu"
    with pytest.raises(dataclasses.FrozenInstanceError):
        steps[0].step = 99  # reports are immutable


def test_loading_the_teacher_and_data_by_name(tmp_path):
    config = _config(teacher="builtin:digits", data="builtin:digits", epochs=1, batch_size=512, tasks="heads")
    reports, result = _run(config)
    setup = reports[0]
    assert setup.task_names == ("digit",) and setup.steps_per_epoch == 3  # 1437 training digits
    assert result.teacher.ref == "builtin:digits" and result.teacher.input_spec.shape == (1, 8, 8)
    assert result.final.tasks["digit"].samples == 360


# ---------------------------------------------------------------- determinism


def test_two_runs_with_the_same_seed_are_identical(digits_teacher, digits_data):
    first_reports, first = _run(_config(), teacher=digits_teacher, data=digits_data)
    second_reports, second = _run(_config(), teacher=digits_teacher, data=digits_data)
    assert [s.losses for s in _of(first_reports, "step")] == [s.losses for s in _of(second_reports, "step")]
    _assert_same_state(_state(first), _state(second))
    assert first.final.groups["digit"] == second.final.groups["digit"]

    other_reports, _ = _run(_config(seed=1), teacher=digits_teacher, data=digits_data)
    assert [s.losses for s in _of(other_reports, "step")] != [s.losses for s in _of(first_reports, "step")]


# ---------------------------------------------------------------- pause, resume, cancel


class SignallingControl(RunControl):
    """A RunControl that says when the training loop has reached its pause point."""

    def __init__(self) -> None:
        super().__init__()
        self.blocked = threading.Event()

    def wait_while_paused(self) -> None:
        self.blocked.set()
        super().wait_while_paused()


def _consume_in_thread(gen, out: queue.Queue, on_report):
    """Run the generator in a worker thread; every report (and the result or error) goes to ``out``."""

    def work():
        try:
            while True:
                report = next(gen)
                out.put(("report", report))
                on_report(report)
        except StopIteration as stop:
            out.put(("result", stop.value))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the test thread
            out.put(("error", exc))

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    return thread


def _drain(out: queue.Queue):
    items = []
    while not out.empty():
        items.append(out.get_nowait())
    return items


def _pause_after_first_step(control):
    def on_report(report):
        if report.kind == "step" and report.step == 1:
            control.pause()  # from the consumer itself, before it asks for the next report
    return on_report


def test_pause_blocks_the_run_until_resumed_from_another_thread(digits_teacher, digits_data):
    control = SignallingControl()
    out: queue.Queue = queue.Queue()
    gen = iter_factorize(_config(), control=control, teacher=digits_teacher, data=digits_data)
    worker = _consume_in_thread(gen, out, _pause_after_first_step(control))

    assert control.blocked.wait(JOIN_S), "the run never reached its pause point"
    assert control.paused and worker.is_alive()
    before = _drain(out)
    assert [(k, r.kind) for k, r in before] == [("report", "setup"), ("report", "step")]  # nothing past the pause

    control.resume()
    worker.join(JOIN_S)
    assert not worker.is_alive()
    after = _drain(out)
    kinds = [r.kind if k == "report" else k for k, r in after]
    assert kinds == ["step", "step", "eval"] + ["step"] * 3 + ["eval", "result"]
    steps = [r.step for k, r in before + after if k == "report" and r.kind == "step"]
    assert steps == [1, 2, 3, 4, 5, 6]  # no step lost or repeated
    result = after[-1][1]
    assert not result.cancelled and result.epochs_done == 2


def test_cancel_while_paused_returns_a_cancelled_result_with_a_checkpoint(digits_teacher, digits_data, tmp_path):
    checkpoint = tmp_path / "checkpoint.pt"
    control = SignallingControl()
    out: queue.Queue = queue.Queue()
    gen = iter_factorize(_config(checkpoint=str(checkpoint)), control=control, teacher=digits_teacher,
                         data=digits_data)
    worker = _consume_in_thread(gen, out, _pause_after_first_step(control))
    assert control.blocked.wait(JOIN_S)
    assert not checkpoint.exists()

    control.cancel()
    worker.join(JOIN_S)
    assert not worker.is_alive()
    items = _drain(out)
    assert [r.kind if k == "report" else k for k, r in items] == ["setup", "step", "result"]
    result = items[-1][1]
    assert result.cancelled and result.epochs_done == 0
    assert result.checkpoint == str(checkpoint) and checkpoint.is_file()
    state = load_checkpoint(checkpoint)
    assert (state["epoch"], state["step"]) == (0, 1)
    assert set(result.final.tasks) == {str(i) for i in range(10)}  # still evaluated
    assert result.last_losses.keys() == LOSS_KEYS


def _cancel_after_checkpoint(control, epoch: int):
    def on_report(report):
        if report.kind == "checkpoint" and report.epoch == epoch:
            control.cancel()
    return on_report


def test_resume_continues_at_the_next_epoch_and_matches_an_uninterrupted_run(digits_teacher, digits_data, tmp_path):
    _, whole = _run(_config(checkpoint=str(tmp_path / "whole.pt")), teacher=digits_teacher, data=digits_data)

    control = RunControl()
    gen = iter_factorize(_config(checkpoint=str(tmp_path / "part.pt")), control=control, teacher=digits_teacher,
                         data=digits_data)
    on_report = _cancel_after_checkpoint(control, 1)
    reports = []
    part = drain(gen, lambda report: (reports.append(report), on_report(report)))
    assert part.cancelled and part.epochs_done == 1
    assert [s.step for s in _of(reports, "step")] == [1, 2, 3]
    assert load_checkpoint(tmp_path / "part.pt")["epoch"] == 1

    resumed_reports, resumed = _run(_config(resume=str(tmp_path / "part.pt"), checkpoint=str(tmp_path / "more.pt")),
                                    teacher=digits_teacher, data=digits_data)
    setup = resumed_reports[0]
    assert setup.start_step == 3 and any("Resumed" in m for m in setup.messages)
    steps = _of(resumed_reports, "step")
    assert [s.step for s in steps] == [4, 5, 6]
    assert steps[0].epoch == pytest.approx(4 / 3)
    assert [e.epoch for e in _of(resumed_reports, "eval")] == [2]
    assert resumed.epochs_done == 2 and not resumed.cancelled
    _assert_same_state(_state(resumed), _state(whole))
    assert resumed.last_losses == whole.last_losses


def test_resume_after_a_mid_epoch_cancel_stays_within_the_planned_steps(digits_teacher, digits_data, tmp_path):
    control = SignallingControl()
    out: queue.Queue = queue.Queue()
    gen = iter_factorize(_config(checkpoint=str(tmp_path / "c.pt")), control=control, teacher=digits_teacher,
                         data=digits_data)
    worker = _consume_in_thread(gen, out, _pause_after_first_step(control))
    assert control.blocked.wait(JOIN_S)
    control.cancel()
    worker.join(JOIN_S)
    reports, _ = _run(_config(resume=str(tmp_path / "c.pt")), teacher=digits_teacher, data=digits_data)
    steps = [s.step for s in _of(reports, "step")]
    assert steps[-1] == reports[0].total_steps
    assert all(s <= reports[0].total_steps for s in steps)


def test_resume_errors(digits_teacher, digits_data, tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        _run(_config(resume=str(tmp_path / "nope.pt")), teacher=digits_teacher, data=digits_data)
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(ConfigError, match="not a readable"):
        _run(_config(resume=str(tmp_path / "junk.pt")), teacher=digits_teacher, data=digits_data)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ConfigError, match="not a KF Studio checkpoint"):
        _run(_config(resume=str(tmp_path / "other.pt")), teacher=digits_teacher, data=digits_data)

    _run(_config(epochs=1, checkpoint=str(tmp_path / "ovr.pt")), teacher=digits_teacher, data=digits_data)
    # settings that would train something else are named before any weight is loaded
    with pytest.raises(ConfigError, match=r"other settings \(tasks was None, now 'heads'\)"):
        _run(_config(resume=str(tmp_path / "ovr.pt"), tasks="heads"), teacher=digits_teacher, data=digits_data)
    with pytest.raises(ConfigError, match="common_width was 0.5, now 1.0"):
        _run(_config(resume=str(tmp_path / "ovr.pt"), common_width=1.0), teacher=digits_teacher, data=digits_data)
    # the stride does not change a weight's shape, so only the settings can tell: "auto" is recorded as
    # the stride it chose (1 for 8 px digits), and a checkpoint from before strides existed had 1
    with pytest.raises(ConfigError, match="stem_stride was 1, now 2"):
        _run(_config(resume=str(tmp_path / "ovr.pt"), stem_stride=2), teacher=digits_teacher, data=digits_data)
    _run(_config(epochs=2, resume=str(tmp_path / "ovr.pt"), stem_stride="auto"), teacher=digits_teacher, data=digits_data)


# ---------------------------------------------------------------- a NaN loss


def _nan_when(flag: threading.Event, real=imb.batch_gaussian_kl):
    def patched(z):
        value = real(z)
        return value * float("nan") if flag.is_set() else value
    return patched


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_a_nan_loss_raises_and_keeps_the_last_good_checkpoint(digits_teacher, digits_data, tmp_path, monkeypatch):
    flag = threading.Event()
    monkeypatch.setattr(imb, "batch_gaussian_kl", _nan_when(flag))
    checkpoint = tmp_path / "checkpoint.pt"
    gen = iter_factorize(_config(checkpoint=str(checkpoint)), teacher=digits_teacher, data=digits_data)
    saved = None
    with pytest.raises(TrainingError) as info:
        while True:
            report = next(gen)
            if report.kind == "checkpoint" and report.epoch == 1:
                saved = checkpoint.read_bytes()
                flag.set()  # the next training step goes NaN
    message = str(info.value)
    assert "loss_infomin" in message and "step 4" in message and "learning rate" in message
    assert saved is not None and checkpoint.read_bytes() == saved  # the good checkpoint is untouched
    assert load_checkpoint(checkpoint)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temp file left behind


@pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")
def test_a_nan_loss_at_the_first_step_writes_no_checkpoint(digits_teacher, digits_data, tmp_path, monkeypatch):
    flag = threading.Event()
    flag.set()
    monkeypatch.setattr(imb, "batch_gaussian_kl", _nan_when(flag))
    with pytest.raises(TrainingError, match="step 1"):
        _run(_config(checkpoint=str(tmp_path / "checkpoint.pt")), teacher=digits_teacher, data=digits_data)
    assert not (tmp_path / "checkpoint.pt").exists()


# ---------------------------------------------------------------- task modes


@pytest.mark.parametrize("tasks,names,outputs,kind,groups", [
    ("heads", ["digit"], [10], HEAD, set()),
    ("low=0,1,2,3,4;high=5,6,7,8,9", ["low", "high"], [5, 5], GROUP, set()),
    ("one-vs-rest:3,8", ["3", "8"], [1, 1], ONE_VS_REST, {"digit"}),
])
def test_every_task_mode_trains(digits_teacher, digits_data, tasks, names, outputs, kind, groups):
    torch.manual_seed(0)
    reports, result = _run(_config(tasks=tasks, epochs=1), teacher=digits_teacher, data=digits_data)
    assert [t.name for t in result.tasks] == names and {t.kind for t in result.tasks} == {kind}
    assert [result.network.brick(n).head.out_features for n in names] == outputs
    for s in _of(reports, "step"):
        _assert_finite_losses(s)
    assert set(result.final.tasks) == set(names) and set(result.final.groups) == groups
    # a class-group task is scored on the test images of its own classes
    if kind == GROUP:
        assert sum(m.samples for m in result.final.tasks.values()) == 64


def test_heads_mode_learns_well_above_chance(digits_teacher, digits_data):
    _, result = _run(_config(tasks="heads", epochs=10, batch_size=32, lr=0.05), teacher=digits_teacher,
                     data=digits_data)
    metrics = result.final.tasks["digit"]
    assert metrics.accuracy > 0.7 and metrics.agreement > 0.7  # chance is 0.1; seeds 0-2 reach 0.89-0.95


def test_gaussian_bricks_augmentation_and_teacher_bn_train(digits_data):
    teacher = load_teacher("builtin:digits")  # its BatchNorm statistics change in train mode: not shared
    config = _config(epochs=1, gaussian_bricks=True, augment=True, teacher_bn="train", tasks="one-vs-rest:0,1")
    reports, result = _run(config, teacher=teacher, data=digits_data)
    for s in _of(reports, "step"):
        _assert_finite_losses(s)
    assert result.network.brick("0").spec.gaussian


def test_config_errors():
    for bad in ({"epochs": 0}, {"batch_size": 1}, {"lr": 0.0}, {"schedule": "linear"}, {"teacher_bn": "frozen"},
                {"report_every": 0}):
        with pytest.raises(ConfigError):
            FactorizeConfig(**bad)
    round_trip = FactorizeConfig.from_dict(json.loads(json.dumps(_config(teacher_taps=("a",)).to_dict())))
    assert round_trip == _config(teacher_taps=("a",))


# ---------------------------------------------------------------- foreign teachers with .npz data


def _npz(path: Path, n: int = 48, labels: int | None = 3, shape=(1, 8, 8)) -> Path:
    rng = np.random.default_rng(0)
    arrays = {"x": rng.standard_normal((n, *shape)).astype(np.float32)}
    if labels:
        arrays["y"] = rng.integers(0, labels, n).astype(np.int64)
    np.savez(path, **arrays)
    return path


def _export(net: nn.Module, path: Path, fmt: str, output_names=("logits",)) -> Path:
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if fmt == "pt2":
            program = torch.export.export(net.eval(), (torch.zeros(2, 1, 8, 8),),
                                          dynamic_shapes=({0: torch.export.Dim("batch")},))
            torch.export.save(program, str(path))
        elif fmt == "onnx":
            torch.onnx.export(net.eval(), (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, external_data=False,
                              input_names=["image"], output_names=list(output_names),
                              dynamic_axes={"image": {0: "batch"}})
        else:
            torch.jit.script(net.eval()).save(str(path))
            manifest = {"input": {"channels": 1, "height": 8, "width": 8}, "outputs": list(output_names)}
            path.with_suffix(".json").write_text(json.dumps(manifest))
    return path


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".pt"), ("pt2", ".pt2")])
def test_onnx_torchscript_and_exported_teachers_with_npz_data(tmp_path, fmt, suffix):
    torch.manual_seed(0)
    teacher_file = _export(TinyCNN(), tmp_path / f"teacher{suffix}", fmt)
    data = _npz(tmp_path / "data.npz")
    config = _config(teacher=str(teacher_file), data=str(data), epochs=1, batch_size=16,
                     checkpoint=str(tmp_path / "checkpoint.pt"))
    reports, result = _run(config)
    assert reports[0].task_names == ("0", "1", "2") and reports[0].steps_per_epoch == 3  # 38 of 48: 16+16+6
    for s in _of(reports, "step"):
        _assert_finite_losses(s)
    source = "output" if fmt == "pt2" else "logits"  # a .pt2 program carries no output names
    assert {t.source for t in result.tasks} == {source}
    assert result.final.groups[source].samples == 10 and result.final.groups[source].accuracy is not None
    assert result.teacher.ref == str(teacher_file)
    note = "ONNX tensors" if fmt == "onnx" else "no intermediate features"  # TorchScript and .pt2: outputs
    assert note in result.teacher.feature_note
    assert (tmp_path / "checkpoint.pt").is_file()


@pytest.mark.parametrize("fmt,suffix", [("onnx", ".onnx"), ("torchscript", ".pt")])
def test_multi_output_teacher_with_unlabelled_npz_uses_teacher_labels(tmp_path, fmt, suffix):
    torch.manual_seed(0)
    teacher_file = _export(TwoHeadCNN(), tmp_path / f"two{suffix}", fmt, output_names=("shape", "colour"))
    data = _npz(tmp_path / "data.npz", labels=None)
    reports, result = _run(_config(teacher=str(teacher_file), data=str(data), epochs=1, batch_size=16))
    assert reports[0].task_names == ("shape", "colour")
    assert any("no labels for 'shape'" in m for m in reports[0].messages)
    assert [result.network.brick(n).head.out_features for n in ("shape", "colour")] == [3, 2]
    for m in result.final.tasks.values():
        assert m.accuracy is None and 0.0 <= m.agreement <= 1.0


def test_npz_labels_beyond_the_teacher_classes(tmp_path):
    teacher_file = _export(TinyCNN(), tmp_path / "teacher.onnx", "onnx")
    data = _npz(tmp_path / "data.npz", labels=5)
    with pytest.raises(DataError, match="only 3 classes"):
        _run(_config(teacher=str(teacher_file), data=str(data), epochs=1))


# ---------------------------------------------------------------- the shapes demo


def test_shapes_teacher_gives_one_brick_per_head():
    split = DataSplit(make_shapes(96, seed=0), make_shapes(32, seed=1), "tiny shapes")
    reports, result = _run(_config(teacher="builtin:shapes", data="builtin:shapes", epochs=1, batch_size=32),
                           data=split)
    assert reports[0].task_names == ("shape", "colour", "size", "x")
    assert {t.kind for t in result.tasks} == {HEAD}
    assert [result.network.brick(n).head.out_features for n in reports[0].task_names] == [3, 4, 2, 3]
    assert result.network.common.spec.in_channels == 3
    for s in _of(reports, "step"):
        _assert_finite_losses(s)
    assert set(result.final.tasks) == {"shape", "colour", "size", "x"}
    assert all(m.accuracy is not None for m in result.final.tasks.values())


def test_a_teacher_that_only_numbers_its_classes_takes_the_data_class_names():
    from kfstudio.core.data.sources import Dataset
    from kfstudio.core.factorize import _adopt_data_class_names
    from kfstudio.core.teachers.loaders import load_teacher

    teacher = load_teacher("builtin:digits")
    names = [f"class {i}" for i in range(10)]
    data = Dataset("npz", torch.zeros(2, 1, 8, 8), {"label": torch.tensor([0, 1])}, {"label": names})
    _adopt_data_class_names(teacher, data)
    assert teacher.class_names["digit"] == names
    # A data set with another number of classes leaves the teacher's names alone.
    other = Dataset("npz", torch.zeros(2, 1, 8, 8), {"label": torch.tensor([0, 1])}, {"label": ["a", "b"]})
    _adopt_data_class_names(teacher, other)
    assert teacher.class_names["digit"] == names
