"""Refuse structures with atoms closer than ``MIN_DISTANCE`` Å, before any EIP sees them.

Two ways to know: matscipy's C neighbour search on one structure (exact, and it
names the closest pair), and a bound for many structures in one cell: if every
atom is within δ of its place in a reference structure whose closest pair is
d_ref apart, no pair (with any periodic image) is closer than d_ref − 2δ.
"""

from __future__ import annotations

import functools

import numpy as np
from ase import Atoms

from eip2nn.potentials.evaluator import MIN_DISTANCE, TOO_CLOSE, UNSUPPORTED_CELL, EvaluationError, Geometry, check_geometry
from eip2nn.potentials.frames import inverse_3x3

REFERENCE_RANGE = 3.0  # Å: a reference's closest pair is searched up to this distance


def check_min_distance(atoms: Atoms, min_distance: float = MIN_DISTANCE) -> None:
    """Raise TOO_CLOSE if two atoms (or periodic images) are closer than ``min_distance`` Å
    (and what :func:`check_geometry` raises for geometry no C code should search)."""
    check_geometry(Geometry.of(atoms))
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

    args = _search_args(positions, cell, inv_cell_t, pbc, min_distance, origin)
    if len(_matscipy.neighbour_list("d", *args)):  # the common case: no pair, and only distances asked
        i, j, d = _matscipy.neighbour_list("ijd", *args)
        k = int(np.argmin(d))
        raise EvaluationError(
            TOO_CLOSE, f"atoms {i[k]} and {j[k]} are {d[k]:.3f} Å apart (< {min_distance} Å)")


def closest_pair_distance(positions: np.ndarray, cell: np.ndarray, inv_cell_t: np.ndarray,
                          pbc: np.ndarray, search_range: float = REFERENCE_RANGE) -> float:
    """Distance of the closest pair (periodic images included), Å; ``search_range`` if none is closer."""
    from matscipy import _matscipy

    distances = _matscipy.neighbour_list("d", *_search_args(positions, cell, inv_cell_t, pbc, search_range))
    return float(distances.min()) if len(distances) else search_range


def clear_by_displacement(reference: np.ndarray, positions: np.ndarray, reference_closest: float,
                          min_distance: float = MIN_DISTANCE) -> np.ndarray:
    """Which structures provably have no pair closer than ``min_distance`` Å, without a search.

    reference: (n, 3) positions, Å, of a structure whose closest pair is ``reference_closest`` Å
    apart; positions: (m, n, 3), the same atoms in the same periodic cell (unwrapped or not:
    an atom that was wrapped just moved far, and its structure is not cleared).
    Returns (m,) bool: True where every atom moved less than (reference_closest − min_distance)/2.
    A structure not cleared may still be fine: check it with :func:`check_min_distance_in_cell`.
    """
    reach = (reference_closest - min_distance) / 2
    if reach <= 0:
        return np.zeros(len(positions), dtype=bool)
    moved = positions - reference
    return np.einsum("mni,mni->mn", moved, moved).max(axis=1, initial=0.0) < reach * reach


def inverse_transpose(cell: np.ndarray) -> np.ndarray:
    """inv(cell.T) for a (3, 3) cell; raises ValueError for a cell of zero volume."""
    return inverse_3x3(np.asarray(cell, dtype=float).T)


def _search_args(positions, cell, inv_cell_t, pbc, cutoff, origin=None) -> tuple:
    """Arguments of matscipy's C ``neighbour_list`` for all pairs closer than ``cutoff`` Å."""
    return (_ORIGIN if origin is None else origin, cell, inv_cell_t, pbc, positions, cutoff,
            _ones(len(positions)))  # as "atomic numbers": one cut-off for all pairs


_ORIGIN = np.zeros(3)


@functools.lru_cache(maxsize=64)
def _ones(n: int) -> np.ndarray:
    return np.ones(n, dtype=np.int32)
