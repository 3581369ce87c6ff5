"""The shipped demo teachers: their architectures, their files, and how to train them.

``kfstudio train-teacher`` retrains any of them deterministically in a minute or a few on a
CPU, so the weight files in ``resources/teachers`` can be reproduced by anyone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn import functional as F

from kfstudio.core.data.sources import random_shift
from kfstudio.core.errors import ConfigError, TeacherError
from kfstudio.core.runs import drain
from kfstudio.core.spec import InputSpec

DEMO_NAMES = ("digits", "shapes", "shapes-hard")
SHAPES_HEADS = ("shape", "colour", "size", "x")  # "y" is held back: a task the teacher never saw
# "shape" is held back: not linearly readable from the pixels, so a probe for it on frozen
# features measures what a network passed on (benchmarks/transfer.py), not what pixels show.
SHAPES_HARD_HEADS = ("rotation", "colour", "size", "x", "y")
# Its own images, apart from the data set's, drawn afresh every epoch (seed 1000 + epoch): with
# 2 000 images a teacher this size learns rotation to only ~40 %; a teacher saw more than its students.
SHAPES_HARD_TEACHER_IMAGES, SHAPES_HARD_TEACHER_SEED = 6000, 1000


def _block(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DigitsTeacherNet(nn.Module):
    """A small CNN for 8x8 digits: three stages (8x8, 4x4, 2x2) and a 10-way head."""

    def __init__(self) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(_block(1, 32, 1), _block(32, 32, 1))
        self.stage2 = nn.Sequential(_block(32, 64, 2), _block(64, 64, 1))
        self.stage3 = nn.Sequential(_block(64, 128, 2), _block(128, 128, 1))
        self.head = nn.Linear(128, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage3(self.stage2(self.stage1(x)))
        return self.head(x.mean(dim=(2, 3)))


class ShapesHardTeacherNet(nn.Module):
    """A small CNN for 32x32 shapes-hard: a stride-2 stem, three stages, one head per known factor."""

    def __init__(self, heads: dict[str, int]) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(_block(3, 32, 2), _block(32, 32, 1))
        self.stage2 = nn.Sequential(_block(32, 64, 2), _block(64, 64, 1))
        self.stage3 = nn.Sequential(_block(64, 128, 2), _block(128, 128, 1))
        self.heads = nn.ModuleDict({name: nn.Linear(128 * 4, n) for name, n in heads.items()})

    def head_input(self, x: torch.Tensor) -> torch.Tensor:
        """What every head reads: the last stage pooled to 2x2 (where things are), flattened."""
        return F.adaptive_avg_pool2d(self.stage3(self.stage2(self.stage1(x))), 2).flatten(1)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = self.head_input(x)
        return {name: head(h) for name, head in self.heads.items()}


class ShapesTeacherNet(nn.Module):
    """A small CNN for 16x16 shapes with one head per known factor."""

    def __init__(self, heads: dict[str, int]) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(_block(3, 32, 1), _block(32, 32, 2))
        self.stage2 = nn.Sequential(_block(32, 64, 1), _block(64, 64, 2))
        self.stage3 = nn.Sequential(_block(64, 128, 1), _block(128, 128, 2))
        self.heads = nn.ModuleDict({name: nn.Linear(128 * 4, n) for name, n in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        # A 2x2 pooled map keeps where things are; the position heads need it.
        h = F.adaptive_avg_pool2d(self.stage3(self.stage2(self.stage1(x))), 2).flatten(1)
        return {name: head(h) for name, head in self.heads.items()}


def _class_names(name: str) -> dict[str, list[str]]:
    """The classes of every output of demo teacher ``name``."""
    if name == "digits":
        return {"digit": [str(i) for i in range(10)]}
    if name == "shapes":
        from kfstudio.core.data.shapes import SHAPES_FACTORS
        return {n: list(SHAPES_FACTORS[n]) for n in SHAPES_HEADS}
    from kfstudio.core.data.shapes_hard import SHAPES_HARD_FACTORS
    return {n: list(SHAPES_HARD_FACTORS[n]) for n in SHAPES_HARD_HEADS}


def _unknown(name: str) -> TeacherError:
    known = ", ".join(f"builtin:{n}" for n in DEMO_NAMES)
    return TeacherError(f"There is no built-in teacher '{name}'; choose one of {known}.")


def build(name: str) -> nn.Module:
    if name == "digits":
        return DigitsTeacherNet()
    if name == "shapes":
        return ShapesTeacherNet({n: len(c) for n, c in _class_names(name).items()})
    if name == "shapes-hard":
        return ShapesHardTeacherNet({n: len(c) for n, c in _class_names(name).items()})
    raise _unknown(name)


def resources_dir() -> Path:
    return Path(str(resources.files("kfstudio.resources")))


def shipped_files(name: str) -> tuple[Path, dict]:
    """The weights file and manifest of a shipped demo teacher."""
    if name not in DEMO_NAMES:
        raise _unknown(name)
    folder = resources_dir() / "teachers"
    weights, manifest = folder / f"{name}.safetensors", folder / f"{name}.json"
    if not weights.is_file() or not manifest.is_file():
        raise TeacherError(f"The demo teacher '{name}' is missing from {folder}; run: kfstudio train-teacher {name}.")
    return weights, json.loads(manifest.read_text())


@dataclass(frozen=True)
class TeacherTrainingReport:
    epoch: int
    epochs: int
    loss: float
    test_accuracy: dict[str, float]


@dataclass
class TrainedTeacher:
    module: nn.Module
    manifest: dict


def _recipe(name: str) -> dict:
    if name == "digits":
        return {"epochs": 40, "lr": 0.05, "batch": 64}
    if name == "shapes":
        return {"epochs": 12, "lr": 0.05, "batch": 128}
    if name == "shapes-hard":
        # No shift augmentation: a pixel's shift moves a centre across the x/y third boundaries.
        return {"epochs": 10, "lr": 0.05, "batch": 128, "augment": False, "fresh": SHAPES_HARD_TEACHER_IMAGES}
    raise ConfigError(f"There is no built-in teacher '{name}'; choose one of {', '.join(DEMO_NAMES)}.")


def _demo_data(name: str):
    """(training set, test set, input spec): the data set's own split; shapes-hard's teacher
    trains on images of its own (``_epoch_train``), its input spec measured on the first epoch's."""
    from kfstudio.core.data.sources import load_data, prepare
    split = load_data(f"builtin:{name}")
    train = _fresh_images(0) if name == "shapes-hard" else split.train
    spec = _demo_spec(name, train)
    return prepare(train, spec), prepare(split.test, spec), spec


def _fresh_images(epoch: int):
    from kfstudio.core.data.shapes_hard import make_shapes_hard
    return make_shapes_hard(SHAPES_HARD_TEACHER_IMAGES, seed=SHAPES_HARD_TEACHER_SEED + epoch)


def _epoch_train(recipe: dict, train, spec: InputSpec, epoch: int):
    """The images of one epoch: the same set every epoch, or (``fresh``) newly drawn ones."""
    if not recipe.get("fresh") or epoch == 0:
        return train
    from kfstudio.core.data.sources import prepare
    return prepare(_fresh_images(epoch), spec)


def _demo_spec(name: str, train) -> InputSpec:
    x = train.x
    mean = x.mean(dim=(0, 2, 3)).tolist()
    std = x.std(dim=(0, 2, 3)).tolist()
    c, h, w = train.image_shape
    return InputSpec(c, h, w, tuple(round(m, 4) for m in mean), tuple(round(s, 4) for s in std))


def _logits(module: nn.Module, x: torch.Tensor, output_names: list[str]) -> dict[str, torch.Tensor]:
    out = module(x)
    return out if isinstance(out, dict) else {output_names[0]: out}


def _accuracy(module: nn.Module, test, output_names: list[str]) -> dict[str, float]:
    module.eval()
    with torch.no_grad():
        out = _logits(module, test.x, output_names)
    return {n: float((out[n].argmax(1) == test.labels[n]).float().mean()) for n in output_names}


def iter_train_demo_teacher(name: str, seed: int = 0) -> Iterator[TeacherTrainingReport]:
    """Train a demo teacher, yielding one report per epoch; returns a ``TrainedTeacher``."""
    recipe = _recipe(name)
    torch.manual_seed(seed)
    train, test, spec = _demo_data(name)
    module = build(name)
    output_names = list(_class_names(name))
    steps = recipe["epochs"] * ((len(train) + recipe["batch"] - 1) // recipe["batch"])  # fresh sets: same size
    optimizer = torch.optim.SGD(module.parameters(), lr=recipe["lr"], momentum=0.9, weight_decay=5e-4, nesterov=True)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=recipe["lr"], total_steps=steps)
    generator = torch.Generator().manual_seed(seed)
    for epoch in range(recipe["epochs"]):
        module.train()
        total = 0.0
        train = _epoch_train(recipe, train, spec, epoch)
        for index in torch.randperm(len(train), generator=generator).split(recipe["batch"]):
            x = random_shift(train.x[index], generator) if recipe.get("augment", True) else train.x[index]
            out = _logits(module, x, output_names)
            loss = sum(F.cross_entropy(out[n], train.labels[n][index]) for n in output_names)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += float(loss.detach()) * len(index)
        yield TeacherTrainingReport(epoch + 1, recipe["epochs"], total / len(train), _accuracy(module, test, output_names))
    return TrainedTeacher(module.eval(), _manifest(name, spec, output_names, module, test, seed))


def _manifest(name: str, spec: InputSpec, output_names: list[str], module: nn.Module, test, seed: int) -> dict:
    class_names = _class_names(name)
    extra = {} if name != "shapes-hard" else {
        "held_back": "shape", "training_data": f"{SHAPES_HARD_TEACHER_IMAGES} freshly drawn images per epoch "
        f"(seeds {SHAPES_HARD_TEACHER_SEED} + epoch), none of builtin:shapes-hard's own"}
    return {
        "schema_version": 1,
        "kind": "teacher",
        "name": name,
        "architecture": type(module).__name__,
        "input": spec.to_dict(),
        "outputs": output_names,
        "class_names": class_names,
        "metrics": {"test_accuracy": _accuracy(module, test, output_names), "test_images": len(test)},
        "trained_by": f"kfstudio train-teacher {name} --seed {seed}",
        "parameters": sum(p.numel() for p in module.parameters()),
        **extra,
    }


def train_demo_teacher(name: str, seed: int = 0,
                       on_report: Callable[[TeacherTrainingReport], None] | None = None) -> TrainedTeacher:
    return drain(iter_train_demo_teacher(name, seed), on_report)
