"""One EIP as described by a ``potentials_db/*.yaml`` file.

A spec says *what* a potential is (species, backend, parameters, provenance,
leakage tags); the backends in :mod:`eip2nn.potentials.backends` say how to
evaluate it. Loading rejects unknown keys and names the file and the key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from ase.data import chemical_symbols

BACKENDS = ("kim", "lammps")
KINDS = ("empirical", "machine-learned")
# ``source_file`` of a spec made for an installed OpenKIM model that has no potentials_db entry
DISCOVERED_SOURCE = "discovered: installed OpenKIM collection"


class PotentialSpecError(ValueError):
    """A potentials_db entry is malformed; the message names file and key."""


@dataclasses.dataclass(frozen=True)
class KIMBackend:
    """An OpenKIM portable model, evaluated through the KIM-API (kimpy)."""

    model: str  # full OpenKIM id, e.g. SW_StillingerWeber_1985_Si__MO_405512056662_005


@dataclasses.dataclass(frozen=True)
class LAMMPSBackend:
    """A LAMMPS pair style with parameter files from the LAMMPS package.

    ``pair_coeff`` may contain ``{file:NAME}`` (replaced by the absolute path
    of NAME in the potentials folder) and ``{elements}`` (the spec's species
    in LAMMPS type order, space separated).
    """

    pair_style: str  # e.g. "sw"
    pair_coeff: str  # e.g. "* * {file:Si.sw} {elements}"
    files: tuple[str, ...] = ()  # parameter files, looked up in the potentials folder


@dataclasses.dataclass(frozen=True)
class PotentialSpec:
    """A validated potentials_db entry. ``species`` order = LAMMPS type order."""

    id: str
    name: str
    species: tuple[str, ...]
    kind: str  # "empirical" or "machine-learned"
    family: str  # e.g. "SW", "Tersoff", "EAM", "MEAM", "EDIP", "SNAP"
    backend: KIMBackend | LAMMPSBackend
    cutoff: float  # Å, the largest interaction distance
    citation: str
    fitted_to: tuple[str, ...] = ()  # dataset source tags this EIP was fitted to
    known_issues: tuple[tuple[str, str], ...] = ()  # (element, problem) found by `potentials check`
    notes: str = ""
    source_file: str = ""  # the YAML file it came from, or DISCOVERED_SOURCE (not part of the identity)

    @property
    def discovered(self) -> bool:
        """True for an installed OpenKIM model without a potentials_db entry (see discover.discovered_specs)."""
        return self.source_file == DISCOVERED_SOURCE

    @property
    def backend_type(self) -> str:
        return "kim" if isinstance(self.backend, KIMBackend) else "lammps"

    def supports(self, symbols: set[str] | frozenset[str]) -> bool:
        """True if every element in ``symbols`` is among this EIP's species."""
        return set(symbols) <= set(self.species)

    def content_hash(self) -> str:
        """Hash of what defines the labels: id, species (type order), backend, cutoff.

        Descriptive fields (name, citation, notes, tags, known issues) are left
        out, so editing them does not invalidate labels already in a store.
        """
        d = {"id": self.id, "species": self.species, "cutoff": self.cutoff,
             "backend_type": self.backend_type, "backend": dataclasses.asdict(self.backend)}
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


_TOP_KEYS = {"id", "name", "species", "kind", "family", "backend", "cutoff",
             "citation", "fitted_to", "known_issues", "notes"}
_REQUIRED = {"id", "species", "backend", "cutoff", "citation", "family"}
_BACKEND_KEYS = {"kim": {"type", "model"},
                 "lammps": {"type", "pair_style", "pair_coeff", "files"}}


def spec_from_dict(d: dict[str, Any], source: str = "<dict>") -> PotentialSpec:
    """Validate a mapping and build a :class:`PotentialSpec`."""
    def fail(msg: str) -> PotentialSpecError:
        return PotentialSpecError(f"{source}: {msg}")

    if not isinstance(d, dict):
        raise fail(f"expected a mapping, got {type(d).__name__}")
    unknown = set(d) - _TOP_KEYS
    if unknown:
        raise fail(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_TOP_KEYS)}")
    missing = _REQUIRED - set(d)
    if missing:
        raise fail(f"missing required key(s) {sorted(missing)}")
    species = d["species"]
    if isinstance(species, str) or not species:
        raise fail(f"'species' must be a non-empty list of element symbols, got {species!r}")
    for s in species:
        if s not in chemical_symbols[1:]:
            raise fail(f"'species' contains {s!r}, which is not an element symbol")
    kind = d.get("kind", "empirical")
    if kind not in KINDS:
        raise fail(f"'kind' is {kind!r}; expected one of {KINDS}")
    try:
        cutoff = float(d["cutoff"])
    except (TypeError, ValueError):
        raise fail(f"'cutoff' must be a number in Å, got {d['cutoff']!r}") from None
    if not cutoff > 0:
        raise fail(f"'cutoff' must be > 0 Å, got {cutoff}")
    fitted_to = d.get("fitted_to") or []
    if isinstance(fitted_to, str):
        raise fail("'fitted_to' must be a list of dataset tags, e.g. [mlearn]")
    issues = d.get("known_issues") or {}
    if not isinstance(issues, dict) or not set(issues) <= set(species):
        raise fail("'known_issues' must map some of the EIP's species to a text, e.g. "
                   f"{{Cu: 'a0 off by 8%'}}; got {issues!r}")
    return PotentialSpec(
        id=str(d["id"]), name=str(d.get("name", d["id"])), species=tuple(species),
        kind=kind, family=str(d["family"]), backend=_backend_from_dict(d["backend"], fail),
        cutoff=cutoff, citation=str(d["citation"]), fitted_to=tuple(map(str, fitted_to)),
        known_issues=tuple((str(k), str(v)) for k, v in issues.items()),
        notes=str(d.get("notes", "")), source_file=source,
    )


def _backend_from_dict(b: Any, fail) -> KIMBackend | LAMMPSBackend:
    if not isinstance(b, dict) or b.get("type") not in BACKENDS:
        raise fail(f"'backend' must be a mapping with 'type' in {BACKENDS}, got {b!r}")
    allowed = _BACKEND_KEYS[b["type"]]
    unknown = set(b) - allowed
    if unknown:
        raise fail(f"unknown key(s) {sorted(unknown)} in 'backend'; allowed: {sorted(allowed)}")
    if b["type"] == "kim":
        if not b.get("model"):
            raise fail("'backend.model' (the OpenKIM model id) is required")
        return KIMBackend(model=str(b["model"]))
    for key in ("pair_style", "pair_coeff"):
        if not b.get(key):
            raise fail(f"'backend.{key}' is required for a LAMMPS backend")
    return LAMMPSBackend(pair_style=str(b["pair_style"]), pair_coeff=str(b["pair_coeff"]),
                         files=tuple(b.get("files") or ()))


def load_spec(path: str | Path) -> PotentialSpec:
    """Read one YAML file into a :class:`PotentialSpec`."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise PotentialSpecError(f"{path}: not valid YAML: {e}") from None
    spec = spec_from_dict(data, source=str(path))
    if spec.id != path.stem:
        raise PotentialSpecError(f"{path}: id {spec.id!r} must equal the file name {path.stem!r}")
    return spec
