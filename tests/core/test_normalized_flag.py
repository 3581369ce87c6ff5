"""An .npz holds images already in the teacher's input space (``normalized``): every way the data
path splits, subsets, joins or streams them keeps that flag, so ``prepare`` never normalizes them a
second time. The own-teacher fixture's mean 0.3 / std 0.2 makes a second normalization visible
(mean 0 / std 1 would hide it: normalizing twice is then the identity)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from kfstudio.core.data import feeds, streaming
from kfstudio.core.data.sources import DataSplit, concat, load_data, prepare
from kfstudio.core.errors import DataError
from kfstudio.core.spec import InputSpec
from own_teacher import INPUT

SPEC = InputSpec.parse(INPUT)


def _file_rows(path) -> torch.Tensor:
    with np.load(path) as npz:
        return torch.from_numpy(npz["x"])


def _rows_of(x: torch.Tensor, file_x: torch.Tensor) -> list[int]:
    """Where each image of ``x`` sits in the file (every image is distinct)."""
    flat = file_x.flatten(1)
    return [int((flat == img.flatten()).all(1).nonzero()[0]) for img in x]


def test_split_subset_and_whole_keep_the_flag_and_the_values(own_teacher):
    file_x = _file_rows(own_teacher.test)
    split = load_data(str(own_teacher.test), seed=0)
    parts = {"train": split.train, "test": split.test, "whole": split.whole(),
             "subset": split.test.subset([3, 1, 2]), "concat": concat(split.test, split.train)}
    for name, part in parts.items():
        assert part.normalized, name
        prepared = prepare(part, SPEC)
        assert torch.equal(prepared.x, file_x[_rows_of(part.x, file_x)]), name  # not normalized again
    assert len(parts["whole"]) == len(file_x) and sorted(_rows_of(parts["whole"].x, file_x)) == list(range(200))
    assert torch.equal(parts["whole"].labels["label"], torch.cat([split.train.labels["label"],
                                                                   split.test.labels["label"]]))


def test_joining_normalized_images_with_raw_pixels_is_refused_in_words(own_teacher):
    from kfstudio.core.data.sources import load_digits_dataset

    npz = load_data(str(own_teacher.test)).test
    with pytest.raises(DataError, match="mixes images already in the teacher's input space with raw pixels"):
        concat(npz, load_digits_dataset())
    with pytest.raises(DataError):
        DataSplit(npz, load_digits_dataset(), "").whole()


@pytest.mark.parametrize("stream", [False, True])
def test_streamed_and_in_memory_npz_keep_the_flag_through_split_and_subset(own_teacher, stream):
    file_x = _file_rows(own_teacher.train)
    split, _ = streaming.load_split(str(own_teacher.train), test_ref=str(own_teacher.test), seed=0,
                                    stream_above_mb=0 if stream else 1e6, workers=0)
    assert isinstance(split.train, streaming.FileImages) is stream
    for part in (split.train, split.train.subset([5, 0, 9])):
        assert part.normalized
        prepared = streaming.prepare(part, SPEC)
        got = torch.cat(list(feeds.chunks(prepared, 4, workers=0)))
        rows = part.rows if stream else _rows_of(part.x, file_x)
        assert torch.equal(got, file_x[list(rows)])


def test_npz_shards_in_memory_keep_the_flag(own_teacher, tmp_path):
    file_x = _file_rows(own_teacher.test)
    with np.load(own_teacher.test) as npz:
        y = npz["y"]
    np.savez(tmp_path / "a.npz", x=file_x[:120].numpy(), y=y[:120])
    np.savez(tmp_path / "b.npz", x=file_x[120:].numpy(), y=y[120:])
    split = load_data(str(tmp_path), seed=0)
    whole = split.whole()
    assert whole.normalized and torch.equal(prepare(whole, SPEC).x, file_x[_rows_of(whole.x, file_x)])
