"""Resumable training checkpoints, written atomically and read without unpickling code."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Protocol

import torch
from torch import nn

from kfstudio.core.errors import ConfigError, KFError, WriteError
from kfstudio.core.tasks import Task
from kfstudio.core.tempfiles import claim, remove_stale_temps


class RunConfig(Protocol):
    """What a checkpoint needs of a run's settings (FactorizeConfig, GrowConfig): a JSON-able dict."""

    def to_dict(self) -> dict: ...

CHECKPOINT_FORMAT = "kfstudio-checkpoint"
CHECKPOINT_SCHEMA = 1


def save_checkpoint(path: Path, *, model: nn.Module, objective: nn.Module, optimizer: torch.optim.Optimizer,
                    epoch: int, step: int, config: RunConfig, tasks: list[Task]) -> None:
    """Write a resumable checkpoint atomically (temp file, fsync, rename)."""
    state = {
        "format": CHECKPOINT_FORMAT,
        "schema_version": CHECKPOINT_SCHEMA,
        "epoch": epoch,
        "step": step,
        "config": json.dumps(config.to_dict()),
        "tasks": json.dumps([t.to_dict() for t in tasks]),
        "model": model.state_dict(),
        "objective": objective.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    buffer = io.BytesIO()  # serialized in memory: a full disk is then an OSError below, not a c10 error
    torch.save(state, buffer)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        claim(fd)  # until it is closed: no other process takes it for a leftover
    except OSError as exc:
        raise WriteError.of(path, exc) from None
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(buffer.getbuffer())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:  # the previous checkpoint stays as it was
        Path(tmp).unlink(missing_ok=True)
        raise WriteError.of(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: str | Path) -> dict:
    """Read a checkpoint without unpickling code (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"The checkpoint '{path}' does not exist.")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception:
        raise ConfigError(f"'{path}' is not a readable KF Studio checkpoint (it may be truncated or corrupt).") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise ConfigError(f"'{path}' is not a KF Studio checkpoint.")
    if state.get("schema_version", 0) > CHECKPOINT_SCHEMA:
        raise ConfigError(f"'{path}' was written by a newer KF Studio; update KF Studio to resume it.")
    return state


def restore_checkpoint(state: dict, tasks: list[Task], model: nn.Module, objective: nn.Module,
             optimizer: torch.optim.Optimizer) -> int:
    """Load the training state; return the number of steps already taken."""
    try:
        saved = [Task.from_dict(d) for d in json.loads(state["tasks"])]
        step = int(state["step"])
    except (KeyError, TypeError, ValueError, KFError):
        raise ConfigError("The checkpoint is damaged: it does not say which tasks it trained.") from None
    if saved != tasks:
        raise ConfigError("The checkpoint was made for other tasks; resume with the same teacher and --tasks.")
    try:
        model.load_state_dict(state["model"])
        objective.load_state_dict(state["objective"])
        optimizer.load_state_dict(state["optimizer"])
    except (RuntimeError, ValueError, KeyError):
        raise ConfigError("The checkpoint does not fit these students; resume with the same --common and --task-net.") from None
    return step


# What must be the same for a resumed run to continue exactly where it stopped.
RESUME_MUST_MATCH = ("teacher", "data", "test_data", "tasks", "seed", "batch_size", "common", "common_width",
                     "task_net", "task_width", "z_dim", "gaussian_bricks", "brick_input", "stem_stride",
                     "calibration_fraction")
# settings older checkpoints do not record, as they were
DEFAULTS_BEFORE = {"brick_input": "image", "stem_stride": 1, "calibration_fraction": 0.0}


def check_resume_config(state: dict, config: RunConfig) -> None:
    """Refuse to resume with settings that would silently train something else."""
    try:
        saved = json.loads(state["config"])
    except (KeyError, TypeError, ValueError):
        raise ConfigError("The checkpoint is damaged: it does not record the settings it was made with.") from None
    now, saved = config.to_dict(), {**DEFAULTS_BEFORE, **saved}
    changed = [k for k in RESUME_MUST_MATCH if k in saved and saved[k] != now.get(k)]
    if changed:
        details = "; ".join(f"{k} was {saved[k]!r}, now {now.get(k)!r}" for k in changed)
        raise ConfigError(f"The checkpoint was made with other settings ({details}); resume with the same ones.")
