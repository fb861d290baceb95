"""Training samples: a structure's graph plus its targets, one per head.

Targets are named like the heads that predict them. The DFT head reads
``REF_energy``/``REF_forces``; an EIP head reads the EIP's attached labels
``<eip_id>_energy``/``<eip_id>_forces`` (see
:func:`eip2nn.labelling.export.attach_labels`). The ``weak`` target (read
from ``WEAK_energy``/``WEAK_forces``, predicted by the DFT head) holds the
pseudo-DFT labels of weak supervision. A structure without a label
for a head simply has no target for it (e.g. the EIP failed on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from ase import Atoms

from eip2nn.keys import CONFIG_ID, ENERGY, FORCES, REF_ENERGY, REF_FORCES, WEAK_ENERGY, WEAK_FORCES, eip_key
from eip2nn.nn.graph import AtomicGraph
from eip2nn.nn.model import DFT_HEAD

WEAK_TARGET = "weak"


@dataclass
class Target:
    energy: float  # eV, total
    forces: torch.Tensor | None  # (n_atoms, 3) eV/Å


@dataclass
class Sample:
    graph: AtomicGraph
    name: str  # config id, for error messages and parity plots
    counts: np.ndarray  # (n_species,) atoms per element, in the model's species order
    targets: dict[str, Target] = field(default_factory=dict)

    @property
    def n_atoms(self) -> int:
        return self.graph.n_atoms


def target_keys(head: str) -> tuple[str, str]:
    """(energy key in info, forces key in arrays) for ``head``."""
    if head == DFT_HEAD:
        return REF_ENERGY, REF_FORCES
    if head == WEAK_TARGET:
        return WEAK_ENERGY, WEAK_FORCES
    return eip_key(head, ENERGY), eip_key(head, FORCES)


def read_target(atoms: Atoms, head: str, dtype: torch.dtype = torch.float64) -> Target | None:
    ekey, fkey = target_keys(head)
    if ekey not in atoms.info:
        return None
    forces = atoms.arrays.get(fkey)
    return Target(float(atoms.info[ekey]), None if forces is None else torch.tensor(forces, dtype=dtype))


def make_samples(model, structures: list[Atoms], heads: list[str]) -> list[Sample]:
    """One sample per structure, with targets for those of ``heads`` it carries."""
    dtype = next(model.parameters()).dtype
    out = []
    for k, atoms in enumerate(structures):
        name = str(atoms.info.get(CONFIG_ID, f"structure {k}"))
        graph = model.graph(atoms, where=name)
        counts = np.bincount(graph.species.numpy(), minlength=len(model.species)).astype(float)
        targets = {h: t for h in heads if (t := read_target(atoms, h, dtype)) is not None}
        out.append(Sample(graph, name, counts, targets))
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
