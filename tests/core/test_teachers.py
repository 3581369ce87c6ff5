"""Teacher loaders: every format gives the same Teacher, and every bad file a TeacherError in words."""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from helpers import TinyCNN, TwoHeadCNN
from kfstudio.core.teachers import demos as demo_teachers
from kfstudio.core.data.sources import load_digits_dataset, prepare
from kfstudio.core.data.shapes import SHAPES_FACTORS
from kfstudio.core.errors import TeacherError
from kfstudio.core.spec import InputSpec
from kfstudio.core.tasks import HEAD, resolve_tasks
from kfstudio.core.teachers.loaders import (
    TeacherOptions,
    auto_taps,
    file_sha256,
    list_teacher_loaders,
    load_teacher,
)

SPEC = InputSpec(1, 8, 8)


# ---------------------------------------------------------------- tiny teachers


class DictHeadCNN(TwoHeadCNN):
    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        p = self.stages(x)[1].mean(dim=(2, 3))
        return {"shape": self.fc(p), "colour": self.fc2(p)}


class NotWeights:
    """A custom class: torch.save pickles it by reference, weights_only loading must refuse it."""

    def __init__(self) -> None:
        self.payload = [1, 2, 3]


class Exploit:
    """A pickle that would create a folder if it were ever unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


def _net(cls=TinyCNN, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return cls().eval()


def _x(n: int = 5, shape=(1, 8, 8), seed: int = 1) -> torch.Tensor:
    return torch.randn(n, *shape, generator=torch.Generator().manual_seed(seed))


def _corrupt(path: Path) -> Path:
    path.write_bytes(bytes(range(256)) * 8)
    return path


def _truncate(path: Path) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _teacher_error(ref: str, options: TeacherOptions | None = None) -> str:
    with pytest.raises(TeacherError) as info:
        load_teacher(ref, options or TeacherOptions(), allow_code=True)
    return str(info.value)


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


def _onnx(model: nn.Module, path: Path, *, output_names=("logits",), dynamic=True, spatial=False) -> Path:
    axes = {"image": {0: "batch", **({2: "h", 3: "w"} if spatial else {})}} if dynamic else None
    _quiet(torch.onnx.export, model, (_x(2),), str(path), dynamo=False, external_data=False,
           input_names=["image"], output_names=list(output_names), dynamic_axes=axes)
    return path


# ---------------------------------------------------------------- built-in demo teachers


def test_builtin_digits_teacher():
    teacher = load_teacher("builtin:digits", allow_code=True)
    assert teacher.output_names == ["digit"]
    assert teacher.class_names == {"digit": [str(i) for i in range(10)]}
    assert teacher.input_spec.shape == (1, 8, 8)
    assert teacher.input_spec.mean == pytest.approx((0.3054,), abs=1e-3)
    assert teacher.input_spec.std[0] > 0
    x = _x(4)
    assert teacher.outputs(x)["digit"].shape == (4, 10)
    feats = teacher.features(x)
    assert isinstance(feats, list) and [tuple(f.shape) for f in feats] == [(4, 32), (4, 64), (4, 128)]
    assert "stage1, stage2, stage3" in teacher.feature_note
    weights, _ = demo_teachers.shipped_files("digits")
    assert teacher.sha256 == file_sha256(weights)
    assert teacher.module is not None and not teacher.module.training
    assert not any(p.requires_grad for p in teacher.module.parameters())
    assert "test_accuracy" in teacher.metrics
    assert "digit (10 classes)" in teacher.describe()


def test_builtin_digits_teacher_reads_digits():
    teacher = load_teacher("builtin:digits", allow_code=True)
    ds = prepare(load_digits_dataset().subset(list(range(300))), teacher.input_spec)
    pred = teacher.outputs(ds.x)["digit"].argmax(1)
    assert float((pred == ds.labels["digit"]).float().mean()) > 0.9


def test_builtin_shapes_teacher():
    teacher = load_teacher("builtin:shapes", allow_code=True)
    assert teacher.output_names == list(demo_teachers.SHAPES_HEADS)
    assert teacher.class_names == {n: SHAPES_FACTORS[n] for n in demo_teachers.SHAPES_HEADS}
    assert teacher.input_spec.shape == (3, 16, 16)
    outs = teacher.outputs(_x(3, (3, 16, 16)))
    assert {k: v.shape[1] for k, v in outs.items()} == {"shape": 3, "colour": 4, "size": 2, "x": 3}
    feats = teacher.features(_x(3, (3, 16, 16)))
    assert len(feats) == 3 and all(f.dim() == 2 and f.shape[0] == 3 for f in feats)
    tasks = resolve_tasks(None, teacher.class_names)
    assert [t.name for t in tasks] == ["shape", "colour", "size", "x"] and {t.kind for t in tasks} == {HEAD}


def test_auto_taps_picks_the_last_layer_at_each_resolution():
    assert auto_taps(demo_teachers.build("digits"), torch.zeros(2, 1, 8, 8)) == ["stage1", "stage2", "stage3"]
    taps = auto_taps(demo_teachers.build("shapes"), torch.zeros(2, 3, 16, 16))
    modules = dict(demo_teachers.build("shapes").named_modules())
    assert len(taps) == 3 and all(t in modules for t in taps)
    assert taps[-1] == "stage3"  # the deepest tap is the last stage
    assert auto_taps(TinyCNN(), _x(2)) == ["conv1", "conv2"]


def test_explicit_taps_and_an_unknown_tap():
    teacher = load_teacher("builtin:digits", TeacherOptions(taps=("stage2",)), allow_code=True)
    assert [tuple(f.shape) for f in teacher.features(_x(2))] == [(2, 64)]
    assert "no layer 'stage9'" in _teacher_error("builtin:digits", TeacherOptions(taps=("stage9",)))


def test_unknown_builtin_and_unknown_format():
    assert "builtin:digits" in _teacher_error("builtin:mnist")
    message = _teacher_error("model.h5")
    assert "Cannot tell" in message and ".onnx" in message


def test_the_loader_registry_lists_every_format():
    names = [loader.name for loader in list_teacher_loaders()]
    for expected in ("a Python factory", "TorchScript", "torch.export", "ONNX", "built-in demo"):
        assert expected in names


# ---------------------------------------------------------------- package.module:function factories

FACTORY_SOURCE = '''
import torch
from torch import nn


class FactoryNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.mean(dim=(2, 3)))


def make():
    torch.manual_seed(1234)  # a different initialisation from the saved weights
    return FactoryNet()


def not_a_module():
    return 42
'''


@pytest.fixture
def factory(tmp_path, monkeypatch):
    """A tiny module ``kf_factory_teacher`` on sys.path; returns (ref, trained net with the same layout)."""
    folder = tmp_path / "pkg"
    folder.mkdir()
    (folder / "kf_factory_teacher.py").write_text(FACTORY_SOURCE)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "kf_factory_teacher", raising=False)
    trained = _net(TinyCNN, seed=0)
    return "kf_factory_teacher:make", trained


def test_factory_with_pt_state_dict(factory, tmp_path):
    ref, trained = factory
    weights = tmp_path / "w.pt"
    torch.save(trained.state_dict(), weights)
    teacher = load_teacher(ref, TeacherOptions(weights=str(weights), input_spec=SPEC), allow_code=True)
    x = _x()
    torch.testing.assert_close(teacher.outputs(x)["output"], trained(x))
    assert teacher.class_names == {"output": ["0", "1", "2"]}
    assert teacher.sha256 == file_sha256(weights)
    assert teacher.name == "make"
    feats = teacher.features(x)
    assert [tuple(f.shape) for f in feats] == [(5, 4), (5, 8)]
    torch.testing.assert_close(feats[0], trained.conv1(x).mean(dim=(2, 3)))  # the tapped module's output
    assert "conv1, conv2" in teacher.feature_note


def test_factory_features_are_the_pooled_tapped_layers(factory, tmp_path):
    ref, trained = factory
    weights = tmp_path / "w.pt"
    torch.save(trained.state_dict(), weights)
    teacher = load_teacher(ref, TeacherOptions(weights=str(weights), input_spec=SPEC, taps=("conv2",)), allow_code=True)
    x = _x()
    (feat,) = teacher.features(x)
    torch.testing.assert_close(feat, trained.conv2(torch.relu(trained.conv1(x))).mean(dim=(2, 3)))


def test_factory_with_safetensors_weights_and_a_manifest(factory, tmp_path):
    from safetensors.torch import save_file

    ref, trained = factory
    weights = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(weights))
    (tmp_path / "w.json").write_text(json.dumps({
        "input": {"channels": 1, "height": 8, "width": 8, "mean": [0.5], "std": [0.25]},
        "class_names": {"output": ["cat", "dog", "bird"]},
        "metrics": {"test_accuracy": {"output": 0.75}},
    }))
    teacher = load_teacher(ref, TeacherOptions(weights=str(weights)), allow_code=True)
    assert teacher.input_spec == InputSpec(1, 8, 8, (0.5,), (0.25,))
    assert teacher.class_names == {"output": ["cat", "dog", "bird"]}
    assert teacher.metrics == {"test_accuracy": {"output": 0.75}}
    x = _x()
    torch.testing.assert_close(teacher.outputs(x)["output"], trained(x))


def test_factory_accepts_a_checkpoint_dict_with_state_dict(factory, tmp_path):
    ref, trained = factory
    weights = tmp_path / "ckpt.pth"
    torch.save({"state_dict": trained.state_dict(), "epoch": 3}, weights)
    teacher = load_teacher(ref, TeacherOptions(weights=str(weights), input_spec=SPEC), allow_code=True)
    torch.testing.assert_close(teacher.outputs(_x())["output"], trained(_x()))


def test_factory_without_weights_uses_its_own_initialisation(factory):
    ref, _ = factory
    teacher = load_teacher(ref, TeacherOptions(input_spec=SPEC), allow_code=True)
    assert teacher.outputs(_x())["output"].shape == (5, 3)


def test_factory_errors(factory):
    ref, _ = factory
    assert "Cannot find the function 'nope'" in _teacher_error("kf_factory_teacher:nope", TeacherOptions(input_spec=SPEC))
    assert "'kf_no_such_module'" in _teacher_error("kf_no_such_module:make", TeacherOptions(input_spec=SPEC))
    assert "not a torch nn.Module" in _teacher_error("kf_factory_teacher:not_a_module")
    message = _teacher_error(ref)
    assert "input size" in message and "--input" in message
    message = _teacher_error(ref, TeacherOptions(input_spec=InputSpec(3, 8, 8)))
    assert "does not run on inputs of size (3, 8, 8)" in message


def test_factory_weight_file_errors(factory, tmp_path):
    ref, trained = factory

    def error(path: Path) -> str:
        return _teacher_error(ref, TeacherOptions(weights=str(path), input_spec=SPEC))

    assert "does not exist" in error(tmp_path / "missing.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    assert "is empty" in error(tmp_path / "empty.pt")
    assert "not a plain weights file" in error(_corrupt(tmp_path / "corrupt.pt"))
    good = tmp_path / "good.pt"
    torch.save(trained.state_dict(), good)
    assert "not a plain weights file" in error(_truncate(good))

    torch.save(NotWeights(), tmp_path / "code.pt")
    message = error(tmp_path / "code.pt")
    assert "not a plain weights file" in message and "code" in message

    torch.save({"conv1.weight": torch.zeros(1), "note": "text"}, tmp_path / "mixed.pt")
    assert "state_dict" in error(tmp_path / "mixed.pt")

    other = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Linear(2, 2))
    torch.save(other.state_dict(), tmp_path / "other.pt")
    assert "do not fit" in error(tmp_path / "other.pt")
    shapes_wrong = {k: torch.zeros(*(s + 1 for s in v.shape)) for k, v in trained.state_dict().items()}
    torch.save(shapes_wrong, tmp_path / "wrong.pt")
    assert "do not fit" in error(tmp_path / "wrong.pt")


def test_factory_safetensors_errors_name_the_file(factory, tmp_path):
    from safetensors.torch import save_file

    ref, trained = factory
    corrupt = _corrupt(tmp_path / "bad.safetensors")
    for path in (corrupt, tmp_path / "half.safetensors"):
        if path.name == "half.safetensors":
            save_file({k: v.contiguous() for k, v in trained.state_dict().items()}, str(path))
            _truncate(path)
        message = _teacher_error(ref, TeacherOptions(weights=str(path), input_spec=SPEC))
        assert path.name in message and "safetensors" in message


def test_a_pickle_with_code_is_never_run(factory, tmp_path):
    ref, _ = factory
    marker = tmp_path / "pwned"
    torch.save(Exploit(marker), tmp_path / "exploit.pt")
    with pytest.raises(TeacherError):
        load_teacher(ref, TeacherOptions(weights=str(tmp_path / "exploit.pt"), input_spec=SPEC), allow_code=True)
    with pytest.raises(TeacherError):
        load_teacher(str(tmp_path / "exploit.pt"), TeacherOptions(input_spec=SPEC), allow_code=True)  # as TorchScript
    assert not marker.exists()


# ---------------------------------------------------------------- TorchScript


def test_torchscript_scripted_with_a_manifest(tmp_path):
    net = _net()
    path = tmp_path / "tiny.pt"
    _quiet(lambda: torch.jit.script(net).save(str(path)))
    (tmp_path / "tiny.json").write_text(json.dumps({"input": SPEC.to_dict(), "class_names": {"output": ["a", "b", "c"]}}))
    teacher = load_teacher(str(path), allow_code=True)
    assert teacher.input_spec == SPEC
    assert teacher.class_names == {"output": ["a", "b", "c"]}
    assert teacher.name == "tiny"
    x = _x()
    torch.testing.assert_close(teacher.outputs(x)["output"], net(x))
    # TorchScript cannot be hooked: the outputs stand in for features, and the note says so
    (feat,) = teacher.features(x)
    assert feat.dim() == 2 and feat.shape == (5, 3)
    assert "no intermediate features" in teacher.feature_note


def test_torchscript_traced_with_input_option_and_named_manifest(tmp_path):
    net = _net()
    path = tmp_path / "traced.ts"
    _quiet(lambda: torch.jit.trace(net, _x(2)).save(str(path)))
    teacher = load_teacher(str(path), TeacherOptions(input_spec=SPEC), allow_code=True)
    torch.testing.assert_close(teacher.outputs(_x())["output"], net(_x()))
    # a manifest named model.ts.json is found too
    (tmp_path / "traced.ts.json").write_text(json.dumps({"input": {"channels": 1, "height": 8, "width": 8}}))
    assert load_teacher(str(path), allow_code=True).input_spec == SPEC


def test_torchscript_multi_output_gives_one_task_per_named_output(tmp_path):
    net = _net(TwoHeadCNN)
    path = tmp_path / "two.pt"
    _quiet(lambda: torch.jit.script(net).save(str(path)))
    unnamed = load_teacher(str(path), TeacherOptions(input_spec=SPEC), allow_code=True)
    assert unnamed.output_names == ["output0", "output1"]
    (tmp_path / "two.json").write_text(json.dumps({"input": SPEC.to_dict(), "outputs": ["shape", "colour"]}))
    teacher = load_teacher(str(path), allow_code=True)
    assert {k: len(v) for k, v in teacher.class_names.items()} == {"shape": 3, "colour": 2}
    tasks = resolve_tasks(None, teacher.class_names)
    assert [(t.name, t.kind, t.num_outputs) for t in tasks] == [("shape", HEAD, 3), ("colour", HEAD, 2)]
    outs = teacher.outputs(_x())
    torch.testing.assert_close(outs["colour"], net(_x())[1])


def test_torchscript_dict_outputs_keep_their_names(tmp_path):
    path = tmp_path / "dict.pt"
    _quiet(lambda: torch.jit.script(_net(DictHeadCNN)).save(str(path)))
    teacher = load_teacher(str(path), TeacherOptions(input_spec=SPEC), allow_code=True)
    assert sorted(teacher.output_names) == ["colour", "shape"]


def test_torchscript_errors(tmp_path):
    path = tmp_path / "tiny.pt"
    _quiet(lambda: torch.jit.script(_net()).save(str(path)))
    message = _teacher_error(str(path))
    assert "input size" in message and "--input" in message

    assert "does not exist" in _teacher_error(str(tmp_path / "missing.pt"))
    (tmp_path / "empty.ts").write_bytes(b"")
    assert "is empty" in _teacher_error(str(tmp_path / "empty.ts"))
    options = TeacherOptions(input_spec=SPEC)
    for bad in (_corrupt(tmp_path / "corrupt.pt"), _truncate(path)):
        assert "not a TorchScript model" in _teacher_error(str(bad), options)

    # plain weights given as the teacher: the message says how to give a factory instead
    torch.save(_net().state_dict(), tmp_path / "weights.pt")
    message = _teacher_error(str(tmp_path / "weights.pt"), options)
    assert "not a TorchScript model" in message and "--weights weights.pt" in message
    torch.save(NotWeights(), tmp_path / "code.pt")
    assert "not a TorchScript model" in _teacher_error(str(tmp_path / "code.pt"), options)

    good = tmp_path / "ok.pt"
    _quiet(lambda: torch.jit.script(_net()).save(str(good)))
    (tmp_path / "ok.json").write_text("{not json")
    assert "not valid JSON" in _teacher_error(str(good))
    (tmp_path / "ok.json").write_text(json.dumps({"input": SPEC.to_dict(), "class_names": {"output": ["a"]}}))
    assert "3 classes but 1 class names" in _teacher_error(str(good))


# ---------------------------------------------------------------- torch.export (.pt2)


@pytest.fixture(scope="module")
def pt2_file(tmp_path_factory):
    net = _net(TwoHeadCNN)
    path = tmp_path_factory.mktemp("pt2") / "two.pt2"
    program = _quiet(torch.export.export, net, (_x(2),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(path))
    return path, net


def test_torch_export_program_infers_its_input(pt2_file):
    path, net = pt2_file
    teacher = load_teacher(str(path), allow_code=True)
    assert teacher.input_spec == SPEC
    assert teacher.output_names == ["output0", "output1"]
    x = _x(7)
    outs = teacher.outputs(x)
    torch.testing.assert_close(outs["output0"], net(x)[0])
    torch.testing.assert_close(outs["output1"], net(x)[1])
    (feat,) = teacher.features(x)
    assert feat.shape == (7, 5)
    assert len(resolve_tasks(None, teacher.class_names)) == 2


def test_torch_export_errors(pt2_file, tmp_path):
    path, _ = pt2_file
    assert "does not exist" in _teacher_error(str(tmp_path / "missing.pt2"))
    (tmp_path / "empty.pt2").write_bytes(b"")
    assert "is empty" in _teacher_error(str(tmp_path / "empty.pt2"))
    corrupt = _corrupt(tmp_path / "corrupt.pt2")
    half = tmp_path / "half.pt2"
    half.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    for bad in (corrupt, half):
        message = _teacher_error(str(bad))
        assert "torch.export" in message and bad.name in message


# ---------------------------------------------------------------- ONNX


def test_onnx_infers_its_input_and_exposes_inner_feature_maps(tmp_path):
    net = _net()
    path = _onnx(net, tmp_path / "tiny.onnx")
    teacher = load_teacher(str(path), allow_code=True)
    assert teacher.input_spec == SPEC
    assert teacher.output_names == ["logits"]
    assert teacher.module is None
    x = _x(6)
    torch.testing.assert_close(teacher.outputs(x)["logits"], net(x), atol=1e-5, rtol=1e-4)
    feats = teacher.features(x)
    h1, h2 = net.stages(x)
    assert [tuple(f.shape) for f in feats] == [(6, 4), (6, 8)]
    torch.testing.assert_close(feats[0], h1.mean(dim=(2, 3)), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(feats[1], h2.mean(dim=(2, 3)), atol=1e-5, rtol=1e-4)
    assert "ONNX tensors" in teacher.feature_note
    assert teacher.sha256 == file_sha256(path)


def test_onnx_multi_output_gives_one_task_per_named_output(tmp_path):
    net = _net(TwoHeadCNN)
    path = _onnx(net, tmp_path / "two.onnx", output_names=("shape", "colour"))
    (tmp_path / "two.onnx.json").write_text(json.dumps({"class_names": {"colour": ["red", "blue"]}}))
    teacher = load_teacher(str(path), allow_code=True)
    assert teacher.class_names == {"shape": ["0", "1", "2"], "colour": ["red", "blue"]}
    tasks = resolve_tasks(None, teacher.class_names)
    assert [(t.name, t.kind) for t in tasks] == [("shape", HEAD), ("colour", HEAD)]
    torch.testing.assert_close(teacher.outputs(_x())["colour"], net(_x())[1], atol=1e-5, rtol=1e-4)


def test_onnx_with_free_spatial_size_needs_an_input_spec(tmp_path):
    path = _onnx(_net(), tmp_path / "free.onnx", spatial=True)
    message = _teacher_error(str(path))
    assert "input size" in message and "--input" in message
    teacher = load_teacher(str(path), TeacherOptions(input_spec=InputSpec(1, 12, 12)), allow_code=True)
    assert teacher.outputs(_x(2, (1, 12, 12)))["logits"].shape == (2, 3)


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_a_fixed_batch_size_teacher_runs_any_batch(tmp_path, fmt):
    net = _net()
    if fmt == "onnx":
        path = _onnx(net, tmp_path / "fixed.onnx", dynamic=False)  # exported with batch 2, no dynamic axes
    else:
        path = tmp_path / "fixed.pt2"
        torch.export.save(_quiet(torch.export.export, net, (_x(2),)), str(path))  # batch 2 is specialised
    teacher = load_teacher(str(path), allow_code=True)
    x = _x(5)
    torch.testing.assert_close(next(iter(teacher.outputs(x).values())), net(x), atol=1e-5, rtol=1e-4)


def test_a_huge_fixed_batch_is_refused_before_anything_is_allocated():
    from kfstudio.core.teachers.loaders import teacher_from_module

    with pytest.raises(TeacherError, match="batches of exactly 1000000000"):  # a crafted file's batch size
        teacher_from_module(_net(), name="n", ref="n.pt2", spec=SPEC, sha256="", options=TeacherOptions(),
                            manifest={}, fixed_batch=10**9)


def test_onnx_errors(tmp_path):
    assert "does not exist" in _teacher_error(str(tmp_path / "missing.onnx"))
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert "is empty" in _teacher_error(str(tmp_path / "empty.onnx"))
    corrupt = _corrupt(tmp_path / "corrupt.onnx")
    half = _truncate(_onnx(_net(), tmp_path / "half.onnx"))
    for bad in (corrupt, half):
        message = _teacher_error(str(bad))
        assert "not a readable ONNX model" in message and bad.name in message
    good = _onnx(_net(), tmp_path / "good.onnx")
    message = _teacher_error(str(good), TeacherOptions(input_spec=InputSpec(3, 8, 8)))
    assert "does not run on inputs of size (3, 8, 8)" in message
