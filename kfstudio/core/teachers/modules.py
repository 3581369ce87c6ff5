"""Teachers that are torch modules: a Python factory (``package.module:function``, with a weights
file) and the shipped demo teachers. Each registers itself with ``register_teacher_loader``.
A factory is code: it runs only when the user named it (``runs_code``).
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from dataclasses import replace

from torch import nn

from kfstudio.core.errors import TeacherError
from kfstudio.core.spec import InputSpec
from kfstudio.core.teachers.loaders import (Teacher, TeacherOptions, existing_file, file_sha256, load_weights_into,
                                            read_manifest, register_teacher_loader, resolve_spec, teacher_from_module)


def _is_factory(ref: str) -> bool:
    module, sep, func = ref.partition(":")
    return bool(sep) and not ref.startswith("builtin:") and func.isidentifier() and all(
        part.isidentifier() for part in module.split("."))


@register_teacher_loader("a Python factory", "package.module:function returning an nn.Module (+ weights)", _is_factory,
                         code="Python code (a module to import and a function to call)")
def load_factory_teacher(ref: str, options: TeacherOptions) -> Teacher:
    module_name, _, func_name = ref.partition(":")
    if module_name.split(".")[0] in sys.stdlib_module_names:
        raise TeacherError(f"'{module_name}' is part of Python itself, not a network's code; give the module "
                           "and function that build your network, e.g. mypackage.models:resnet18.")
    try:
        factory = getattr(importlib.import_module(module_name), func_name)
    except (ImportError, AttributeError) as exc:
        raise TeacherError(f"Cannot find the function '{func_name}' in the module '{module_name}': {exc}.") from None
    module = factory()
    if not isinstance(module, nn.Module):
        raise TeacherError(f"'{ref}' returned {type(module).__name__}, not a torch nn.Module.")
    manifest, sha, weights = {}, hashlib.sha256(ref.encode()).hexdigest(), None
    if options.weights:
        path = existing_file(options.weights)
        load_weights_into(module, path)
        manifest, sha, weights = read_manifest(path), file_sha256(path), str(path.resolve())
    spec = resolve_spec(options, manifest, None, ref)
    teacher = teacher_from_module(module, name=func_name, ref=ref, spec=spec, sha256=sha, options=options,
                                  manifest=manifest)
    teacher.weights = weights
    if weights is None:
        teacher.weights_note = (f"No weights were given (--weights), so this is the randomly initialised network "
                                f"that {ref} builds, not a trained one.")
    return teacher


@register_teacher_loader("built-in demo", "builtin:digits or builtin:shapes, shipped with KF Studio",
                         lambda ref: ref.startswith("builtin:"))
def load_builtin_teacher(ref: str, options: TeacherOptions) -> Teacher:
    from kfstudio.core.teachers import demos as demo_teachers
    name = ref.partition(":")[2]
    weights, manifest = demo_teachers.shipped_files(name)
    module = demo_teachers.build(name)
    load_weights_into(module, weights)
    spec = InputSpec.from_dict(manifest["input"])
    teacher = teacher_from_module(module, name=f"{name} demo teacher", ref=ref, spec=spec, sha256=file_sha256(weights),
                                  options=replace(options, input_spec=None), manifest=manifest)
    return teacher
