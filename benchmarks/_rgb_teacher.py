"""A second 32x32 RGB teacher for the light-brick benchmarks, unlike the shapes-hard demo's: it names the
target's *shape* (triangle, L, T, semicircle: a factor no linear probe reads from the pixels), and its stem
keeps the full resolution, as CIFAR ResNets do, where the demo teacher halves it first.

``prepare(folder)`` trains it once (seeded; 10 epochs of 6 000 freshly drawn shapes-hard images, as the demo
teacher was trained) and writes what a user would bring: the weights (``rgb_shape.safetensors``), the
factory ``benchmarks._rgb_teacher:build`` and an input spec, and the data set's own 2 000 training and
1 000 test images as ``.npz`` files in the teacher's input space, labelled with the shape. It returns the
FactorizeConfig fields that name them.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from kfstudio.core.data.shapes_hard import SHAPES_HARD_FACTORS, TEST_IMAGES, TEST_SEED, TRAIN_IMAGES, TRAIN_SEED, make_shapes_hard
from kfstudio.core.students.backbones import conv_bn_relu

FACTOR = "shape"
EPOCHS, FRESH_IMAGES, FIRST_SEED = 10, 6000, 5000   # fresh images per epoch, drawn with seed FIRST_SEED + epoch


def build() -> nn.Module:
    """The factory a user would name: full-resolution stem (32 channels at 32x32), stages of 32 / 64 / 128."""
    return nn.Sequential(
        conv_bn_relu(3, 32), conv_bn_relu(32, 32),
        conv_bn_relu(32, 64, stride=2), conv_bn_relu(64, 64),
        conv_bn_relu(64, 128, stride=2), conv_bn_relu(128, 128),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, len(SHAPES_HARD_FACTORS[FACTOR])),
    )


def _normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)


def _train(mean: torch.Tensor, std: torch.Tensor, quick: bool) -> nn.Module:
    torch.manual_seed(0)
    net = build()
    epochs, batch = (1, 128) if quick else (EPOCHS, 128)
    steps = epochs * math.ceil(FRESH_IMAGES / batch)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.05, total_steps=steps, pct_start=0.15)
    net.train()
    for epoch in range(epochs):
        images = make_shapes_hard(FRESH_IMAGES, seed=FIRST_SEED + epoch)
        x, y = _normalize(images.x, mean, std), images.labels[FACTOR]
        order = torch.randperm(len(x), generator=torch.Generator().manual_seed(epoch))
        for i in range(0, len(x), batch):
            pick = order[i:i + batch]
            loss = nn.functional.cross_entropy(net(x[pick]), y[pick])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    return net.eval()


def prepare(folder: Path, quick: bool = False) -> dict:
    """Train the teacher into ``folder`` (once: a folder that has it is reused) and write the data;
    the FactorizeConfig fields that name them."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    first = make_shapes_hard(FRESH_IMAGES, seed=FIRST_SEED)
    mean, std = first.x.mean(dim=(0, 2, 3)), first.x.std(dim=(0, 2, 3))
    weights = folder / "rgb_shape.safetensors"
    if not weights.is_file():
        save_file(_train(mean, std, quick).state_dict(), str(weights))
    names = np.array(SHAPES_HARD_FACTORS[FACTOR])
    paths = {}
    for split, n, seed in (("train", TRAIN_IMAGES, TRAIN_SEED), ("test", TEST_IMAGES, TEST_SEED)):
        images = make_shapes_hard(n, seed=seed)
        paths[split] = folder / f"{split}.npz"
        np.savez(paths[split], x=_normalize(images.x, mean, std).numpy(), y=images.labels[FACTOR].numpy(),
                 class_names=names)
    spec = "3,32,32:" + ",".join(f"{v:.4f}" for v in mean.tolist()) + ":" + ",".join(f"{v:.4f}" for v in std.tolist())
    return {"teacher": "benchmarks._rgb_teacher:build", "teacher_weights": str(weights), "teacher_input": spec,
            "data": str(paths["train"]), "test_data": str(paths["test"])}
