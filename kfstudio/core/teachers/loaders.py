"""Teachers: load a pretrained network from whatever the user has, behind one interface.

Every teacher answers ``outputs(x)`` (a dict of task logits) and ``features(x)`` (pooled
intermediate features, shallow to deep). Where a format gives no intermediate features
the last outputs stand in and ``feature_note`` says so. Loaders form a registry
(``register_teacher_loader``), matched in order against the reference the user gave.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from kfstudio.core import safe_json
from kfstudio.core.errors import KFError, TeacherError, first_line
from kfstudio.core.spec import InputSpec


@dataclass(frozen=True)
class TeacherOptions:
    """What the user may add to a teacher reference (all optional)."""

    weights: str | None = None
    input_spec: InputSpec | None = None
    taps: tuple[str, ...] = ()
    class_names: dict[str, list[str]] | None = None


@dataclass
class Teacher:
    """A frozen pretrained network with named outputs and (where possible) tapped features."""

    name: str
    ref: str
    input_spec: InputSpec
    class_names: dict[str, list[str]]
    run: Callable[[torch.Tensor], tuple[dict[str, torch.Tensor], list[torch.Tensor]]]
    sha256: str
    module: nn.Module | None = None
    feature_note: str = ""
    metrics: dict = field(default_factory=dict)
    device: torch.device = torch.device("cpu")
    weights: str | None = None  # the weights file loaded into a factory's network (absolute path)
    weights_note: str = ""  # a factory run without weights says so: its network is randomly initialised
    counts: tuple[int, int] | None = None  # parameters and multiply-adds read from a file with no torch module (ONNX)

    @property
    def output_names(self) -> list[str]:
        return list(self.class_names)

    @torch.no_grad()
    def outputs_and_features(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        return self.run(x)

    def outputs(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.outputs_and_features(x)[0]

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.outputs_and_features(x)[1]

    @property
    def num_parameters(self) -> int | None:
        if self.module is None:
            return self.counts[0] if self.counts else None
        return sum(p.numel() for p in self.module.parameters())

    def to(self, device: torch.device) -> "Teacher":
        if self.module is not None:
            self.module.to(device)
        self.device = torch.device(device)
        return self

    def set_batchnorm_train(self, train: bool) -> None:
        """The authors leave the teacher's BatchNorm in train mode; eval mode is our default."""
        if self.module is None:
            return
        self.module.eval()
        for m in self.module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train(train)

    def describe(self) -> str:
        outs = ", ".join(f"{n} ({len(c)} classes)" for n, c in self.class_names.items())
        params = f", {self.num_parameters:,} parameters" if self.num_parameters else ""
        text = f"{self.name}: input {self.input_spec.describe()}; outputs {outs}{params}"
        return f"{text}. {self.weights_note}" if self.weights_note else text


# ---------------------------------------------------------------- the registry of loaders

Loader = Callable[[str, TeacherOptions], Teacher]


@dataclass(frozen=True)
class TeacherLoader:
    name: str
    description: str
    matches: Callable[[str], bool]
    load: Loader
    code: str | None = None  # what code loading runs, in words; None for plain data


_LOADERS: list[TeacherLoader] = []


def register_teacher_loader(name: str, description: str, matches: Callable[[str], bool],
                            code: str | None = None) -> Callable[[Loader], Loader]:
    def decorator(load: Loader) -> Loader:
        _LOADERS.append(TeacherLoader(name, description, matches, load, code))
        return load

    return decorator


def list_teacher_loaders() -> list[TeacherLoader]:
    return list(_LOADERS)


class MissingInputError(TeacherError):
    """The teacher's file does not say what input it takes; the data or a manifest may tell."""


def load_teacher_fitting(ref: str, options: TeacherOptions, fallback: InputSpec | None, source: str,
                         *, allow_code: bool = False) -> tuple[Teacher, str | None]:
    """Load a teacher; when its file does not record its input, take ``fallback`` (read from the
    data or a run's manifest) and return the one line that says so."""
    try:
        return load_teacher(ref, options, allow_code=allow_code), None
    except MissingInputError:
        if fallback is None:
            raise
    teacher = load_teacher(ref, replace(options, input_spec=fallback), allow_code=allow_code)
    return teacher, f"'{ref}' does not record its input size; using {fallback.describe()} from {source}."


class UntrustedCodeError(TeacherError):
    """A teacher reference that was read from a file names code; it runs only when the user says so."""

    def __init__(self, ref: str, what: str, weights: str | None = None) -> None:
        self.ref = ref
        self.what = what
        flags = f"--teacher {ref}" + (f" --weights {weights}" if weights else "")
        super().__init__(
            f"The teacher '{ref}' is {what}, and it was named in a file rather than by you, so KF Studio "
            f"did not run it. To use it, name it yourself ({flags})."
        )


def runs_code(ref: str) -> str | None:
    """What kind of code loading ``ref`` would run, or None when it is plain data.

    A Python factory is imported and called; a TorchScript file is a program (it can read and
    write files through torch's ops); a ``.pt2`` is a program too (torch turns text in it into
    Python; KF Studio checks it first, but a check is not a promise). Built-in teachers and
    ONNX are data.
    """
    for loader in _LOADERS:
        if loader.matches(ref):
            return loader.code
    return None


def load_teacher(ref: str, options: TeacherOptions = TeacherOptions(), *, allow_code: bool = False) -> Teacher:
    """Load a teacher from a reference: ``builtin:NAME``, ``package.module:function``, or a file.

    ``allow_code`` says the user named this reference in this session (a command-line flag, the
    wizard's field, a dialog's yes). It is False by default, for references read from files:
    a reference that would run code then raises ``UntrustedCodeError`` instead of running."""
    for loader in _LOADERS:
        if loader.matches(ref):
            if loader.code and not allow_code:
                raise UntrustedCodeError(ref, loader.code, options.weights)
            try:
                return loader.load(ref, options)
            except KFError:
                raise
            except Exception as exc:  # a foreign file format failing deep inside a library
                raise TeacherError(f"Could not load the teacher '{ref}' as {loader.name}: {first_line(exc)}") from exc
    raise TeacherError(
        f"Cannot tell what kind of teacher '{ref}' is. Give builtin:digits, builtin:shapes, "
        "package.module:function, or a .pt/.ts (TorchScript), .pt2 (torch.export) or .onnx file."
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def existing_file(ref: str) -> Path:
    path = Path(ref).expanduser()
    if not path.is_file():
        raise TeacherError(f"The teacher file '{ref}' does not exist.")
    if path.stat().st_size == 0:
        raise TeacherError(f"The teacher file '{ref}' is empty.")
    return path


def read_manifest(path: Path) -> dict:
    """The JSON manifest beside a model file (``model.onnx.json`` or ``model.json``), if any."""
    for candidate in (path.with_name(path.name + ".json"), path.with_suffix(".json")):
        if candidate.is_file() and candidate != path:
            try:
                manifest = safe_json.loads(candidate.read_text())
            except (OSError, ValueError) as exc:
                raise TeacherError(f"The manifest '{candidate}' is not valid JSON: {exc}.") from None
            return _checked_teacher_manifest(manifest, candidate)
    return {}


def _checked_teacher_manifest(manifest, path: Path) -> dict:
    """The fields of a teacher's manifest that we use, with the types we use them as."""
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise TeacherError(f"The manifest '{path.name}' is not a valid teacher manifest: {what}.")

    need(isinstance(manifest, dict), "it is not a table of fields")
    need(isinstance(manifest.get("input", {}), dict), "'input' must be a table (channels, height, width, mean, std)")
    outputs = manifest.get("outputs", [])
    need(isinstance(outputs, list) and all(isinstance(o, str) for o in outputs), "'outputs' must be a list of names")
    names = manifest.get("class_names", {})
    need(isinstance(names, dict) and all(isinstance(v, list) and len(v) <= 100_000 for v in names.values()),
         "'class_names' must map each output to a list of class names")
    need(isinstance(manifest.get("metrics", {}), dict), "'metrics' must be a table")
    if "input" in manifest:
        try:
            InputSpec.from_dict(manifest["input"])
        except KFError as exc:
            need(False, str(exc).rstrip("."))
    return manifest


def resolve_spec(options: TeacherOptions, manifest: dict, inferred: InputSpec | None, ref: str) -> InputSpec:
    if options.input_spec is not None:
        return options.input_spec
    if "input" in manifest:
        return InputSpec.from_dict(manifest["input"])
    if inferred is not None:
        return inferred
    raise MissingInputError(
        f"The input size of '{ref}' is not written in the file; give it, e.g. --input 1,8,8 "
        "(channels, height, width; add :mean:std for normalization)."
    )


def named_classes(output_names: Sequence[str], sizes: Sequence[int], options: TeacherOptions,
                 manifest: dict) -> dict[str, list[str]]:
    given = options.class_names or manifest.get("class_names") or {}
    names = {}
    for out, size in zip(output_names, sizes):
        listed = [str(c) for c in given.get(out, [])]
        if listed and len(listed) != size:
            raise TeacherError(f"The output '{out}' has {size} classes but {len(listed)} class names are given.")
        names[out] = listed or [str(i) for i in range(size)]
    return names


# ---------------------------------------------------------------- torch modules (hooks)

def _as_output_dict(out, names: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    if isinstance(out, torch.Tensor):
        out = (out,)
    if isinstance(out, dict):
        return {str(k): v for k, v in out.items()}
    if isinstance(out, (tuple, list)):
        if names and len(names) == len(out):
            return dict(zip(names, out))
        return {("output" if len(out) == 1 else f"output{i}"): v for i, v in enumerate(out)}
    raise TeacherError(f"The teacher returned {type(out).__name__}; expected a tensor, a tuple or a dict of tensors.")


def pool(t: torch.Tensor) -> torch.Tensor:
    return t.flatten(2).mean(dim=2) if t.dim() > 2 else t.flatten(1)


def auto_taps(module: nn.Module, example: torch.Tensor) -> list[str]:
    """Pick stage-like layers: the last module at each spatial resolution (up to three, deepest)."""
    shapes: list[tuple[str, tuple[int, ...]]] = []
    hooks = [m.register_forward_hook(lambda _m, _i, o, n=name: shapes.append((n, tuple(o.shape)))
                                     if isinstance(o, torch.Tensor) else None)
             for name, m in module.named_modules() if name]
    try:
        with torch.no_grad():
            module(example)
    finally:
        for h in hooks:
            h.remove()
    last_at: dict[tuple[int, ...], str] = {}
    for name, shape in shapes:
        if len(shape) == 4:
            last_at.pop(shape[2:], None)
            last_at[shape[2:]] = name  # re-insert so dict order follows the last occurrence
    return list(last_at.values())[-3:]


class ModuleRunner:
    """Runs an nn.Module teacher and collects pooled features from forward hooks."""

    def __init__(self, module: nn.Module, output_names: Sequence[str] | None, taps: Sequence[str]) -> None:
        self.module = module
        self.output_names = output_names
        self.taps = list(taps)
        self._captured: dict[str, torch.Tensor] = {}
        modules = dict(module.named_modules())
        for tap in self.taps:
            if tap not in modules:
                raise TeacherError(f"The teacher has no layer '{tap}' to tap features from.")
            modules[tap].register_forward_hook(self._capture(tap))

    def _capture(self, name: str):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                self._captured[name] = pool(output.detach())
        return hook

    def __call__(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        self._captured.clear()
        outputs = _as_output_dict(self.module(x), self.output_names)
        feats = [self._captured[t] for t in self.taps if t in self._captured]
        if not feats:
            feats = [torch.cat([o.float() for o in outputs.values()], dim=1)]
        return outputs, feats


class FixedBatchRunner:
    """Feed a teacher that was exported for exactly ``batch`` inputs: run in chunks of that
    size, padding the last chunk with copies of its last row and dropping those rows again."""

    def __init__(self, run: Callable, batch: int) -> None:
        self.run = run
        self.batch = batch

    def __call__(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        if x.shape[0] == self.batch:
            return self.run(x)
        outs: dict[str, list[torch.Tensor]] = {}
        feats: list[list[torch.Tensor]] = []
        for chunk in x.split(self.batch):
            n = chunk.shape[0]
            if n < self.batch:
                chunk = torch.cat([chunk, chunk[-1:].expand(self.batch - n, *chunk.shape[1:])])
            o, f = self.run(chunk)
            for k, v in o.items():
                outs.setdefault(k, []).append(v[:n])
            feats = feats or [[] for _ in f]
            for bucket, t in zip(feats, f):
                bucket.append(t[:n])
        return {k: torch.cat(v) for k, v in outs.items()}, [torch.cat(b) for b in feats]


MAX_FIXED_BATCH = 4096


def _check_fixed_batch(batch: int | None) -> None:
    """A file exported for one batch size is fed in chunks of that size; a crafted size must not
    make KF Studio allocate the machine's memory away."""
    if batch and not 1 <= batch <= MAX_FIXED_BATCH:
        raise TeacherError(f"The teacher was exported for batches of exactly {batch} images; KF Studio feeds "
                           f"fixed batches of at most {MAX_FIXED_BATCH}. Export it with a dynamic batch size.")


def maybe_fixed(run: Callable, batch: int | None) -> Callable:
    _check_fixed_batch(batch)
    return FixedBatchRunner(run, batch) if batch else run


def teacher_from_module(module: nn.Module, *, name: str, ref: str, spec: InputSpec, sha256: str,
                        options: TeacherOptions, manifest: dict, can_hook: bool = True,
                        fixed_batch: int | None = None) -> Teacher:
    _check_fixed_batch(fixed_batch)
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    example = torch.zeros(fixed_batch or 2, *spec.shape)
    output_names = manifest.get("outputs")
    try:
        with torch.no_grad():
            outputs = _as_output_dict(module(example), output_names)
    except KFError:
        raise
    except Exception as exc:
        raise TeacherError(f"The teacher does not run on inputs of size {spec.shape}: {first_line(exc)}") from exc
    for out_name, t in outputs.items():
        if t.dim() != 2:
            raise TeacherError(f"The teacher output '{out_name}' has shape {tuple(t.shape)}; expected (batch, classes).")
    taps = list(options.taps) or (auto_taps(module, example) if can_hook else [])
    note = (f"InfoMax reads the teacher's layers {', '.join(taps)}." if taps else
            "This teacher format gives no intermediate features; InfoMax uses its outputs instead.")
    runner = maybe_fixed(ModuleRunner(module, list(outputs), taps), fixed_batch)
    class_names = named_classes(list(outputs), [t.shape[1] for t in outputs.values()], options, manifest)
    return Teacher(name=name, ref=ref, input_spec=spec, class_names=class_names, run=runner, sha256=sha256,
                   module=module, feature_note=note, metrics=manifest.get("metrics", {}))


# ---------------------------------------------------------------- loaders

def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file
        try:
            return load_file(str(path))
        except Exception as exc:
            raise TeacherError(
                f"'{path}' is not a readable safetensors file (it may be truncated or corrupt): {first_line(exc)}"
            ) from exc
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise TeacherError(
            f"'{path}' is not a plain weights file (it may hold code, which we never run): {first_line(exc)}"
        ) from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise TeacherError(f"'{path}' does not hold a dict of weight tensors (a state_dict).")
    return state


def load_weights_into(module: nn.Module, path: Path) -> None:
    state = load_state_dict(path)
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        raise TeacherError(f"The weights in '{path}' do not fit the network: {first_line(exc)}") from None
