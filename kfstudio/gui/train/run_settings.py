"""What the Factorize page offers to choose before a run: where to train, how big the students are.

``device_options`` turns the machine's devices (``kfstudio.core.devices.list_devices``) into
the page's device list: each device on its own and, when there are two CUDA GPUs or more,
"All N GPUs", a run of N processes started by torchrun's agent (kfstudio.runner.ranks).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from kfstudio.core.devices import DeviceInfo, estimate_training_bytes
from kfstudio.core.factorize import FactorizeConfig, build_network

# Plain names for student sizes -> (common width, task width) of the "tiny" backbones.
PRESETS: dict[str, tuple[float, float, str]] = {
    "Small & fast": (0.5, 0.25, "Narrow common module and bricks: trains in seconds on a CPU."),
    "Balanced": (1.0, 0.5, "The default: a good trade between accuracy and speed."),
    "Large": (2.0, 1.0, "Wide common module and bricks: most accurate, slowest; best on a GPU."),
}
DEFAULT_PRESET = "Balanced"


@dataclass(frozen=True)
class DeviceOption:
    """One entry of the device list: a device, and how many processes share the run."""

    name: str                # what FactorizeConfig.device takes: "cuda:1", "cuda", "cpu"
    label: str
    free_bytes: int | None   # per process: the least free memory of the GPUs used
    threads: int | None = None
    processes: int = 1       # > 1: one process per GPU (torchrun), or gloo processes on the CPU

    @classmethod
    def of(cls, info: DeviceInfo) -> DeviceOption:
        return cls(info.name, info.label, info.free_bytes, info.threads)


def device_options(devices: list[DeviceInfo]) -> list[DeviceOption]:
    """Every device alone, and "All N GPUs" first when this machine has N >= 2 CUDA GPUs."""
    options = [DeviceOption.of(d) for d in devices]
    gpus = [d for d in devices if d.name.startswith("cuda:")]
    if len(gpus) >= 2:
        frees = [d.free_bytes for d in gpus if d.free_bytes]
        options.insert(0, DeviceOption(
            "cuda", f"All {len(gpus)} GPUs (one process each, through torchrun)",
            min(frees) if len(frees) == len(gpus) else None, None, len(gpus)))
    return options


def human_bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def duration(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


_SHAPES: dict[tuple, tuple[object, int, int]] = {}   # (teacher, tasks, architecture) -> (teacher, parameters, floats)


def _student_shape(choice, config: FactorizeConfig) -> tuple[int, int]:
    """Parameters of the students and floats of one image's activations (built once per architecture)."""
    import torch

    key = (id(choice.teacher), tuple(t.name for t in choice.tasks), repr(replace(config, epochs=1, batch_size=2)))
    known = _SHAPES.get(key)
    if known is not None:
        return known[1], known[2]
    network = build_network(config, choice.tasks, choice.teacher.input_spec)
    floats = 0

    def count(_m, _i, out):
        nonlocal floats
        if isinstance(out, torch.Tensor):
            floats += out.numel()

    hooks = [m.register_forward_hook(count) for m in network.modules() if not list(m.children())]
    with torch.no_grad():
        network.eval()(torch.zeros(1, *choice.teacher.input_spec.shape))
    for h in hooks:
        h.remove()
    params = sum(p.numel() for p in network.parameters())
    if len(_SHAPES) > 64:
        _SHAPES.clear()
    _SHAPES[key] = (choice.teacher, params, floats)
    return params, floats


def estimate_run_bytes(choice, config: FactorizeConfig, processes: int = 1) -> tuple[int, int]:
    """(parameters, estimated training bytes per process) of the students this config would train.
    The students are built once per architecture (remembered), not on every change of a setting."""
    params, floats = _student_shape(choice, config)
    per_process = max(1, -(-config.batch_size // processes))  # --batch-size is the batch of all processes
    return params, estimate_training_bytes(params, floats, per_process)


# The Factorize page's cost choices: (label, budget) and (label, brick input); kfstudio.gui.train.budget_box.
BUDGETS = [("Student size as chosen", None), ("At most the teacher's cost (1x)", "1x"),
           ("At most half the teacher's (1/2)", "1/2"), ("At most a quarter of the teacher's (1/4)", "1/4")]
BRICK_INPUTS = [("The image (the paper's task networks)", "image"), ("Stage 1 of the common module (light)", "stage1"),
                ("Stage 2 of the common module (lighter)", "stage2")]


def estimate_cost(choice, config: FactorizeConfig, sizing=None) -> str:
    """In words, before a run: what the students of ``config`` (as the cost budget sized them:
    ``factorize.sized_config``, which gives ``sizing``) cost against the teacher: multiply-adds of all
    bricks and of one brick with the common module, and parameters."""
    from kfstudio.core.students.budget import WIDE_MIDDLE_TASK_NET, student_macs, teacher_macs
    from kfstudio.core.factorize import build_students

    teacher = choice.teacher
    common, bricks = build_students(config, choice.tasks, teacher.input_spec)
    shape = teacher.input_spec.shape
    every, one = student_macs(common, bricks.values(), shape), student_macs(common, list(bricks.values())[:1], shape)
    params = sum(p.numel() for m in (common, *bricks.values()) for p in m.parameters())
    wide = f", bricks with a wide middle ({WIDE_MIDDLE_TASK_NET})" if sizing and sizing.task_net == WIDE_MIDDLE_TASK_NET else ""
    sized = f"widths {config.common_width:g} / {config.task_width:g}{wide}; " if sizing else ""
    if teacher.module is None:
        return (f"{sized}all {len(bricks)} bricks: {every / 1e6:.2f} M multiply-adds, one brick: {one / 1e6:.2f} M; "
                f"{params:,} parameters (the teacher's cost cannot be counted).")
    spent = sizing.teacher_macs if sizing else teacher_macs(teacher.module, teacher.outputs, shape)
    return (f"{sized}all {len(bricks)} bricks: {every / 1e6:.2f} M multiply-adds ({every / spent:.0%} of the "
            f"teacher's {spent / 1e6:.2f} M), one brick + common: {one / 1e6:.2f} M ({one / spent:.0%}); "
            f"{params:,} parameters (teacher {teacher.num_parameters or 0:,}).")
