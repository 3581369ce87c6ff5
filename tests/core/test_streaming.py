"""Data that streams from disk gives the in-memory path's batches, losses and error messages, and
its worker processes stop with the run."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import largest_loss_mismatch
from kfstudio.core.data import sources as D
from kfstudio.core.data import feeds, streaming
from kfstudio.core.errors import DataError
from kfstudio.core.factorize import FactorizeConfig, iter_factorize
from kfstudio.core.runs import RunControl
from kfstudio.core.runs import drain
from kfstudio.core.spec import InputSpec

# The digits teacher reads 1x8x8: the 10x10 RGB images are converted to one channel and resized.
BASE = dict(teacher="builtin:digits", tasks="one-vs-rest:3,7", common_width=0.25, task_width=0.25, device="cpu",
            seed=0, report_every=1, epochs=1, batch_size=16)
SPEC = InputSpec(1, 8, 8, (0.3,), (0.4,))


def _image_folder(root: Path, n: int = 64) -> Path:
    rng = np.random.default_rng(0)
    for i in range(n):
        folder = root / str(i % 10)
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (10, 10, 3), dtype=np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return _image_folder(tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    """Two uncompressed .npz shards of 1x8x8 images, already in the teacher's input space."""
    root = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(1)
    for k, n in enumerate((30, 25)):
        np.savez(root / f"part-{k}.npz", x=rng.normal(size=(n, 1, 8, 8)).astype(np.float32),
                 y=rng.integers(0, 10, n), class_names=np.array([str(c) for c in range(10)]))
    return root


def _split(ref: str, stream: bool, workers: int = 1):
    split, note = streaming.load_split(ref, test_ref=None, seed=0, stream_above_mb=0 if stream else 1e6,
                                       workers=workers)
    return split, note


@pytest.mark.parametrize("source", ["folder", "shards"])
def test_streamed_batches_are_the_in_memory_batches(request, source):
    ref = str(request.getfixturevalue(source))
    spec = SPEC if source == "folder" else InputSpec(1, 8, 8)
    (memory, memory_note), (streamed, stream_note) = _split(ref, False), _split(ref, True)
    assert isinstance(memory.train, D.Dataset) and "held in memory" in memory_note
    assert isinstance(streamed.train, streaming.FileImages) and "stream from disk through 1 worker" in stream_note
    in_memory, on_disk = D.prepare(memory.train, spec), streaming.prepare(streamed.train, spec)
    assert len(in_memory) == len(on_disk) and torch.equal(in_memory.labels["label"], on_disk.labels["label"])
    shards = [torch.tensor([5, 0, 9]), torch.tensor([1, 2]), torch.arange(len(on_disk))]
    with feeds.feed(on_disk, torch.device("cpu"), workers=1).epoch(shards) as images:
        for index, x in zip(shards, images):
            assert torch.equal(x, in_memory.x[index])
    test = streaming.prepare(streamed.test, spec)
    assert torch.equal(torch.cat(list(feeds.chunks(test, 4, workers=0))), D.prepare(memory.test, spec).x)


def _run(config: FactorizeConfig, cancel_at: int | None = None):
    control, messages, losses, alive = RunControl(), [], [], []

    def on_report(report):
        if report.kind == "setup":
            messages.extend(report.messages)
        elif report.kind == "step":
            losses.append(report.losses)
            if len(losses) == cancel_at:
                alive.extend(multiprocessing.active_children())
                control.cancel()

    result = drain(iter_factorize(config, control=control), on_report)
    return messages, losses, result, alive


def test_a_streamed_run_gives_the_losses_of_the_in_memory_run(folder):
    # augment: the seeded random shift is drawn by the loop for both paths, and the teacher runs on every batch
    config = FactorizeConfig(**BASE, data=str(folder), augment=True, workers=1)
    memory_messages, memory, memory_result, _ = _run(config)
    messages, streamed, result, _ = _run(FactorizeConfig(**{**config.to_dict(), "imb": config.imb,
                                                            "stream_above_mb": 0}))
    assert any("held in memory" in m for m in memory_messages)
    assert any("stream from disk through 1 worker process (--workers)" in m for m in messages)
    assert any("The teacher runs on every batch (it labels each batch's shifted copies" in m for m in messages)
    assert len(memory) == len(streamed) == 4  # 51 training images: 16, 16, 16, 3
    assert largest_loss_mismatch(memory, streamed) <= 1
    assert result.final.tasks == memory_result.final.tasks  # the streamed test split scores the same


def test_the_threshold_chooses_the_path(folder):
    listed = streaming._list(str(folder))
    assert listed.decoded_mb == pytest.approx(64 * 3 * 10 * 10 * 4 / 2**20)
    below, note = streaming.load_split(str(folder), test_ref=None, seed=0, stream_above_mb=listed.decoded_mb,
                                       workers=0)
    above, note_above = streaming.load_split(str(folder), test_ref=None, seed=0,
                                             stream_above_mb=listed.decoded_mb * 0.99, workers=0)
    assert isinstance(below.train, D.Dataset) and isinstance(below.test, D.Dataset)
    assert isinstance(above.train, streaming.FileImages) and isinstance(above.test, streaming.FileImages)
    assert "in the main process (--workers 0)" in note_above
    assert streaming.load_split("builtin:digits", test_ref=None, seed=0, stream_above_mb=0, workers=0)[1] is None


def test_cancelling_a_streamed_run_stops_its_worker_processes(folder):
    config = FactorizeConfig(**{**BASE, "batch_size": 4}, data=str(folder), stream_above_mb=0, workers=2)
    _, losses, result, alive = _run(config, cancel_at=1)
    assert result.cancelled and len(losses) == 1
    assert len(alive) == 2  # the epoch's two workers were reading ahead when the cancel came
    assert not [p for p in alive if p.is_alive()]
    assert multiprocessing.active_children() == []


def test_a_corrupt_image_in_a_streamed_folder_gives_the_in_memory_message(tmp_path):
    folder = _image_folder(tmp_path / "images", 20)
    (folder / "4" / "014.png").write_bytes(b"not a png at all")
    with pytest.raises(DataError) as in_memory:
        D.load_data(str(folder))
    config = FactorizeConfig(**BASE, data=str(folder), stream_above_mb=0, workers=1)
    with pytest.raises(DataError) as streamed:
        _run(config)
    assert str(streamed.value) == str(in_memory.value)
    assert "014.png' is corrupt or unreadable; remove or replace it." in str(streamed.value)
    assert multiprocessing.active_children() == []


def test_a_compressed_npz_is_refused_in_words_when_it_must_stream(tmp_path):
    np.savez_compressed(tmp_path / "big.npz", x=np.zeros((4, 1, 8, 8), np.float32))
    with pytest.raises(DataError, match="is compressed, so its images cannot be read one by one"):
        streaming.load_split(str(tmp_path / "big.npz"), test_ref=None, seed=0, stream_above_mb=0, workers=0)
    split, _ = streaming.load_split(str(tmp_path / "big.npz"), test_ref=None, seed=0, stream_above_mb=1, workers=0)
    assert isinstance(split.train, D.Dataset)  # small: in memory, as before


def _child(rank: int, store: str, config: FactorizeConfig, result: str) -> None:
    import json

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        _, losses, _, _ = _run(config)
        if rank == 0:
            Path(result).write_text(json.dumps(losses))
    finally:
        dist.destroy_process_group()


def test_two_processes_streaming_their_shards_give_the_losses_of_one_in_memory(folder, tmp_path):
    import json

    import torch.multiprocessing as mp

    # 51 training images at batch 17: three batches, each split 9 + 8 between the processes
    config = FactorizeConfig(**{**BASE, "batch_size": 17}, data=str(folder), sync_bn=True, infomax_stats="global",
                             workers=1)
    _, one, _, _ = _run(config)
    streamed = FactorizeConfig(**{**config.to_dict(), "imb": config.imb, "stream_above_mb": 0})
    result = tmp_path / "losses.json"
    # join=True waits for both processes (and raises if one failed): nothing is left running
    mp.start_processes(_child, args=(str(tmp_path / "store"), streamed, str(result)), nprocs=2, join=True,
                       start_method="fork")
    two = json.loads(result.read_text())
    assert len(one) == len(two) == 3
    assert largest_loss_mismatch(one, two) <= 1


def test_a_daemonic_training_process_streams_without_workers(folder, monkeypatch):
    # The studio trains in a daemonic process, which multiprocessing forbids to start processes.
    monkeypatch.setattr(streaming, "_in_daemon", lambda: True)
    split, note = _split(str(folder), True, workers=2)
    assert "in the training process (a background process may not start worker processes)" in note
    images = streaming.prepare(split.train, SPEC)
    with feeds.feed(images, torch.device("cpu"), workers=2).epoch([torch.arange(4)]) as batches:
        assert next(batches).shape == (4, 1, 8, 8)
    assert multiprocessing.active_children() == []


def test_a_streamed_folder_lists_the_files_labels_and_classes_of_the_in_memory_one(tmp_path):
    root = _image_folder(tmp_path / "mixed", 12)
    (root / ".hidden").mkdir()
    (root / "4" / ".skip.png").write_bytes(b"")
    (root / "4" / "notes.txt").write_text("not an image")
    (root / "b.JPG").write_bytes(b"")  # loose files beside class folders are not images of a class
    (root / "empty").mkdir()
    files, labels, names = D._folder_files(str(root))
    paths, stream_labels, stream_names = streaming._folder_paths(str(root))
    assert [os.fsdecode(p) for p in paths] == [str(f) for f in files]
    assert torch.equal(stream_labels["label"], labels["label"]) and stream_names == names
    flat = _image_folder(tmp_path / "flat-src", 3) / "0"  # images directly in the folder: unlabeled
    assert [os.fsdecode(p) for p in streaming._folder_paths(str(flat))[0]] == [str(f) for f in D._folder_files(str(flat))[0]]
