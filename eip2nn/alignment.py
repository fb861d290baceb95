"""Per-element energy offsets: put two energy sources on one zero.

EIP and DFT energies (and a network head's) differ by a constant per atom of
each element, eV/atom apart. The offsets μ solve ``counts @ μ ≈ residual`` by
least squares over the structures that carry both labels.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms


def element_counts(structures: list[Atoms], elements: list[str]) -> np.ndarray:
    """(n_structures, n_elements) number of atoms of each element."""
    index = {e: k for k, e in enumerate(elements)}
    counts = np.zeros((len(structures), len(elements)))
    for row, atoms in enumerate(structures):
        for z, n in zip(*np.unique(atoms.get_chemical_symbols(), return_counts=True)):
            counts[row, index[z]] = n
    return counts


def per_element_offsets(counts: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Least-squares μ with ``counts @ μ ≈ residual``.

    counts: (n_structures, n_elements) atom counts; residual: (n_structures,) eV.
    Returns (n_elements,) eV/atom.
    """
    mu, *_ = np.linalg.lstsq(counts.astype(float), residual, rcond=None)
    return mu
