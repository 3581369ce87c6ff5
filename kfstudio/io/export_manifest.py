"""The manifest beside every exported file: what the network computes, how to feed it and read
its outputs (names, classes, a subset's "none of these" answer with its meaning), which common
module and bricks it was made of, and how it scored. Written with the file, checked when read.
"""

from __future__ import annotations

from pathlib import Path

from kfstudio.assembly.build import AssembledNetwork, prediction_output
from kfstudio.core.errors import FileFormatError
from kfstudio.core.spec import InputSpec
from kfstudio.core.tasks import ONE_VS_REST, Task, group_tasks
from kfstudio.io import manifests
from kfstudio.io.atomic import read_json
from kfstudio.io.schema import validate

EXPORT_SCHEMA_VERSION = 1
EXPORT_KIND = "kfstudio-export"
INPUT_NAME = "input"


def task_output_name(task: Task) -> str:
    """An output name anyone can type: the task's title with anything but letters/digits as '_'."""
    cleaned = "".join(c if c.isalnum() else "_" for c in task.title).strip("_")
    return cleaned or "task"


def output_names(network: AssembledNetwork) -> list[str]:
    return [task_output_name(t) for t in network.tasks] + [n for n, _ in network._combined_names]


NONE_OF_THESE = "none of these"


def _threshold_entry(network: AssembledNetwork, task: Task) -> dict:
    if task.name not in network.thresholds:
        return {}
    return {"threshold": network.thresholds[task.name],
            "threshold_meaning": "the brick's calibrated detector fires (says 'this is my class') above this logit"}


def _prediction_entry(group) -> dict:
    entry = {"name": prediction_output(group.source), "kind": "prediction", "source": group.source,
             "classes": list(group.classes), "class_names": list(group.class_names), "shape": ["batch"],
             "dtype": "int64", "meaning": f"the chosen {group.source} class index among the attached classes"}
    if group.rest:
        entry.update(classes=[*group.classes, -1], class_names=[*group.class_names, NONE_OF_THESE],
                     none_of_these=-1,
                     meaning=f"the chosen {group.source} class index among the attached classes, or -1: class "
                     f"'{NONE_OF_THESE}': no brick's calibrated detector fired (no logit above its threshold)")
    return entry


def _output_entries(network: AssembledNetwork) -> list[dict]:
    entries = [{"name": task_output_name(t), "kind": "logits", "task": t.name, "title": t.title,
                "source": t.source, "classes": list(t.classes), "class_names": list(t.class_names),
                "shape": ["batch", t.num_outputs], **_threshold_entry(network, t)} for t in network.tasks]
    entries += [_prediction_entry(g) for g in group_tasks(network.tasks) if g.tasks[0].kind == ONE_VS_REST]
    return entries


def _input_entry(spec: InputSpec) -> dict:
    return {**spec.to_dict(), "name": INPUT_NAME, "shape": ["batch", *spec.shape], "dtype": "float32",
            "how_to_feed": "pixels scaled to [0, 1], then (x - mean) / std per channel, NCHW"}


def build_manifest(network: AssembledNetwork, fmt, path: Path, metrics: dict | None,
                   self_test: dict) -> dict:
    prov = network.provenance
    common = prov.common_manifest if prov else {}
    return {
        "schema_version": EXPORT_SCHEMA_VERSION, "kind": EXPORT_KIND, "format": fmt.name, "file": path.name,
        "runtime": fmt.runtime, "input": _input_entry(network.input_spec),
        "output_names": output_names(network), "outputs": _output_entries(network),
        "tasks": [t.to_dict() for t in network.tasks],
        "class_names": {task_output_name(t): list(t.class_names) for t in network.tasks},
        "teacher": common.get("teacher"),
        "common": {"path": prov.common_path, "fingerprint": common.get("fingerprint")} if prov else None,
        "bricks": [{"task": b.manifest.get("task", {}).get("name"), "title": b.title, "path": b.path,
                    "fingerprint": b.manifest.get("fingerprint"), "detector": b.manifest.get("detector")}
                   for b in prov.bricks] if prov else [],
        "metrics": metrics or _brick_metrics(network),
        "self_test": self_test,
    }


def _brick_metrics(network: AssembledNetwork) -> dict:
    """The metrics each brick recorded when it was factorized, by task."""
    if network.provenance is None:
        return {}
    return {b.manifest.get("task", {}).get("name"): b.manifest.get("metrics") for b in network.provenance.bricks}


def read_export_manifest(path: str | Path) -> dict:
    """The manifest ``<file>.json`` of an exported network: parse -> version and kind check -> schema."""
    mpath = Path(str(path) + ".json")
    manifest = read_json(
        mpath,
        missing=FileFormatError(f"'{Path(path).name}' has no manifest '{mpath.name}' beside it; it says how to feed the model."),
        corrupt=FileFormatError(f"The manifest '{mpath}' is not valid JSON (it may be truncated)."))
    if not isinstance(manifest, dict) or manifest.get("kind") != EXPORT_KIND:
        raise FileFormatError(f"'{mpath}' is not the manifest of a KF Studio export.")
    version = manifest.get("schema_version")
    if not isinstance(version, int) or version > EXPORT_SCHEMA_VERSION:
        raise FileFormatError(f"'{mpath}' was written by a newer KF Studio (schema {version}); update KF Studio to read it.")
    return _check_outputs(validate(manifest, manifests.EXPORT, mpath, "export manifest"), mpath)


def _check_outputs(manifest: dict, mpath: Path) -> dict:
    """Every described output is one the file gives, once, and every logits output names a task."""
    names, tasks = manifest["output_names"], {t["name"] for t in manifest["tasks"]}
    damaged = f"The manifest '{mpath}' is damaged"
    if len(set(names)) != len(names):
        raise FileFormatError(f"{damaged}: it lists an output name twice; export the network again.")
    for entry in manifest["outputs"]:
        if entry["name"] not in names:
            raise FileFormatError(f"{damaged}: it describes an output '{entry['name']}' that the file does not "
                                  "give; export the network again.")
        if entry["kind"] == "logits" and entry.get("task") not in tasks:
            raise FileFormatError(f"{damaged}: the output '{entry['name']}' is for a task it does not list; "
                                  "export the network again.")
    return manifest


# ---------------------------------------------------------------- export with self-test
