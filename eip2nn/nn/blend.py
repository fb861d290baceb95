"""A blend file: the weighted mean of several saved eip2nn models, e.g. the best few arms of a pipeline cell.

E = Σ_k w_k E_k with Σ_k w_k = 1; forces and stress are the same means, so the blend is a potential (its forces
are its energy's gradient). Unlike a committee (:mod:`eip2nn.nn.committee`: one design, one graph) the members
may differ in everything: backbone, cut-off, SNAP prior, Δ-learning EIP. The file is JSON::

    {"format": "eip2nn-blend", "version": 1,
     "members": [{"name": "delta", "model": "../stages/delta-1a2b/model.pt", "weight": 0.5}, ...]}

Member paths are relative to the file's folder (absolute ones are kept), so a pipeline's output folder can move.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

BLEND_FORMAT = "eip2nn-blend"
BLEND_VERSION = 1
BLEND_SUFFIX = ".blend.json"


@dataclass(frozen=True)
class BlendMember:
    name: str  # what the member is (the arm it came from)
    model: Path  # its checkpoint
    weight: float  # its share of the blend, in (0, 1]


def is_blend(path: str | Path) -> bool:
    return str(path).endswith(BLEND_SUFFIX)


def write_blend(path: str | Path, members: list[BlendMember]) -> Path:
    """Write the blend of ``members`` (weights summing to 1) to ``path`` (ending in .blend.json)."""
    path = Path(path)
    _check(path, members)
    path.parent.mkdir(parents=True, exist_ok=True)
    records = [{"name": m.name, "model": os.path.relpath(Path(m.model).resolve(), path.parent.resolve()),
                "weight": m.weight} for m in members]
    path.write_text(json.dumps({"format": BLEND_FORMAT, "version": BLEND_VERSION, "members": records}, indent=1))
    return path


def read_blend(path: str | Path) -> list[BlendMember]:
    """The members of blend file ``path``, their checkpoints as paths that exist; ValueError naming the file and
    what is wrong otherwise."""
    path = Path(path)
    try:
        payload = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable blend file ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != BLEND_FORMAT:
        raise ValueError(f"{path}: not an eip2nn blend file (no \"format\": \"{BLEND_FORMAT}\")")
    if payload.get("version") != BLEND_VERSION:
        raise ValueError(f"{path}: blend file version {payload.get('version')!r}; this eip2nn reads {BLEND_VERSION}")
    try:
        members = [BlendMember(str(r["name"]), Path(os.path.normpath(path.parent / r["model"])), float(r["weight"]))
                   for r in payload["members"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: a member lacks its name, model or weight ({exc})") from exc
    _check(path, members)
    for m in members:
        if not m.model.is_file():
            raise ValueError(f"{path}: member {m.name}'s model {m.model} does not exist")
    return members


def _check(path: Path, members: list[BlendMember]) -> None:
    if not is_blend(path):
        raise ValueError(f"{path}: a blend file's name ends in {BLEND_SUFFIX}")
    if len(members) < 2:
        raise ValueError(f"{path}: a blend needs at least 2 members, got {len(members)}")
    if any(not 0.0 < m.weight <= 1.0 for m in members) or abs(sum(m.weight for m in members) - 1.0) > 1e-9:
        raise ValueError(f"{path}: member weights {[m.weight for m in members]} must lie in (0, 1] and sum to 1")
