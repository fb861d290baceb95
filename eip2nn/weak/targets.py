"""Which EIP is closest to DFT on each labelled structure, after aligning energy zeros.

Every EIP gets per-element offsets μ (eV/atom), fitted by least squares on the
DFT-labelled training structures, so that ``E_aligned = E_eip + counts @ μ``
is on DFT's energy zero. The selector's target for a structure is the EIP
with the smallest aligned error, or :data:`NONE` when even that error is
above a threshold.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from eip2nn.alignment import aligned_energy_errors
from eip2nn.keys import ENERGY, FORCES, REF_ENERGY, REF_FORCES, eip_failure_key, eip_key, structure_name

NONE = "none"


@dataclass(frozen=True)
class Alignment:
    """One EIP aligned to DFT on a set of labelled structures."""

    eip: str
    offsets: np.ndarray  # (n_species,) eV/atom, added per atom of each element
    energy_mae: float  # aligned energy MAE, meV/atom
    force_mae: float  # force-component MAE, eV/Å (offsets do not change forces)
    n_structures: int

    def aligned_energy(self, atoms: Atoms, counts: np.ndarray) -> float:
        """The EIP's energy of ``atoms`` on DFT's zero, eV; counts: (n_species,)."""
        return float(atoms.info[eip_key(self.eip, ENERGY)] + counts @ self.offsets)


def element_counts(structures: list[Atoms], species: list[str]) -> np.ndarray:
    """(S, n_species) atoms of each element per structure."""
    index = {s: k for k, s in enumerate(species)}
    counts = np.zeros((len(structures), len(species)))
    for i, atoms in enumerate(structures):
        for symbol in atoms.get_chemical_symbols():
            counts[i, index[symbol]] += 1
    return counts


def missing_label(atoms: Atoms, eips: list[str]) -> str | None:
    """The first of ``eips`` without an energy on ``atoms`` (with its failure reason), else None."""
    for eip in eips:
        if eip_key(eip, ENERGY) not in atoms.info:
            reason = atoms.info.get(eip_failure_key(eip), "not labelled")
            return f"{eip}: {reason}"
    return None


def fit_alignments(labelled: list[Atoms], eips: list[str], species: list[str]) -> dict[str, Alignment]:
    """Per-EIP offsets on structures carrying DFT and every EIP's labels."""
    if not labelled:
        raise ValueError("no DFT-labelled structure to align the EIPs on")
    for k, atoms in enumerate(labelled):
        if (missing := missing_label(atoms, eips)) is not None:
            raise ValueError(f"{structure_name(atoms, k)}: no EIP label for {missing}")
    counts = element_counts(labelled, species)
    ref = np.array([a.info[REF_ENERGY] for a in labelled])
    out = {}
    for eip in eips:
        pred = np.array([a.info[eip_key(eip, ENERGY)] for a in labelled])
        errors, mu = aligned_energy_errors(counts, ref, pred)
        df = [a.arrays[eip_key(eip, FORCES)] - a.arrays[REF_FORCES] for a in labelled if REF_FORCES in a.arrays]
        force_mae = float(np.mean(np.abs(np.concatenate([d.ravel() for d in df])))) if df else float("nan")
        out[eip] = Alignment(eip, mu, float(np.mean(np.abs(errors))), force_mae, len(labelled))
    return out


def error_matrix(labelled: list[Atoms], alignments: dict[str, Alignment], species: list[str],
                 force_weight: float = 0.0) -> np.ndarray:
    """(S, K) selection error of each EIP per structure.

    |aligned ΔE| in meV/atom, plus ``force_weight`` × force RMSE in meV/Å when
    ``force_weight`` > 0 (a weighted energy + force error).
    """
    counts = element_counts(labelled, species)
    out = np.zeros((len(labelled), len(alignments)))
    for i, atoms in enumerate(labelled):
        n = len(atoms)
        for k, al in enumerate(alignments.values()):
            err = abs(al.aligned_energy(atoms, counts[i]) - atoms.info[REF_ENERGY]) / n * 1000.0
            if force_weight > 0 and REF_FORCES in atoms.arrays:
                df = atoms.arrays[eip_key(al.eip, FORCES)] - atoms.arrays[REF_FORCES]
                err += force_weight * float(np.sqrt(np.mean(df ** 2))) * 1000.0
            out[i, k] = err
    return out


def selector_targets(errors: np.ndarray, eips: list[str], threshold: float) -> np.ndarray:
    """(S,) class per structure: the EIP with the smallest error, or NONE if that error > ``threshold``."""
    best = errors.argmin(axis=1)
    labels = np.array(eips, dtype=object)[best]
    labels[errors.min(axis=1) > threshold] = NONE
    return labels
