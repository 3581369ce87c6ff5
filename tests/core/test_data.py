"""Data loading, splitting and preparation for a teacher's input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from kfstudio.core.data import sources as data_mod
from kfstudio.core.data.sources import Dataset, DataSplit, list_data_sources, load_data, load_digits_dataset, prepare, register_data_source, to_pixels
from kfstudio.core.data.shapes import SHAPES_FACTORS, make_shapes
from kfstudio.core.errors import ConfigError, DataError
from kfstudio.core.spec import InputSpec


@pytest.fixture
def shapes() -> Dataset:
    # made per test (0.1 s): mutation testing credits a shared fixture's code to the first test only
    return make_shapes(3000, seed=0)


def _write_png(path: Path, value: int, size: tuple[int, int] = (6, 4), mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    colour = value if mode == "L" else (value, 255 - value, 7)
    Image.new(mode, size, colour).save(path)


def _class_folder(root: Path, counts: dict[str, int]) -> Path:
    for name, count in counts.items():
        for i in range(count):
            _write_png(root / name / f"{i:03d}.png", 10 * i)
    return root


# --- digits --------------------------------------------------------------------------------


def test_digits_dataset_is_all_1797_images_in_unit_range():
    ds = load_digits_dataset()
    assert ds.x.shape == (1797, 1, 8, 8) and ds.x.dtype == torch.float32
    assert ds.x.min() == 0.0 and ds.x.max() == 1.0
    assert ds.labels["digit"].dtype == torch.int64
    assert ds.class_names == {"digit": [str(i) for i in range(10)]}
    assert ds.image_shape == (1, 8, 8) and len(ds) == 1797 and not ds.normalized


def test_digits_split_is_fixed_stratified_and_ignores_the_seed():
    a = load_data("builtin:digits")
    b = load_data("builtin:digits", seed=7, test_fraction=0.5)
    assert (len(a.train), len(a.test)) == (1437, 360)
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.labels["digit"], b.train.labels["digit"])
    assert "fixed test split of 360" in a.note
    full = torch.bincount(load_digits_dataset().labels["digit"], minlength=10).float()
    test_counts = torch.bincount(a.test.labels["digit"], minlength=10).float()
    assert torch.all((test_counts - 0.2 * full).abs() <= 1.0)  # stratified
    assert a.train.name == a.test.name == "builtin:digits"


# --- shapes --------------------------------------------------------------------------------


def test_shapes_are_deterministic_by_seed(shapes: Dataset):
    again = make_shapes(3000, seed=0)
    other = make_shapes(3000, seed=1)
    assert torch.equal(shapes.x, again.x)
    assert all(torch.equal(shapes.labels[k], again.labels[k]) for k in SHAPES_FACTORS)
    assert not torch.equal(shapes.x, other.x)
    assert not torch.equal(shapes.labels["shape"], other.labels["shape"])


def test_shapes_layout_and_every_class_present(shapes: Dataset):
    assert list(SHAPES_FACTORS) == ["shape", "colour", "size", "x", "y"]
    assert shapes.x.shape == (3000, 3, 16, 16) and shapes.x.dtype == torch.float32
    assert 0.0 <= shapes.x.min() and shapes.x.max() <= 1.0
    assert shapes.class_names == SHAPES_FACTORS
    for name, classes in SHAPES_FACTORS.items():
        counts = torch.bincount(shapes.labels[name], minlength=len(classes))
        assert len(counts) == len(classes) and counts.min() > 0.7 * 3000 / len(classes), name


def _foreground(x: torch.Tensor) -> torch.Tensor:
    return x.max(dim=1).values > 0.45  # the background is ~0.1 plus small noise


def test_shape_colours_differ(shapes: Dataset):
    fg = _foreground(shapes.x)
    means = []
    for c in range(4):
        sel = shapes.labels["colour"] == c
        pixels = shapes.x[sel].permute(0, 2, 3, 1)[fg[sel]]
        means.append(pixels.mean(dim=0))
    red, green, blue, yellow = means
    assert red[0] > 0.7 and red[1] < 0.3 and red[2] < 0.3
    assert green[1] > 0.7 and green[0] < 0.3
    assert blue[2] > 0.7 and blue[0] < 0.3
    assert yellow[0] > 0.7 and yellow[1] > 0.7 and yellow[2] < 0.3


def test_large_shapes_cover_more_pixels(shapes: Dataset):
    area = _foreground(shapes.x).flatten(1).sum(1).float()
    small, large = area[shapes.labels["size"] == 0], area[shapes.labels["size"] == 1]
    assert large.mean() > 2.5 * small.mean()
    assert small.min() > 0


def test_shapes_differ_in_fill_at_the_same_size(shapes: Dataset):
    area = _foreground(shapes.x).flatten(1).sum(1).float()
    large = shapes.labels["size"] == 1
    square, circle, triangle = (area[large & (shapes.labels["shape"] == s)].mean() for s in range(3))
    assert square > circle > triangle


def test_position_factors_move_the_centre_of_mass(shapes: Dataset):
    fg = _foreground(shapes.x).float()
    grid = torch.arange(16, dtype=torch.float32)
    cx = (fg.sum(1) * grid).sum(1) / fg.sum((1, 2))
    cy = (fg.sum(2) * grid).sum(1) / fg.sum((1, 2))
    mean_x = [cx[shapes.labels["x"] == i].mean() for i in range(3)]
    mean_y = [cy[shapes.labels["y"] == i].mean() for i in range(3)]
    assert mean_x[0] + 2 < mean_x[1] < mean_x[2] - 2
    assert mean_y[0] + 2 < mean_y[1] < mean_y[2] - 2


def test_shapes_stay_inside_the_image(shapes: Dataset):
    fg = _foreground(shapes.x)
    area = fg.flatten(1).sum(1)
    big_squares = (shapes.labels["size"] == 1) & (shapes.labels["shape"] == 0)
    at_border = fg[:, 0, :].any(1) | fg[:, -1, :].any(1) | fg[:, :, 0].any(1) | fg[:, :, -1].any(1)
    # Large squares are 8 or 9 pixels a side wherever they are: those touching the border are not cut.
    assert (big_squares & at_border).any()
    assert area[big_squares].min() >= 64 and area[big_squares].max() <= 81


def test_builtin_shapes_split_is_fixed():
    split = load_data("builtin:shapes", seed=3)
    assert (len(split.train), len(split.test)) == (6000, 1500)
    assert torch.equal(split.test.x, make_shapes(1500, seed=1).x)
    assert "6000" in split.note and "1500" in split.note


def test_make_shapes_other_size():
    ds = make_shapes(10, seed=0, size=32)
    assert ds.image_shape == (3, 32, 32)


# --- folders -------------------------------------------------------------------------------


def test_folder_with_class_subfolders(tmp_path: Path):
    root = _class_folder(tmp_path / "pets", {"dog": 3, "cat": 2})
    _write_png(root / "dog" / "big.png", 200, size=(12, 8))  # resized to the first image's size
    (root / "empty").mkdir()
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "._000.png").write_bytes(b"macOS metadata, not an image")  # hidden: skipped
    split = load_data(str(root), test_fraction=0.4)
    full = torch.cat([split.train.labels["label"], split.test.labels["label"]])
    assert split.train.class_names == {"label": ["cat", "dog"]}
    assert sorted(full.tolist()) == [0, 0, 1, 1, 1, 1]
    assert split.train.image_shape == (3, 4, 6)
    assert split.train.name == str(root) and not split.train.normalized
    first = data_mod._load_folder(str(root))
    assert first.x[0, :, 0, 0].tolist() == pytest.approx([0.0, 1.0, 7 / 255])  # cat/000.png, /255


def test_folder_unlabeled_grayscale(tmp_path: Path):
    for i in range(5):
        _write_png(tmp_path / f"img{i}.png", 51 * i, mode="L")
    ds = data_mod._load_folder(str(tmp_path))
    assert ds.labels == {} and ds.class_names == {}
    assert ds.x.shape == (5, 1, 4, 6)
    assert ds.x[:, 0, 0, 0].tolist() == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8])
    split = load_data(str(tmp_path), seed=1)
    assert (len(split.train), len(split.test)) == (4, 1)


def test_folder_mixed_modes_become_rgb(tmp_path: Path):
    _write_png(tmp_path / "a.png", 100, mode="L")
    _write_png(tmp_path / "b.jpg", 100)
    assert data_mod._load_folder(str(tmp_path)).image_shape == (3, 4, 6)


def test_folder_with_test_ref(tmp_path: Path):
    train = _class_folder(tmp_path / "train", {"a": 4, "b": 4})
    test = _class_folder(tmp_path / "test", {"a": 1, "b": 2})
    split = load_data(str(train), test_ref=str(test))
    assert (len(split.train), len(split.test)) == (8, 3)
    assert split.test.labels["label"].tolist() == [0, 1, 1]
    assert str(test) in split.note


def test_test_ref_with_other_classes_is_refused(tmp_path: Path):
    train = _class_folder(tmp_path / "train", {"a": 2, "b": 2})
    test = _class_folder(tmp_path / "test", {"a": 1, "c": 1})
    with pytest.raises(DataError, match="same classes"):
        load_data(str(train), test_ref=str(test))


def test_builtin_with_test_ref_keeps_fixed_train(tmp_path: Path):
    path = tmp_path / "t.npz"
    np.savez(path, x=np.zeros((3, 1, 8, 8), np.float32))
    split = load_data("builtin:digits", test_ref=str(path))
    assert (len(split.train), len(split.test)) == (1437, 3)


# --- held-out splits -----------------------------------------------------------------------


def test_hold_out_is_stratified_seeded_and_described(tmp_path: Path):
    path = tmp_path / "d.npz"
    y = np.repeat(np.arange(4), 50)
    np.savez(path, x=np.random.default_rng(0).normal(size=(200, 1, 4, 4)).astype(np.float32), y=y)
    a = load_data(str(path), seed=0)
    b = load_data(str(path), seed=0)
    c = load_data(str(path), seed=1)
    assert (len(a.train), len(a.test)) == (160, 40)
    assert a.note == f"Held out 20% (40 of 200 images, seed 0) of {path} for evaluation."
    assert torch.equal(a.test.x, b.test.x) and not torch.equal(a.test.x, c.test.x)
    assert torch.bincount(a.test.labels["label"]).tolist() == [10, 10, 10, 10]
    train_rows = {tuple(r) for r in a.train.x.flatten(1).tolist()}
    assert not train_rows & {tuple(r) for r in a.test.x.flatten(1).tolist()}


def test_hold_out_falls_back_to_random_with_singleton_classes(tmp_path: Path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((10, 1, 2, 2), np.float32), y=np.array([0] * 9 + [1]))
    split = load_data(str(path), test_fraction=0.3)
    assert (len(split.train), len(split.test)) == (7, 3)


def test_bad_test_fraction_and_too_few_images(tmp_path: Path):
    path = tmp_path / "one.npz"
    np.savez(path, x=np.zeros((1, 1, 2, 2), np.float32))
    with pytest.raises(DataError, match="test set"):
        load_data(str(path))
    with pytest.raises(ConfigError, match="between 0 and 1"):
        load_data(str(path), test_fraction=1.5)


# --- npz -----------------------------------------------------------------------------------


def test_npz_with_labels_and_class_names(tmp_path: Path):
    path = tmp_path / "d.npz"
    x = np.arange(6 * 3 * 2 * 2, dtype=np.float64).reshape(6, 3, 2, 2)
    np.savez(path, x=x, y=np.array([0, 1, 2, 0, 1, 2], np.uint8), class_names=np.array(["a", "b", "c"]))
    ds = data_mod._load_npz(str(path))
    assert ds.normalized and ds.x.dtype == torch.float32 and ds.image_shape == (3, 2, 2)
    assert torch.equal(ds.x, torch.from_numpy(x.astype(np.float32)))
    assert ds.labels["label"].dtype == torch.int64 and ds.class_names == {"label": ["a", "b", "c"]}


def test_npz_class_names_default_to_numbers(tmp_path: Path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 1, 2, 2), np.float32), y=np.array([0, 3, 1, 3]))
    assert data_mod._load_npz(str(path)).class_names == {"label": ["0", "1", "2", "3"]}


def _npz(tmp_path: Path, **arrays) -> str:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    return str(path)


X = np.zeros((4, 1, 2, 2), np.float32)


@pytest.mark.parametrize(
    ("arrays", "word"),
    [
        ({"y": np.array([0, 1])}, "no array 'x'"),
        ({"x": np.zeros((4, 2, 2), np.float32)}, "(N, C, H, W)"),
        ({"x": np.zeros((4, 1, 2, 2), np.int64)}, "float"),
        ({"x": np.zeros((0, 1, 2, 2), np.float32)}, "no images"),
        ({"x": np.full((4, 1, 2, 2), np.nan, np.float32)}, "NaN"),
        ({"x": X, "y": np.array([0, 1, 0])}, "one per image"),
        ({"x": X, "y": np.array([0.0, 1.0, 0.0, 1.0])}, "integers"),
        ({"x": X, "y": np.array([0, 1, 2, 1]), "class_names": np.array(["a", "b"])}, "out of range"),
        ({"x": X, "y": np.array([0, -1, 0, 1])}, "out of range"),
    ],
)
def test_bad_npz_contents(tmp_path: Path, arrays: dict, word: str):
    path = _npz(tmp_path, **arrays)
    with pytest.raises(DataError) as info:
        load_data(path)
    assert word in str(info.value) and "bad.npz" in str(info.value)


def test_npz_with_pickled_objects_is_not_unpickled(tmp_path: Path):
    path = _npz(tmp_path, x=X, class_names=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="not a readable .npz"):
        load_data(path)


@pytest.mark.parametrize("content", [b"", b"garbage that is not a zip", "truncated"])
def test_corrupt_npz(tmp_path: Path, content):
    path = tmp_path / "broken.npz"
    if content == "truncated":
        np.savez(path, x=np.random.default_rng(0).normal(size=(50, 1, 8, 8)).astype(np.float32))
        path.write_bytes(path.read_bytes()[:1000])
    else:
        path.write_bytes(content)
    with pytest.raises(DataError, match="broken.npz.*save it again"):
        load_data(str(path))


# --- other bad inputs ----------------------------------------------------------------------


def test_missing_path(tmp_path: Path):
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="does not exist"):
        load_data(str(tmp_path / "nowhere.npz"))
    with pytest.raises(DataError, match="No data was given"):
        load_data("  ")


def test_unreadable_file_type(tmp_path: Path):
    path = tmp_path / "data.csv"
    path.write_text("1,2,3\n")
    with pytest.raises(DataError, match="cannot read") as info:
        load_data(str(path))
    assert "data.csv" in str(info.value)


def test_folder_without_images(tmp_path: Path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "readme.txt").write_text("hi")
    with pytest.raises(DataError, match="no images"):
        load_data(str(tmp_path))


def test_corrupt_image(tmp_path: Path):
    _write_png(tmp_path / "good.png", 1)
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(DataError, match="bad.png.*corrupt"):
        load_data(str(tmp_path))


def test_truncated_image(tmp_path: Path):
    _write_png(tmp_path / "a.png", 1)
    noise = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "b.png")
    (tmp_path / "b.png").write_bytes((tmp_path / "b.png").read_bytes()[:500])
    with pytest.raises(DataError, match="b.png"):
        load_data(str(tmp_path))


def test_unknown_builtin_lists_the_known_ones():
    with pytest.raises(DataError, match="builtin:digits, builtin:shapes"):
        load_data("builtin:cifar")


# --- registry ------------------------------------------------------------------------------


def test_registry_lists_sources_and_accepts_new_ones(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(data_mod, "_SOURCES", list(data_mod._SOURCES))
    assert {"builtin:digits", "builtin:shapes", "<folder>", "<file.npz>"} <= set(list_data_sources())
    assert "handwritten" in list_data_sources(describe=True)[0]

    def tiny(ref: str) -> Dataset:
        n = int(ref.split(":")[1])
        return Dataset(ref, torch.zeros(n, 1, 2, 2), {}, {})

    register_data_source("tiny:", tiny, description="zeros")
    assert "tiny:" in list_data_sources()
    split = load_data("tiny:10", test_fraction=0.5)
    assert isinstance(split, DataSplit) and (len(split.train), len(split.test)) == (5, 5)


# --- prepare and to_pixels -----------------------------------------------------------------


def _pixels(c: int, h: int, w: int) -> Dataset:
    x = torch.linspace(0, 1, 2 * c * h * w).reshape(2, c, h, w)
    return Dataset("px", x, {"label": torch.tensor([0, 1])}, {"label": ["a", "b"]})


def test_prepare_normalizes_per_channel():
    ds = _pixels(3, 4, 4)
    spec = InputSpec(3, 4, 4, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    out = prepare(ds, spec)
    assert out.normalized and not ds.normalized
    mean, std = torch.tensor([0.5, 0.25, 0.0]).view(3, 1, 1), torch.tensor([0.5, 0.25, 2.0]).view(3, 1, 1)
    expected = (ds.x - mean) / std
    assert torch.allclose(out.x, expected)
    assert torch.equal(ds.x, _pixels(3, 4, 4).x)  # input untouched
    assert out.labels["label"].tolist() == [0, 1] and out.class_names == ds.class_names


def test_prepare_resizes_up_and_down():
    ds = Dataset("c", torch.full((1, 1, 8, 8), 0.3), {}, {})
    spec = InputSpec(1, 4, 4)
    assert prepare(ds, spec).x.shape == (1, 1, 4, 4)
    assert torch.allclose(prepare(ds, spec).x, torch.full((1, 1, 4, 4), 0.3))
    checker = torch.zeros(1, 1, 8, 8)
    checker[..., ::2, ::2] = checker[..., 1::2, 1::2] = 1.0
    down = prepare(Dataset("k", checker, {}, {}), spec).x
    assert torch.allclose(down, torch.full((1, 1, 4, 4), 0.5), atol=0.05)  # antialiased, not aliased
    up = prepare(Dataset("g", torch.tensor([[[[0.0, 1.0]]]]), {}, {}), InputSpec(1, 1, 4)).x
    assert up.flatten().tolist() == pytest.approx([0.0, 0.25, 0.75, 1.0])


def test_prepare_converts_channels():
    gray = Dataset("g", torch.full((2, 1, 3, 3), 0.4), {}, {})
    rgb = prepare(gray, InputSpec(3, 3, 3))
    assert rgb.x.shape == (2, 3, 3, 3) and torch.allclose(rgb.x, torch.full_like(rgb.x, 0.4))
    colour = torch.zeros(1, 3, 2, 2)
    colour[:, 0], colour[:, 1], colour[:, 2] = 1.0, 0.5, 0.0
    luma = prepare(Dataset("c", colour, {}, {}), InputSpec(1, 2, 2)).x
    assert luma.shape == (1, 1, 2, 2) and torch.allclose(luma, torch.full_like(luma, 0.299 + 0.5 * 0.587))
    with pytest.raises(DataError, match="channels"):
        prepare(Dataset("four", torch.zeros(1, 4, 2, 2), {}, {}), InputSpec(3, 2, 2))


def test_prepare_normalized_data_checks_shape_only():
    ds = Dataset("n.npz", torch.randn(3, 1, 8, 8), {}, {}, normalized=True)
    out = prepare(ds, InputSpec(1, 8, 8, mean=(0.5,), std=(0.5,)))
    assert torch.equal(out.x, ds.x) and out.normalized
    with pytest.raises(DataError, match=r"1x8x8.*3x32x32") as info:
        prepare(ds, InputSpec(3, 32, 32))
    assert "n.npz" in str(info.value)


def test_to_pixels_inverts_prepare():
    ds = _pixels(3, 5, 5)
    spec = InputSpec(3, 5, 5, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert torch.allclose(to_pixels(prepare(ds, spec).x, spec), ds.x, atol=1e-6)
    assert to_pixels(torch.full((3, 2, 2), 100.0), spec).max() == 1.0  # clamped; single image works
    assert to_pixels(torch.full((3, 2, 2), -100.0), spec).min() == 0.0


def test_digits_prepare_for_a_digits_teacher():
    split = load_data("builtin:digits")
    spec = InputSpec(1, 8, 8, mean=(0.5,), std=(0.5,))
    out = prepare(split.test, spec)
    assert out.x.min() == -1.0 and out.x.max() == 1.0


def test_subset_keeps_metadata(shapes: Dataset):
    sub = shapes.subset([3, 1])
    assert len(sub) == 2 and torch.equal(sub.x[1], shapes.x[1])
    assert sub.labels["colour"].tolist() == shapes.labels["colour"][[3, 1]].tolist()
    assert sub.class_names == shapes.class_names and sub.name == shapes.name
    assert len(shapes.subset(torch.tensor([0, 2, 4]))) == 3
