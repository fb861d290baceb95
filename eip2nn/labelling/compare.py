"""How close each EIP's labels are to the reference (DFT) labels.

EIP and DFT energies have different zeros (eV/atom apart), so energies are
compared after fitting one offset per element (least squares over the
structures compared): E_ref ≈ E_eip + Σ_el n_el μ_el.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from eip2nn.alignment import aligned_energy_errors
from eip2nn.keys import REF_ENERGY, REF_FORCES
from eip2nn.labelling.hashing import structure_hash
from eip2nn.labelling.store import LabelStore


@dataclass(frozen=True)
class Agreement:
    eip_id: str
    n_structures: int  # structures with both an EIP and a reference label
    energy_mae: float  # meV/atom, after per-element offsets
    energy_rmse: float  # meV/atom, after per-element offsets
    force_mae: float  # eV/Å, per component
    force_rmse: float  # eV/Å, per component
    offsets: dict[str, float]  # eV/atom per element, added to EIP energies


def compare_to_reference(structures: list[Atoms], store: LabelStore, eip_id: str) -> Agreement | None:
    """Agreement of ``eip_id``'s stored labels with REF labels; None if nothing to compare."""
    by_hash = {structure_hash(a): a for a in structures if REF_ENERGY in a.info}
    labels = {lab.structure_hash: lab for lab in store.labels(eip_id, hashes=by_hash)}
    if not labels:
        return None
    hashes = list(labels)
    elements = sorted({s for h in hashes for s in by_hash[h].get_chemical_symbols()})
    counts = np.array([[by_hash[h].get_chemical_symbols().count(e) for e in elements] for h in hashes])
    e_ref = np.array([by_hash[h].info[REF_ENERGY] for h in hashes])
    e_eip = np.array([labels[h].energy for h in hashes])
    de, mu = aligned_energy_errors(counts, e_ref, e_eip)  # meV/atom
    df = np.concatenate([(labels[h].forces - by_hash[h].arrays[REF_FORCES]).ravel()
                         for h in hashes if REF_FORCES in by_hash[h].arrays])
    return Agreement(eip_id, len(hashes), float(np.abs(de).mean()), float(np.sqrt((de ** 2).mean())),
                     float(np.abs(df).mean()), float(np.sqrt((df ** 2).mean())),
                     dict(zip(elements, map(float, mu))))
