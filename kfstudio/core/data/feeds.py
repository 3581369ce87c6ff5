"""How images reach a training loop or an evaluation: in memory (``MemoryFeed``) or read from
disk by worker processes a batch ahead (``StreamFeed``, ``read_batches``), and ``chunks`` of any
data set for a teacher pass or an evaluation. What to stream is ``streaming``'s to say.
"""

from __future__ import annotations

import contextlib
import signal
from dataclasses import dataclass
from typing import Iterator

import torch

from kfstudio.core.data.sources import Dataset
from kfstudio.core.data.streaming import CHUNK, FileImages, resolve_workers
from kfstudio.core.errors import DataError, KFError


@dataclass(frozen=True)
class _Failure:
    message: str  # a DataError met in a worker, handed to the loop to raise


class _BatchReader(torch.utils.data.Dataset):
    """One item per batch of positions: a worker decodes a whole batch at a time."""

    def __init__(self, images: FileImages) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, positions: torch.Tensor):
        try:
            return self.images.read(positions.numpy())
        except KFError as exc:
            return _Failure(str(exc))


def _worker_init(_worker_id: int) -> None:
    # Ctrl-C reaches the whole process group: the training loop stops the workers itself, after the
    # step in progress (a worker that died of it would end the run with a DataLoader error instead).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@contextlib.contextmanager
def read_batches(images: FileImages, batches: list[torch.Tensor], workers: int,
                 pin: bool = False) -> Iterator[Iterator[torch.Tensor]]:
    """The images of each batch of positions, in order; the workers stop when the block ends,
    however it ends (finished, cancelled, Ctrl-C, an error)."""
    from torch.utils.data import DataLoader

    # Its own generator: a loader draws its workers' seed from it, and must not move the global one
    # (the students' initialization and the bricks' noise), or streaming would change the run.
    loader = DataLoader(_BatchReader(images), batch_size=None, sampler=[b.cpu() for b in batches],
                        num_workers=workers, worker_init_fn=_worker_init if workers else None,
                        prefetch_factor=2 if workers else None, pin_memory=pin, generator=torch.Generator())
    it = iter(loader)
    try:
        yield (_checked(item) for item in it)
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()  # joins the workers now, not whenever the iterator is collected


def _checked(item) -> torch.Tensor:
    if isinstance(item, _Failure):
        raise DataError(item.message)
    return item


def chunks(ds, size: int = CHUNK, workers: int | None = 0) -> Iterator[torch.Tensor]:
    """All images of ``ds`` in order, ``size`` at a time (a teacher pass, an evaluation)."""
    if isinstance(ds, Dataset):
        yield from ds.x.split(size)
        return
    with read_batches(ds, list(torch.arange(len(ds)).split(size)), resolve_workers(workers)) as images:
        yield from images


class MemoryFeed:
    """The training images in memory (on the device): a batch is an index into them."""

    def __init__(self, ds: Dataset, device: torch.device) -> None:
        self.x = ds.x.to(device)

    @contextlib.contextmanager
    def epoch(self, shards: list[torch.Tensor]):
        yield (self.x[s.to(self.x.device)] for s in shards)


class StreamFeed:
    """The training images on disk: the workers read each batch's shard ahead of the loop."""

    def __init__(self, images: FileImages, device: torch.device, workers: int | None) -> None:
        self.images, self.device = images, device
        self.workers = resolve_workers(workers)

    @contextlib.contextmanager
    def epoch(self, shards: list[torch.Tensor]):
        with read_batches(self.images, shards, self.workers, pin=self.device.type == "cuda") as images:
            yield (x.to(self.device, non_blocking=True) for x in images)


def feed(ds, device: torch.device, workers: int | None = None) -> MemoryFeed | StreamFeed:
    return MemoryFeed(ds, device) if isinstance(ds, Dataset) else StreamFeed(ds, device, workers)


@torch.no_grad()
def network_logits(network, images, device: torch.device, workers: int | None) -> dict[str, torch.Tensor]:
    """A network's outputs on every image of ``images`` (in chunks, eval mode, float32, on ``device``)."""
    was_training = network.training
    network.eval()
    logits: dict[str, list[torch.Tensor]] = {}
    for chunk in chunks(images, CHUNK, workers):
        for name, out in network(chunk.to(device)).items():
            logits.setdefault(name, []).append(out.float())
    network.train(was_training)
    return {k: torch.cat(v) for k, v in logits.items()}
