"""Per-element energy offsets: put two energy sources on one zero.

EIP and DFT energies (and a network head's) differ by a constant per atom of
each element, eV/atom apart. The offsets μ solve ``counts @ μ ≈ residual`` by
least squares over the structures that carry both labels.
"""

from __future__ import annotations

import numpy as np


def per_element_offsets(counts: np.ndarray, residual: np.ndarray) -> np.ndarray:
    """Least-squares μ with ``counts @ μ ≈ residual``.

    counts: (n_structures, n_elements) atom counts; residual: (n_structures,) eV.
    Returns (n_elements,) eV/atom.
    """
    mu, *_ = np.linalg.lstsq(counts.astype(float), residual, rcond=None)
    return mu


def aligned_energy_errors(counts: np.ndarray, reference: np.ndarray, predicted: np.ndarray
                          ) -> tuple[np.ndarray, np.ndarray]:
    """(per-structure errors in meV/atom, offsets μ in eV/atom) after aligning ``predicted``.

    counts: (S, n_elements); reference, predicted: (S,) total energies, eV.
    """
    mu = per_element_offsets(counts, reference - predicted)
    return (predicted + counts @ mu - reference) / counts.sum(axis=1) * 1000.0, mu
