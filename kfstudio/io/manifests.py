"""The declared schema of every KF Studio file we read (see ``kfstudio.io.schema``).

Bounds are generous for real use and small enough that nothing read from a file can ask
for an absurd allocation: at most 64 input channels and 4096 pixels a side, student widths
from 0.05 to 8, at most 100 000 classes, and a head of at most 50 million weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from kfstudio.core.students.backbones import list_backbones
from kfstudio.core.students.networks import MAX_Z_DIM
from kfstudio.core.tasks import TASK_KINDS
from kfstudio.io.schema import (Anything, Bool, Int, Invalid, List, Map, Nullable, Num, Obj, OneOf, Str)

MAX_CLASSES = 100_000
MAX_HEAD_WEIGHTS = 50_000_000

_name = Str(200, nonempty=True)
_count = Int(1, MAX_CLASSES)


@dataclass(frozen=True)
class _SameLength:
    """A rule: two lists of an entry have as many items. (A class rather than a closure made at
    import, so that mutation testing can reach its body: docs/testing.md.)"""

    a: str
    b: str

    def __call__(self, doc: dict, where: str) -> None:
        a, b = self.a, self.b
        if len(doc[a]) != len(doc[b]):
            raise Invalid(where or "the entry", f"lists {len(doc[a])} {a} but {len(doc[b])} {b}")


def _bounded_head(doc: dict, where: str) -> None:
    if doc["z_dim"] * doc["num_outputs"] > MAX_HEAD_WEIGHTS:
        raise Invalid(where or "the architecture", "asks for a head too large to build "
                      f"({doc['z_dim']:,} x {doc['num_outputs']:,} weights)")


def _reads_channels(doc: dict, where: str) -> None:
    if (doc.get("reads", "image") == "image") != ("read_channels" not in doc):
        raise Invalid(where or "the architecture", "must give read_channels exactly when the brick reads a stage "
                      "of its common module")


def _arch_name(value, where):
    names = tuple(b.name for b in list_backbones())
    return OneOf(names)(value, where)


class _ArchName(Str):
    def __call__(self, value, where):
        return _arch_name(value, where)


INPUT = Obj(
    {"channels": Int(1, 64), "height": Int(1, 4096), "width": Int(1, 4096)},
    {"mean": List(Num(-1e6, 1e6), 1, 64), "std": List(Num(1e-12, 1e6, positive=True), 1, 64)},
)
# stem_stride (optional; absent in files made before it: 1)
ARCH = Obj({"arch": _ArchName(), "width": Num(0.05, 8.0, positive=True), "in_channels": Int(1, 64)},
           {"stem_stride": Int(1, 2)})
# reads / read_channels (optional; absent in files made before light bricks, which read the image)
BRICK_ARCH = ARCH.extend({"z_dim": Int(1, MAX_Z_DIM), "num_outputs": _count},
                         {"gaussian": Bool(), "reads": OneOf(("image",) + tuple(f"stage{k}" for k in range(1, 10))),
                          "read_channels": Int(1, 16_384)},
                         rules=[_bounded_head, _reads_channels])
TASK = Obj(
    {"name": _name, "source": _name, "classes": List(Int(0, MAX_CLASSES - 1), 1, MAX_CLASSES),
     "class_names": List(Str(500), 1, MAX_CLASSES), "kind": OneOf(TASK_KINDS)},
    {"rest": Bool()},
    rules=[_SameLength("classes", "class_names")],
)
TEACHER_REF = Nullable(Obj({}, {"name": Nullable(Str(500)), "ref": Nullable(Str(4096)), "sha256": Nullable(Str(128)),
                                "weights": Nullable(Str(4096)), "weights_sha256": Nullable(Str(128))}))
_FILE = {"schema_version": Int(1, 1000), "kind": Str(100)}
_FRACTION = Nullable(Num(0.0, 1.0))
# A one-vs-rest brick calibrated as a detector of its class (optional: older bricks have none).
DETECTOR = Obj({"threshold": Num(-1e9, 1e9)},
               {"auc": _FRACTION, "accuracy": _FRACTION, "calibration_auc": _FRACTION,
                "calibration_images": Int(0, 10**12), "test_images": Int(0, 10**12),
                "source_classes": Int(1, MAX_CLASSES)})
_FINGERPRINT = Str(128, nonempty=True)

def _projection_sized(doc: dict, where: str) -> None:
    if doc.get("z_projection") and "z_dim" not in doc:
        raise Invalid(where or "the manifest", "projects to a latent size but does not say which (z_dim)")


# z_projection (optional, false when absent): the common module projects its last stage to z_dim.
_LATENT = {"z_dim": Int(1, MAX_Z_DIM), "z_projection": Bool()}
COMMON = Obj(
    {**_FILE, "input": INPUT, "fingerprint": _FINGERPRINT, "architecture": ARCH},
    {"teacher": TEACHER_REF, "tasks": List(Str(200)), **_LATENT, "complete": Bool(),
     "epochs": Int(0, 10**9), "metrics": Anything()},
    rules=[_projection_sized],
)
BRICK = Obj(
    {**_FILE, "input": INPUT, "task": TASK, "fingerprint": _FINGERPRINT, "common_fingerprint": _FINGERPRINT,
     "architecture": BRICK_ARCH},
    {"teacher": TEACHER_REF, "title": Nullable(Str(500)), "complete": Bool(), "epochs": Int(0, 10**9),
     "metrics": Anything(), "teacher_metrics": Anything(), "detector": DETECTOR},
)
EXPORT = Obj(
    {**_FILE, "format": Str(50, nonempty=True), "input": INPUT, "tasks": List(TASK),
     "outputs": List(Obj({"name": Str(300, nonempty=True), "kind": Str(50)}, {"task": Nullable(Str(200))})),
     "output_names": List(Str(300, nonempty=True))},
    {"sha256": Str(128), "teacher": TEACHER_REF},
)
RUN = Obj({**_FILE, "config": Map(Anything())}, {"tasks": List(TASK), "teacher": TEACHER_REF})

_POSITION = List(Num(-1e9, 1e9), 2, 2)
_SECTION = Map(Anything())
PROJECT_V1 = Obj(
    {"schema_version": Int(1, 1)},
    {"teacher": Nullable(Str(4096)), "data": Nullable(Str(4096)), "common": Nullable(Str(4096)),
     "config": _SECTION,
     "bricks": List(Obj({"file": Str(4096, nonempty=True)},
                        {"x": Num(-1e9, 1e9), "y": Num(-1e9, 1e9), "attached": Bool()}))},
)
PROJECT_V2 = Obj(
    {"schema_version": Int(2, 2), "kind": Str(100), "teacher": _SECTION, "data": _SECTION,
     "factorization": _SECTION, "common": Nullable(Obj({"path": Str(4096, nonempty=True)},
                                                       {"sha256": Nullable(Str(128)), "position": _POSITION,
                                                        "bundle_prefix": Nullable(Str(200))})),
     "bricks": List(Obj({"id": Str(200, nonempty=True), "path": Str(4096, nonempty=True), "position": _POSITION},
                        {"sha256": Nullable(Str(128)), "attached": Bool(), "title": Nullable(Str(500)),
                         "bundle_prefix": Nullable(Str(200))}))},
    {"studio": Anything()},
)

_PART_POSITION = Nullable(List(Num(-1e9, 1e9), 2, 2))
BUNDLE = Obj(
    {**_FILE,
     "common": Obj({"prefix": Str(200), "manifest": Obj({"architecture": ARCH, "fingerprint": _FINGERPRINT,
                                                         "input": INPUT}, _LATENT, rules=[_projection_sized])},
                   {"position": _PART_POSITION}),
     "bricks": List(Obj({"prefix": Str(200), "title": Str(500),
                         "manifest": Obj({"architecture": BRICK_ARCH, "fingerprint": _FINGERPRINT, "task": TASK,
                                          "common_fingerprint": _FINGERPRINT, "input": INPUT},
                                         {"detector": DETECTOR})},
                        {"position": _PART_POSITION}))},
)
