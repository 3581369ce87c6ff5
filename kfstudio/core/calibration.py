"""Calibrating a run's one-vs-rest bricks as detectors, on training images held out for it.

A one-vs-rest brick scores near 100 % inside its group's argmax, but used alone its logit is
a detector whose zero means nothing (``kfstudio.core.measures.detection``). So a run of
one-vs-rest bricks keeps a seeded slice of its training images out of training
(``hold_out``); after training each brick's threshold is fitted there and its AUC and
balanced accuracy at that threshold measured on the test split (``calibrate``). The test
images never choose a threshold.
"""

from __future__ import annotations

from typing import Sequence

import torch

from kfstudio.core.data.feeds import network_logits
from kfstudio.core.measures.detection import Detector
from kfstudio.core.tasks import ONE_VS_REST, Task

CALIBRATION_FRACTION = 0.1  # of the training images, for runs with one-vs-rest bricks
MAX_CALIBRATION_IMAGES = 5000  # enough to place a threshold; more would only take training images away
MIN_CALIBRATION_IMAGES = 20  # fewer hold too few images of each class to fit anything


def needs_calibration(tasks: Sequence[Task]) -> bool:
    return any(t.kind == ONE_VS_REST for t in tasks)


def calibration_size(n_train: int, fraction: float) -> int:
    """How many of ``n_train`` training images to hold out (0: too few to spare)."""
    k = min(int(n_train * fraction), MAX_CALIBRATION_IMAGES)
    return k if k >= MIN_CALIBRATION_IMAGES and n_train - k >= 2 else 0


def hold_out(train, tasks: Sequence[Task], fraction: float, seed: int):
    """(training images, calibration images or None): a seeded slice of ``train`` (a ``Dataset`` or
    streamed ``FileImages``), both in their original order."""
    k = calibration_size(len(train), fraction) if needs_calibration(tasks) else 0
    if not k:
        return train, None
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed * 7_919 + 104_729))
    return train.subset(order[k:].sort().values), train.subset(order[:k].sort().values)


def calibrate(tasks: Sequence[Task], calibration: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
              test: tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]],
              source_classes: dict[str, int]) -> dict[str, Detector]:
    """One ``Detector`` per one-vs-rest task. ``calibration`` and ``test`` are (task logits,
    source class of every image by source: labels, else the teacher's choice)."""
    (cal_logits, cal_classes), (test_logits, test_classes) = calibration, test
    detectors = {}
    for task in tasks:
        if task.kind != ONE_VS_REST:
            continue
        k = task.classes[0]
        detectors[task.name] = Detector.fit(
            (cal_logits[task.name][:, 0].cpu(), cal_classes[task.source].cpu() == k),
            (test_logits[task.name][:, 0].cpu(), test_classes[task.source].cpu() == k),
            source_classes[task.source])
    return detectors


def calibrate_run(network, p, device: torch.device) -> dict[str, Detector]:
    """Each one-vs-rest brick's detector after a factorization (``p``: the run's prepared data):
    fitted on the held-out images, measured on the test split."""
    if p.calibration is None:
        return {}
    test_classes = {s: (y if y is not None else p.test_teacher_logits[s].argmax(1)).cpu()
                    for s, y in p.test_labels.items()}
    return calibrate(
        p.tasks, (network_logits(network, p.calibration, device, p.workers), p.calibration_classes),
        (network_logits(network, p.test, device, p.workers), test_classes),
        {s: len(names) for s, names in p.teacher.class_names.items()})
