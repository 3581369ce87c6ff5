"""A teacher as users bring it: a Python factory, a state_dict saved with torch.save, a real
(non-trivial) normalization, and labelled ``.npz`` files already in the teacher's input space.

``make_own_teacher(folder)`` writes, into ``folder``:

- ``mynet.py``: the factory ``mynet:build`` (a small CNN for 3x16x16 RGB, 4 colour classes);
- ``mynet.pth``: its trained weights (``torch.save(state_dict)``), and ``mynet.json`` beside
  them, the input manifest (mean 0.3, std 0.2 per channel) that ``--weights`` reads;
- ``train.npz`` / ``test.npz``: builtin:shapes images dimmed to one of four brightness levels and
  normalized once, ``(pixels - 0.3) / 0.2``, with the level as label ``y`` and ``class_names``;
- ``teacher.onnx`` (+ ``teacher.onnx.json``): the same network in ONNX, its output named ``logits``;
- ``teacher.ts.pt`` (+ ``teacher.ts.pt.json``): the same network in TorchScript.

The label is an absolute brightness, so normalizing twice (mean 0.3 / std 0.2 is far from the
identity) changes the teacher's answers: every figure computed on these files says whether the
data path normalized once.
"""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

MEAN, STD = 0.3, 0.2
INPUT = "3,16,16:0.3,0.3,0.3:0.2,0.2,0.2"  # the --input flag that says the same as mynet.json
CLASSES = ["dim", "dark", "light", "bright"]  # how bright the whole image is: a task that reads absolute levels
_LEVELS = (0.3, 0.5, 0.7, 0.9)

NET_SOURCE = '''\
"""mynet: a small CNN for 16x16 RGB images (4 classes)."""
from torch import nn


def build():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 4),
    )
'''


@dataclass(frozen=True)
class OwnTeacher:
    folder: Path
    factory: str  # "mynet:build": importable with ``folder`` on sys.path
    weights: Path
    train: Path
    test: Path
    onnx: Path
    torchscript: Path

    def network(self) -> torch.nn.Module:
        """The teacher as a plain torch module, loaded by hand (no KF Studio code)."""
        net = _load_source(self.folder)
        net.load_state_dict(torch.load(self.weights, weights_only=True))
        return net.eval()

    def pixels_and_labels(self, which: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """The images of ``which`` back in pixels (0..1), and their labels."""
        with np.load(self.folder / f"{which}.npz") as npz:
            return torch.from_numpy(npz["x"]) * STD + MEAN, torch.from_numpy(npz["y"]).long()


def _dimmed(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` shapes images, each scaled to one of four brightness levels (+-0.06): images and levels."""
    from kfstudio.core.data.shapes import make_shapes

    generator = torch.Generator().manual_seed(seed)
    y = torch.randint(0, len(_LEVELS), (n,), generator=generator)
    level = torch.tensor(_LEVELS)[y] + (torch.rand(n, generator=generator) - 0.5) * 0.12
    return make_shapes(n, seed=seed).x * level.view(-1, 1, 1, 1), y


def _save_npz(path: Path, pixels: torch.Tensor, y: torch.Tensor) -> None:
    x = ((pixels - MEAN) / STD).numpy().astype(np.float32)
    np.savez(path, x=x, y=y.numpy().astype(np.int64), class_names=np.array(CLASSES))


def _train(net: torch.nn.Module, pixels: torch.Tensor, y: torch.Tensor) -> None:
    generator = torch.Generator().manual_seed(0)
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    x = (pixels - MEAN) / STD
    for _ in range(12):
        for idx in torch.randperm(len(x), generator=generator).split(64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(net(x[idx]), y[idx]).backward()
            opt.step()
    net.eval()


def make_own_teacher(folder: Path) -> OwnTeacher:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mynet.py").write_text(NET_SOURCE)
    spec = {"channels": 3, "height": 16, "width": 16, "mean": [MEAN] * 3, "std": [STD] * 3}
    train, test = _dimmed(600, seed=10), _dimmed(200, seed=11)
    _save_npz(folder / "train.npz", *train)
    _save_npz(folder / "test.npz", *test)
    torch.manual_seed(0)
    own = OwnTeacher(folder, "mynet:build", folder / "mynet.pth", folder / "train.npz", folder / "test.npz",
                     folder / "teacher.onnx", folder / "teacher.ts.pt")
    net = _load_source(folder)
    _train(net, *train)
    torch.save(net.state_dict(), own.weights)
    (folder / "mynet.json").write_text(json.dumps({"input": spec}))
    example = torch.zeros(2, 3, 16, 16)
    with warnings.catch_warnings():  # the legacy exporter, as users' older scripts still call it
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(net, example, str(own.onnx), input_names=["image"], output_names=["logits"], external_data=False,
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
    (folder / "teacher.onnx.json").write_text(json.dumps({"input": spec}))
    torch.jit.trace(net, example).save(str(own.torchscript))
    (folder / "teacher.ts.pt.json").write_text(json.dumps({"input": spec}))
    return own


def _load_source(folder: Path) -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("mynet_by_hand", folder / "mynet.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.build()
