"""The one interface every EIP backend implements, and its factory.

An evaluator is long-lived: it loads its model once and then evaluates many
structures (``evaluate(atoms) -> EIPResult``). Problems with one structure are
raised as :class:`EvaluationError` with a ``kind`` so callers can record them
as data instead of crashing a batch.
"""

from __future__ import annotations

import functools
from typing import NamedTuple, Protocol

import numpy as np
from ase import Atoms

from eip2nn.potentials.frames import inverse_3x3
from eip2nn.potentials.spec import PotentialSpec

# Failure kinds recorded by the labelling engine.
UNSUPPORTED_SPECIES = "unsupported_species"
TOO_CLOSE = "atoms_too_close"
NON_FINITE = "non_finite"
UNSUPPORTED_CELL = "unsupported_cell"
BACKEND_ERROR = "backend_error"

MIN_DISTANCE = 0.5  # Å; closer pairs are refused before evaluation
MAX_ABS_ENERGY_PER_ATOM = 1.0e3  # eV/atom; beyond this a result is not physical


class EIPResult(NamedTuple):
    """One EIP's labels for one structure."""

    energy: float  # total, eV
    forces: np.ndarray  # (n_atoms, 3), eV/Å
    stress: np.ndarray | None  # (6,) ASE Voigt, eV/Å³, positive = tensile; None if unavailable


class EvaluationError(Exception):
    """A structure this EIP cannot label, with a machine-readable ``kind``."""

    def __init__(self, kind: str, reason: str):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class Evaluator(Protocol):
    spec: PotentialSpec

    def evaluate(self, atoms: Atoms) -> EIPResult: ...

    def close(self) -> None: ...


def make_evaluator(spec: PotentialSpec) -> Evaluator:
    """A ready evaluator for ``spec`` (imports the backend lazily)."""
    if spec.backend_type == "kim":
        from eip2nn.potentials.kim_backend import KIMEvaluator
        return KIMEvaluator(spec)
    from eip2nn.potentials.lammps_backend import LAMMPSEvaluator
    return LAMMPSEvaluator(spec)


def check_species(spec: PotentialSpec, atoms: Atoms) -> None:
    """Raise UNSUPPORTED_SPECIES if ``atoms`` has an element ``spec`` lacks."""
    elements = set(atoms.get_chemical_symbols())
    if not spec.supports(elements):
        raise EvaluationError(UNSUPPORTED_SPECIES, unsupported_reason(spec, elements))


def unsupported_reason(spec: PotentialSpec, elements: set[str] | frozenset[str]) -> str:
    """Why ``spec`` cannot label a structure made of ``elements`` (one wording everywhere)."""
    missing = sorted(set(elements) - set(spec.species))
    return f"structure contains {missing}; {spec.id} supports only {list(spec.species)}"


def check_min_distance(atoms: Atoms, min_distance: float = MIN_DISTANCE) -> None:
    """Raise TOO_CLOSE if two atoms (or periodic images) are closer than ``min_distance`` Å."""
    if len(atoms) < 2 and not atoms.pbc.any():
        return
    if atoms.pbc.any():
        cell, origin = atoms.cell.array, _ORIGIN
    else:  # a cluster or molecule: any box around it will do
        low, high = atoms.positions.min(axis=0), atoms.positions.max(axis=0)
        cell, origin = np.diag(high - low + 2 * min_distance + 1.0), low - min_distance - 0.5
    try:
        inv_cell_t = inverse_transpose(cell)
    except ValueError as e:
        raise EvaluationError(UNSUPPORTED_CELL, f"periodic cell {cell.tolist()}: {e}") from None
    check_min_distance_in_cell(atoms.positions, cell, inv_cell_t, atoms.pbc, min_distance, origin)


def check_min_distance_in_cell(positions: np.ndarray, cell: np.ndarray, inv_cell_t: np.ndarray,
                               pbc: np.ndarray, min_distance: float = MIN_DISTANCE,
                               origin: np.ndarray | None = None) -> None:
    """:func:`check_min_distance` for a known cell: positions (n, 3) Å, cell rows (3, 3) Å,
    ``inv_cell_t`` = inv(cell.T) (cached by callers that evaluate many structures in one cell).

    Calls matscipy's C neighbour list directly; its Python wrapper costs twice the search.
    """
    from matscipy import _matscipy

    args = (_ORIGIN if origin is None else origin, cell, inv_cell_t, pbc, positions, min_distance,
            _ones(len(positions)))  # as "atomic numbers": one cut-off for all pairs
    if len(_matscipy.neighbour_list("d", *args)):
        i, j, d = _matscipy.neighbour_list("ijd", *args)
        k = int(np.argmin(d))
        raise EvaluationError(
            TOO_CLOSE, f"atoms {i[k]} and {j[k]} are {d[k]:.3f} Å apart (< {min_distance} Å)")


def inverse_transpose(cell: np.ndarray) -> np.ndarray:
    """inv(cell.T) for a (3, 3) cell; raises ValueError for a cell of zero volume."""
    return inverse_3x3(np.asarray(cell, dtype=float).T)


_ORIGIN = np.zeros(3)


@functools.lru_cache(maxsize=64)
def _ones(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.int32)


def check_result(result: EIPResult, n_atoms: int) -> EIPResult:
    """Raise NON_FINITE for NaN/inf or absurd energies; else return ``result``."""
    e, f, s = result
    total = e + f.sum() + (0.0 if s is None else s.sum())  # one reduction: NaN/inf propagate
    if not np.isfinite(total):
        raise EvaluationError(NON_FINITE, f"non-finite energy/forces/stress (E = {e} eV)")
    if abs(e) / max(n_atoms, 1) > MAX_ABS_ENERGY_PER_ATOM:
        raise EvaluationError(
            NON_FINITE, f"|E|/atom = {abs(e) / n_atoms:.3g} eV > {MAX_ABS_ENERGY_PER_ATOM} eV")
    return result
