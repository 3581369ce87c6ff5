"""Device choice, CPU threads, mixed precision and a memory estimate.

torch is imported inside the functions that need it, so the studio can show its window
before torch (about a second) is loaded.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

from kfstudio.core.errors import ConfigError


@dataclass(frozen=True)
class DeviceInfo:
    name: str          # "cuda:0", "mps", "cpu": what --device takes
    label: str         # what people read: "NVIDIA H100 (79.1 GB free)"
    free_bytes: int | None
    total_bytes: int | None
    threads: int | None = None  # CPU: the training threads a run uses


def machine_cores() -> int:
    """The cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def default_threads(reserve: int = 0) -> int:
    """Training threads for a CPU run: the cores that are free now, less ``reserve`` (1 at least).

    On a shared machine, OpenMP threads spin while they wait for a busy core: on 2 cores with
    another job running, 2 threads made a factorization 3-24x slower than 1. So the 1-minute
    load average is taken off the core count (rounded up), and a loaded machine gets 1 thread."""
    cores = machine_cores()
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # Windows: no load average; leave one core free
        load = 1.0
    busy = int(load) + (load % 1 > 0.25)
    return max(1, min(cores, cores - busy) - reserve)


def list_devices(cpu_threads: int | None = None) -> list[DeviceInfo]:
    """Every device this machine can train on, the best first; the CPU's label says how many
    threads a run will really use (``cpu_threads``, or ``default_threads()``)."""
    import torch

    found = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free, total = torch.cuda.mem_get_info(i)
            label = f"{torch.cuda.get_device_name(i)} ({free / 1e9:.1f} GB free of {total / 1e9:.1f} GB)"
            found.append(DeviceInfo(f"cuda:{i}", label, free, total))
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        found.append(DeviceInfo("mps", "Apple GPU (MPS)", None, None))
    threads = cpu_threads or default_threads()
    busy = " (others busy)" if threads < machine_cores() else ""
    # short: the device list is one line wide, also at presentation-mode font sizes
    found.append(DeviceInfo("cpu", f"CPU: {threads} of {machine_cores()} cores{busy}", None, None, threads))
    return found


def pick_device(preference: str = "auto"):
    """CUDA when present, else Apple MPS, else the CPU (a ``torch.device``); an explicit choice must exist."""
    import torch

    if preference in ("", "auto"):
        return torch.device(list_devices()[0].name)
    try:
        device = torch.device(preference)
    except RuntimeError:
        raise ConfigError(f"'{preference}' is not a device; use auto, cpu, cuda, cuda:N or mps.") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("No CUDA GPU is available on this machine; use --device cpu (or auto).")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ConfigError(f"There is no GPU {device.index}; this machine has {torch.cuda.device_count()}.")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("No Apple GPU (MPS) is available on this machine; use --device cpu.")
    return device


def autocast(device, precision: str = "auto") -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA (the default there), full float32 elsewhere."""
    import torch

    if precision not in ("auto", "bf16", "fp32"):
        raise ConfigError(f"Unknown precision '{precision}'; use auto, bf16 or fp32.")
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16 and device.type in ("cuda", "cpu"):
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def estimate_training_bytes(num_parameters: int, activation_floats_per_sample: int, batch_size: int) -> int:
    """A rough upper estimate of training memory: weights, gradients, momentum, activations."""
    weights = num_parameters * 4 * 3
    activations = activation_floats_per_sample * batch_size * 4 * 2
    return int((weights + activations) * 1.2) + (64 << 20)
