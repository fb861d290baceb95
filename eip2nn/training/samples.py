"""Training samples: a structure's graph plus its targets, one per head.

Targets are named like the heads that predict them. The DFT head reads
``REF_energy``/``REF_forces``/``REF_stress``; an EIP head reads the EIP's
attached labels ``<eip_id>_energy``/``_forces``/``_stress`` (see
:func:`eip2nn.labelling.export.attach_labels`). The ``weak`` target (read
from ``WEAK_energy``/``WEAK_forces``, predicted by the DFT head) holds the
pseudo-DFT labels of weak supervision; it has no stress. A structure without
a label for a head simply has no target for it (e.g. the EIP failed on it).
An EIP target also carries the EIP's local (per-atom) energies where stored
(``<eip_id>_local_energies``).
Stress is read for fully periodic structures only (the model's stress of any
other structure is NaN), and only when it is finite.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms

from eip2nn.keys import (
    ENERGY,
    FORCES,
    GROUP,
    LOCAL_ENERGIES,
    REF_ENERGY,
    REF_FORCES,
    REF_STRESS,
    STRESS,
    WEAK_ENERGY,
    WEAK_FORCES,
    eip_key,
    structure_name,
)
from eip2nn.nn.graph import AtomicGraph
from eip2nn.nn.model import DFT_HEAD

WEAK_TARGET = "weak"
NO_GROUP = "unknown"  # Sample.group of a structure without atoms.info[GROUP]


@dataclass
class Target:
    energy: float  # eV, total
    forces: torch.Tensor | None  # (n_atoms, 3) eV/Å
    stress: torch.Tensor | None = None  # (6,) Voigt xx yy zz yz xz xy, eV/Å³, positive = tensile; periodic only
    local_energies: torch.Tensor | None = None  # (n_atoms,) eV, each atom's share (EIP targets that have them)


@dataclass
class Sample:
    graph: AtomicGraph
    name: str  # config id, for error messages and parity plots
    counts: np.ndarray  # (n_species,) atoms per element, in the model's species order
    targets: dict[str, Target] = field(default_factory=dict)
    group: str = NO_GROUP  # atoms.info[GROUP], e.g. "Elastic"; for per-group metrics

    @property
    def n_atoms(self) -> int:
        return self.graph.n_atoms


def target_keys(head: str) -> tuple[str, str, str | None]:
    """(energy key in info, forces key in arrays, stress key in info or None) for ``head``."""
    if head == DFT_HEAD:
        return REF_ENERGY, REF_FORCES, REF_STRESS
    if head == WEAK_TARGET:
        return WEAK_ENERGY, WEAK_FORCES, None
    return eip_key(head, ENERGY), eip_key(head, FORCES), eip_key(head, STRESS)


def _stress(atoms: Atoms, key: str | None, dtype: torch.dtype) -> torch.Tensor | None:
    """The (6,) stress under ``key``, if ``atoms`` is fully periodic and the value finite."""
    value = atoms.info.get(key) if key is not None and atoms.pbc.all() else None
    if value is None:
        return None
    value = np.asarray(value, dtype=float)
    if value.shape != (6,):
        raise ValueError(f"{key} has shape {value.shape}; expected (6,) Voigt xx yy zz yz xz xy in eV/Å³")
    return torch.tensor(value, dtype=dtype) if np.isfinite(value).all() else None


def read_target(atoms: Atoms, head: str, dtype: torch.dtype = torch.float64) -> Target | None:
    ekey, fkey, skey = target_keys(head)
    if ekey not in atoms.info:
        return None
    forces = atoms.arrays.get(fkey)
    local = atoms.arrays.get(eip_key(head, LOCAL_ENERGIES)) if head not in (DFT_HEAD, WEAK_TARGET) else None
    return Target(float(atoms.info[ekey]), None if forces is None else torch.tensor(forces, dtype=dtype),
                  _stress(atoms, skey, dtype), None if local is None else torch.tensor(local, dtype=dtype))


def make_samples(model, structures: list[Atoms], heads: list[str]) -> list[Sample]:
    """One sample per structure, with targets for those of ``heads`` it carries."""
    dtype = next(model.parameters()).dtype
    out = []
    for k, atoms in enumerate(structures):
        name = structure_name(atoms, k)
        graph = model.graph(atoms, where=name)
        counts = np.bincount(graph.species.numpy(), minlength=len(model.species)).astype(float)
        targets = {h: t for h in heads if (t := read_target(atoms, h, dtype)) is not None}
        out.append(Sample(graph, name, counts, targets, str(atoms.info.get(GROUP, NO_GROUP))))
    return out


def head_arrays(samples: list[Sample], head: str) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """(counts (S, n_species), energies (S,) eV, forces) over samples labelled for ``head``."""
    have = [s for s in samples if head in s.targets]
    if not have:
        raise ValueError(f"no training structure carries a label for head {head!r}")
    counts = np.stack([s.counts for s in have])
    energies = np.array([s.targets[head].energy for s in have])
    forces = [s.targets[head].forces.numpy() for s in have if s.targets[head].forces is not None]
    return counts, energies, forces
