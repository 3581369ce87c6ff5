"""The safetensors bundle: one file holding a whole assembled network, re-editable.

The weights of the common module and of every brick sit in one safetensors file under
the prefixes ``common.`` and ``bricks.<i>.``; the file's own metadata (key ``kfstudio``)
holds the original manifests, the canvas titles and positions. Loading rebuilds the
common module and the bricks (checking each fingerprint), so the bundle opens as a canvas
again (``graph_from_bundle``) or as a network (``load_bundle_network``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save

from kfstudio.assembly.build import AssembledNetwork, build_from_files
from kfstudio.assembly.graph import BrickGraph
from kfstudio.core import safe_json
from kfstudio.core.errors import FileFormatError, KFError
from kfstudio.core.students.networks import BrickSpec, TaskBrick
from kfstudio.io import manifests
from kfstudio.io.bricks import BrickFile, CommonFile, build_checked, common_builder, fingerprint
from kfstudio.io.schema import validate

BUNDLE_SCHEMA_VERSION = 1
BUNDLE_KIND = "kfstudio-bundle"
META_KEY = "kfstudio"


def write_bundle(network: AssembledNetwork, path: Path) -> None:
    """Write ``network``'s weights and the manifests it was built from into ``path``."""
    prov = network.provenance
    if prov is None:
        raise KFError("This network does not know the files it was built from, so it cannot be bundled.")
    tensors = {f"common.{k}": v for k, v in network.common.state_dict().items()}
    bricks = []
    for i, (task, source) in enumerate(zip(network.tasks, prov.bricks)):
        module = network.bricks[dict(network._keys)[task.name]]
        tensors.update({f"bricks.{i}.{k}": v for k, v in module.state_dict().items()})
        bricks.append({"prefix": f"bricks.{i}.", "manifest": source.manifest, "title": source.title,
                       "position": source.position})
    meta = {"schema_version": BUNDLE_SCHEMA_VERSION, "kind": BUNDLE_KIND,
            "common": {"prefix": "common.", "manifest": prov.common_manifest, "position": prov.common_position},
            "bricks": bricks}
    # In memory first: a full disk is then an OSError of the write, not an error inside safetensors.
    path.write_bytes(save({k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                          metadata={META_KEY: json.dumps(meta)}))


@dataclass
class Bundle:
    """What a bundle holds: the common module, its bricks, and how they sat on the canvas."""

    common: CommonFile
    common_position: tuple[float, float] | None
    bricks: list[BrickFile]
    titles: list[str]
    positions: list[tuple[float, float] | None]


def _read(path: Path) -> tuple[dict, dict[str, torch.Tensor]]:
    if not path.is_file():
        raise FileFormatError(f"The bundle '{path}' does not exist.")
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta_text = (fh.metadata() or {}).get(META_KEY)
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise FileFormatError(f"'{path.name}' is not a readable safetensors file (it may be truncated): {exc}.") from None
    try:
        meta = safe_json.loads(meta_text) if meta_text else None
    except ValueError:
        meta = None
    if not isinstance(meta, dict) or meta.get("kind") != BUNDLE_KIND:
        raise FileFormatError(f"'{path.name}' is a safetensors file but not a KF Studio bundle.")
    if not isinstance(meta.get("schema_version"), int) or meta["schema_version"] > BUNDLE_SCHEMA_VERSION:
        raise FileFormatError(f"'{path.name}' was written by a newer KF Studio; update KF Studio to open it.")
    return meta, tensors


def _part(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def _filled(module: torch.nn.Module, state: dict[str, torch.Tensor], manifest: dict, what: str, path: Path):
    try:
        module.load_state_dict(state)
    except RuntimeError:
        raise FileFormatError(f"The weights of {what} in '{path.name}' do not match its description.") from None
    if fingerprint(module.state_dict()) != manifest.get("fingerprint"):
        raise FileFormatError(f"The weights of {what} in '{path.name}' are not the ones its manifest describes.")
    return module.eval()


def _module(build, tensors: dict[str, torch.Tensor], prefix: str, manifest: dict, what: str, path: Path):
    state = _part(tensors, prefix)
    module = build_checked(build, {k: tuple(v.shape) for k, v in state.items()}, path, what)
    return _filled(module, state, manifest, what, path)


def load_bundle(path: str | Path) -> Bundle:
    """Rebuild every part of a bundle, checking its description, sizes and each part's fingerprint."""
    path = Path(path)
    meta, tensors = _read(path)
    meta = validate(meta, manifests.BUNDLE, path, "KF Studio bundle")
    c = meta["common"]
    common_manifest = {**c["manifest"], "bundle_prefix": c["prefix"]}
    common = CommonFile(_module(common_builder(common_manifest), tensors, c["prefix"], common_manifest,
                                "common module", path), common_manifest, path)
    bricks, titles, positions = [], [], []
    for b in meta["bricks"]:
        manifest = {**b["manifest"], "bundle_prefix": b["prefix"]}
        brick_spec = BrickSpec.from_dict(manifest["architecture"])
        module = _module(lambda s=brick_spec: TaskBrick(s), tensors, b["prefix"], manifest,
                         f"brick '{b['title']}'", path)
        bricks.append(BrickFile(module, manifest, path))
        titles.append(b["title"])
        positions.append(tuple(b["position"]) if b.get("position") else None)
    pos = c.get("position")
    return Bundle(common, tuple(pos) if pos else None, bricks, titles, positions)


def load_bundle_brick(path: str | Path, prefix: str) -> BrickFile:
    """One brick of a bundle (how a project refers to a brick that lives in a bundle)."""
    for brick in load_bundle(path).bricks:
        if brick.manifest.get("bundle_prefix") == prefix:
            return brick
    raise FileFormatError(f"The bundle '{Path(path).name}' holds no brick '{prefix}'.")


def load_bundle_network(path: str | Path) -> AssembledNetwork:
    b = load_bundle(path)
    return build_from_files(b.common, b.bricks, b.titles, b.positions, b.common_position)


def graph_from_bundle(path: str | Path) -> BrickGraph:
    """A canvas with the bundle's common module and its bricks attached, where they were."""
    b = load_bundle(path)
    graph = BrickGraph()
    graph.set_common(b.common, b.common_position or (0.0, 0.0))
    for i, (brick, title, pos) in enumerate(zip(b.bricks, b.titles, b.positions)):
        node = graph.add_brick(brick, pos or default_brick_position(i), title=title)
        graph.attach(node)
    return graph


def default_brick_position(index: int) -> tuple[float, float]:
    """Where a brick goes when nobody placed it: a column to the right of the common module."""
    return (260.0, 110.0 * index)
