"""``kfstudio train-teacher`` and ``kfstudio inspect``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from kfstudio.cli import argtypes


def add_parser(subparsers) -> None:
    train = subparsers.add_parser("train-teacher", help="retrain a shipped demo teacher (deterministic)",
                                  description="Retrain the digits, shapes or shapes-hard demo teacher from its data; "
                                  "the result is a safetensors file and a JSON manifest.")
    train.add_argument("name", choices=["digits", "shapes", "shapes-hard"])
    train.add_argument("--out", default=None, help="folder to write NAME.safetensors and NAME.json "
                       "(default: the shipped resources/teachers)")
    train.add_argument("--seed", type=argtypes.seed, default=0)
    train.set_defaults(run=run_train_teacher)

    inspect = subparsers.add_parser("inspect", help="describe a teacher, common module or brick",
                                    description="Say what a file is: input spec, tasks, metrics.")
    inspect.add_argument("file", help="a teacher (builtin:NAME or a file), common.safetensors or a brick")
    inspect.add_argument("--input", type=argtypes.input_spec, default=None, help="teacher input C,H,W[:mean:std] when the file lacks it")
    inspect.add_argument("--weights", default=None, help="weights (.pt/.pth state_dict or .safetensors) for a factory "
                         "teacher (without them a factory's network is randomly initialised)")
    inspect.set_defaults(run=run_inspect)


def run_train_teacher(args: argparse.Namespace) -> int:
    import torch

    from kfstudio.core.teachers.demos import resources_dir, train_demo_teacher
    from kfstudio.io.bricks import save_teacher
    from kfstudio.io.locks import writing

    torch.set_num_threads(max(1, torch.get_num_threads()))
    out = Path(args.out) if args.out else resources_dir() / "teachers"
    trained = train_demo_teacher(args.name, args.seed, on_report=lambda r: print(
        f"epoch {r.epoch:3d}/{r.epochs}  loss {r.loss:.4f}  test accuracy "
        + ", ".join(f"{k} {v:.2%}" for k, v in r.test_accuracy.items()), flush=True))
    weights = out / f"{args.name}.safetensors"
    with writing(out, f"kfstudio train-teacher {args.name}"):
        save_teacher(trained.module, trained.manifest, weights)
    print(f"Wrote {weights} and {weights.with_suffix('.json')}")
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    described = describe_file(args.file, args.input, args.weights)
    print(json.dumps(described, indent=2))
    if described.get("note"):
        print(described["note"])
    return 0


def describe_file(ref: str, input_spec: str | None = None, weights: str | None = None) -> dict:
    """What a file is, as a dict a person (or a program) can read."""
    from kfstudio.core.errors import FileFormatError
    from kfstudio.core.spec import InputSpec
    from kfstudio.core.teachers.loaders import TeacherOptions, load_teacher
    from kfstudio.io import bricks

    path = Path(ref)
    if path.suffix in (".safetensors", ".json") and path.with_suffix(".json").is_file():
        kind = bricks.manifest_kind(path.with_suffix(".json"))
        if kind == bricks.COMMON_KIND:
            loaded = bricks.load_common(path)
        elif kind == bricks.BRICK_KIND:
            loaded = bricks.load_brick(path)
        else:
            raise FileFormatError(f"'{path.name}' is not a teacher, a common module or a brick of KF Studio.")
        params = sum(p.numel() for p in loaded.module.parameters())
        return {"file": str(loaded.path), "parameters": params, **loaded.manifest}
    spec = InputSpec.parse(input_spec) if input_spec else None
    teacher = load_teacher(ref, TeacherOptions(weights=weights, input_spec=spec), allow_code=True)
    described = {"file": ref, "kind": "teacher", "name": teacher.name, "input": teacher.input_spec.to_dict(),
                 "outputs": teacher.class_names, "parameters": teacher.num_parameters,
                 "features": teacher.feature_note, "sha256": teacher.sha256, "metrics": teacher.metrics}
    if teacher.weights:
        described["weights"] = teacher.weights
    if teacher.weights_note:
        described["note"] = teacher.weights_note
    return described
