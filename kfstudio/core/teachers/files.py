"""Teachers from model files: TorchScript, torch.export (``.pt2``) and ONNX.

Each loader registers itself (``register_teacher_loader``); the package's ``__init__`` imports
this module so that every caller of ``kfstudio.core.teachers.loaders`` finds them. TorchScript
and ``.pt2`` files can carry code: they load only when the user named them (``runs_code``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from kfstudio.core.errors import KFError, TeacherError, first_line
from kfstudio.core.spec import InputSpec
from kfstudio.core.teachers.fixed_batch import FixedBatchModule
from kfstudio.core.teachers.loaders import (
    Teacher,
    TeacherOptions,
    named_classes,
    existing_file,
    file_sha256,
    maybe_fixed,
    pool,
    read_manifest,
    register_teacher_loader,
    resolve_spec,
    teacher_from_module,
)
from kfstudio.core.teachers.safe_pt2 import load_exported_program


def _has_suffix(*suffixes: str) -> Callable[[str], bool]:
    return lambda ref: ref.lower().endswith(suffixes)


@register_teacher_loader("TorchScript", "a TorchScript file (.pt, .ts, .ts.pt)", _has_suffix(".pt", ".ts", ".pth"),
                         code="a TorchScript program (it can read and write files when it runs)")
def load_torchscript_teacher(ref: str, options: TeacherOptions) -> Teacher:
    path = existing_file(ref)
    try:
        module = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:
        raise TeacherError(
            f"'{path.name}' is not a TorchScript model. If it holds plain weights, give the network's "
            f"factory too: --teacher package.module:function --weights {path.name}. ({first_line(exc)})"
        ) from exc
    manifest = read_manifest(path)
    spec = resolve_spec(options, manifest, None, ref)
    return teacher_from_module(module, name=path.stem, ref=ref, spec=spec, sha256=file_sha256(path),
                               options=options, manifest=manifest, can_hook=False)


@register_teacher_loader("torch.export", "a torch.export program (.pt2)", _has_suffix(".pt2"),
                         code="a torch.export program (torch turns parts of a .pt2 into Python as it loads it)")
def load_exported_teacher(ref: str, options: TeacherOptions) -> Teacher:
    path = existing_file(ref)
    try:
        program = load_exported_program(path)
    except KFError as exc:
        raise TeacherError(str(exc)) from None
    manifest = read_manifest(path)
    inferred, fixed_batch = None, None
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder" and "val" in n.meta]
    user_inputs = program.graph_signature.user_inputs
    for node in placeholders:
        if node.name in user_inputs and hasattr(node.meta["val"], "shape") and len(node.meta["val"].shape) == 4:
            dims = [int(d) if isinstance(d, int) or str(d).isdigit() else None for d in node.meta["val"].shape]
            if all(d is not None for d in dims[1:]):
                inferred = InputSpec(*dims[1:])  # type: ignore[arg-type]
            fixed_batch = dims[0]
            break
    spec = resolve_spec(options, manifest, inferred, ref)
    module = program.module()
    # torch.export's module raises on train()/eval(); the program is frozen as exported anyway,
    # so fall back to nn.Module's (flag-only) methods.
    for method in ("train", "eval"):
        module.__dict__.pop(method, None)
    if fixed_batch:  # exported for one batch size: any other fails a guard inside torch
        module = FixedBatchModule(module, fixed_batch)
    return teacher_from_module(module, name=path.stem, ref=ref, spec=spec, sha256=file_sha256(path),
                               options=options, manifest=manifest, can_hook=False, fixed_batch=fixed_batch)


class OnnxRunner:
    """Runs an ONNX teacher with onnxruntime; inner 4-D tensors are exposed as extra outputs."""

    def __init__(self, model_bytes: bytes, output_names: list[str], taps: list[str]) -> None:
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = output_names
        self.taps = taps

    def __call__(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
        device = x.device
        results = self.session.run(self.output_names + self.taps, {self.input_name: x.detach().float().cpu().numpy()})
        outputs = {n: torch.from_numpy(np.asarray(r)).to(device) for n, r in zip(self.output_names, results)}
        feats = [pool(torch.from_numpy(np.asarray(r))).to(device) for r in results[len(self.output_names):]]
        return outputs, feats or [torch.cat([o.float() for o in outputs.values()], dim=1)]


def _onnx_taps(model) -> list[str]:
    """The last 4-D tensor at each spatial resolution, in graph order (up to three, deepest)."""
    import onnx
    inferred = onnx.shape_inference.infer_shapes(model)
    ranks = {}
    for vi in inferred.graph.value_info:
        dims = vi.type.tensor_type.shape.dim
        if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[2:]):
            ranks[vi.name] = (dims[2].dim_value, dims[3].dim_value)
    last_at: dict[tuple[int, int], str] = {}
    for node in inferred.graph.node:
        for out in node.output:
            if out in ranks:
                last_at.pop(ranks[out], None)
                last_at[ranks[out]] = out
    return list(last_at.values())[-3:]


@register_teacher_loader("ONNX", "an ONNX model (.onnx), run with onnxruntime", _has_suffix(".onnx"))
def load_onnx_teacher(ref: str, options: TeacherOptions) -> Teacher:
    import onnx
    path = existing_file(ref)
    try:
        model = onnx.load(str(path))
    except Exception as exc:
        raise TeacherError(f"'{path.name}' is not a readable ONNX model (it may be truncated): {first_line(exc)}") from exc
    manifest = read_manifest(path)
    graph_inputs = [i for i in model.graph.input if i.name not in {t.name for t in model.graph.initializer}]
    dims = graph_inputs[0].type.tensor_type.shape.dim
    inferred = None
    if len(dims) == 4 and all(d.HasField("dim_value") for d in dims[1:]):
        inferred = InputSpec(*(d.dim_value for d in dims[1:]))
    spec = resolve_spec(options, manifest, inferred, ref)
    output_names = [o.name for o in model.graph.output]
    counts = _onnx_counts_or_none(model, spec)
    taps = list(options.taps) or _onnx_taps(model)
    for tap in taps:
        model.graph.output.append(onnx.helper.make_empty_tensor_value_info(tap))
    fixed_batch = dims[0].dim_value if dims and dims[0].HasField("dim_value") else None
    try:
        runner = maybe_fixed(OnnxRunner(model.SerializeToString(), output_names, taps), fixed_batch)
        outputs, _ = runner(torch.zeros(2, *spec.shape))
    except Exception as exc:
        raise TeacherError(f"The ONNX teacher does not run on inputs of size {spec.shape}: {first_line(exc)}") from exc
    class_names = named_classes(output_names, [o.shape[1] for o in outputs.values()], options, manifest)
    note = (f"InfoMax reads the ONNX tensors {', '.join(taps)}." if taps else
            "This ONNX model exposes no inner feature maps; InfoMax uses its outputs instead.")
    return Teacher(name=path.stem, ref=ref, input_spec=spec, class_names=class_names, run=runner,
                   sha256=file_sha256(path), feature_note=note, metrics=manifest.get("metrics", {}), counts=counts)


def _onnx_counts_or_none(model, spec: InputSpec) -> tuple[int, int] | None:
    from kfstudio.core.measures.cost import onnx_counts
    try:
        return onnx_counts(model, spec.shape)
    except Exception:  # shape inference can fail on exotic graphs: the costs are then unknown, not wrong
        return None
