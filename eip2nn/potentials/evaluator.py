"""The one interface every EIP backend implements.

An evaluator is long-lived: it loads its model once and then evaluates many
structures (``evaluate(atoms) -> EIPResult``). Problems with one structure are
raised as :class:`EvaluationError` with a ``kind`` so callers can record them
as data instead of crashing a batch. :func:`evaluate_many` labels a batch and
returns each structure's result or error; a backend may do that faster than
one call per structure (the LAMMPS one does). A backend module declares what
it provides as a :class:`Backend`; :mod:`eip2nn.potentials.backends` holds the
registry and the factory, so this module imports no backend.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol, Union

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols

from eip2nn.potentials.spec import PotentialSpec

# Failure kinds recorded by the labelling engine.
UNSUPPORTED_SPECIES = "unsupported_species"
TOO_CLOSE = "atoms_too_close"
NON_FINITE = "non_finite"
UNSUPPORTED_CELL = "unsupported_cell"
BACKEND_ERROR = "backend_error"
INVALID_GEOMETRY = "invalid_geometry"  # NaN/inf or absurd positions or cell, or no atoms: never passed to a backend
SINGULAR_CELL = "singular_cell"  # a periodic cell with (nearly) no volume: never passed to a backend
BACKEND_CRASHED = "backend_crashed"  # the structure killed the worker process evaluating it (signal, OOM)

MIN_DISTANCE = 0.5  # Å; closer pairs are refused before evaluation
MAX_COORDINATE = 1.0e4  # Å; a position or cell entry beyond this is refused before evaluation
MAX_ABS_ENERGY_PER_ATOM = 1.0e3  # eV/atom; beyond this a result is not physical
LOCAL_SUM_TOLERANCE = 1.0e-6  # eV/atom; local energies further from the total than this are not kept


class EIPResult(NamedTuple):
    """One EIP's labels for one structure."""

    energy: float  # total, eV
    forces: np.ndarray  # (n_atoms, 3), eV/Å
    stress: np.ndarray | None  # (6,) ASE Voigt, eV/Å³, positive = tensile; None if unavailable
    # (n_atoms,) eV, each atom's share of the energy (LAMMPS pe/atom, KIM partialParticleEnergy),
    # summing to ``energy``; None where the backend or model gives none
    local_energies: np.ndarray | None = None


class EvaluationError(Exception):
    """A structure this EIP cannot label, with a machine-readable ``kind``."""

    def __init__(self, kind: str, reason: str):
        super().__init__(f"{kind}: {reason}")
        self.kind = kind
        self.reason = reason


class Geometry(NamedTuple):
    """What an EIP needs of a structure; cheaper to make and to send to a worker than ``Atoms``."""

    numbers: np.ndarray  # (n,) atomic numbers
    positions: np.ndarray  # (n, 3), Å
    cell: np.ndarray  # (3, 3), rows are the lattice vectors, Å
    pbc: np.ndarray  # (3,) bool

    @classmethod
    def of(cls, atoms: Atoms) -> "Geometry":
        return cls(atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc)

    def to_atoms(self) -> Atoms:
        return Atoms(numbers=self.numbers, positions=self.positions, cell=self.cell, pbc=self.pbc)


Outcome = tuple[Union[EIPResult, EvaluationError], float]  # result or error, and seconds spent


class Evaluator(Protocol):
    spec: PotentialSpec

    def evaluate(self, atoms: Atoms) -> EIPResult: ...

    def close(self) -> None: ...


class Backend(NamedTuple):
    """What one backend provides; each backend module declares its own as ``BACKEND``."""

    evaluator: Callable[[PotentialSpec], Evaluator]  # a ready evaluator for one spec
    provenance: Callable[[PotentialSpec], dict]  # what a label records of it (model, pair style, files)
    preload: Callable[[], object]  # imports a worker does up front; ImportError if unavailable
    package: str  # the Python package it runs on (its version goes into every label's provenance)
    runs_md: bool = False  # its evaluator drives LAMMPS MD: ``load(atoms)`` -> lammps, ``positions()``


def evaluate_many(evaluator: Evaluator, geometries: Sequence[Geometry]) -> list[Outcome]:
    """Each structure's result, or the EvaluationError that refused it, with its seconds.

    Structures :func:`check_geometry` refuses never reach the backend. Uses the
    evaluator's own ``evaluate_many`` where it has one, else one
    :meth:`Evaluator.evaluate` per structure. Never raises for one structure.
    """
    outcomes: list[Outcome | None] = [None] * len(geometries)
    sound = []
    for k, g in enumerate(geometries):
        try:
            check_geometry(g)
            sound.append(k)
        except EvaluationError as e:
            outcomes[k] = (e, 0.0)
    batched = getattr(evaluator, "evaluate_many", None)
    if batched is not None:
        results = batched([geometries[k] for k in sound]) if sound else []
    else:
        results = [timed(evaluator.evaluate, geometries[k].to_atoms()) for k in sound]
    for k, outcome in zip(sound, results):
        outcomes[k] = outcome
    return outcomes


def check_geometry(g: Geometry) -> None:
    """Raise INVALID_GEOMETRY or SINGULAR_CELL for a structure no backend should see.

    Refused: no atoms; positions not (n, 3); NaN/inf in positions or cell; a
    coordinate or cell entry beyond ``MAX_COORDINATE`` Å; a periodic direction
    whose lattice planes are closer than ``MIN_DISTANCE`` Å (a flat or zero
    cell: every atom would overlap its own image). C backends crash or hang
    on such input instead of failing. A sound structure costs a few µs (one
    reduction over the positions; the cell's verdict is cached).
    """
    positions = np.asarray(g.positions)
    n = len(g.numbers)
    if n and positions.shape == (n, 3) and np.abs(positions).max() <= MAX_COORDINATE:  # False for NaN
        cell, pbc = np.asarray(g.cell, dtype=float), np.asarray(g.pbc, dtype=bool)
        if cell.shape == (3, 3) and _cell_problem(cell.tobytes(), pbc.tobytes()) is None:
            return
    _raise_geometry_problem(g)


def _raise_geometry_problem(g: Geometry) -> None:
    """The slow path of :func:`check_geometry`: find what is wrong and say it."""
    positions, cell = np.asarray(g.positions), np.asarray(g.cell)
    n = len(g.numbers)
    if n == 0:
        raise EvaluationError(INVALID_GEOMETRY, "the structure has no atoms")
    if positions.shape != (n, 3) or cell.shape != (3, 3):
        raise EvaluationError(INVALID_GEOMETRY, f"positions of shape {positions.shape} and cell of shape "
                                                f"{cell.shape} for {n} atoms; expected ({n}, 3) and (3, 3)")
    bad = ~np.isfinite(positions).all(axis=1)
    if bad.any():
        atoms = np.flatnonzero(bad)
        raise EvaluationError(INVALID_GEOMETRY, f"non-finite position of atom(s) {atoms[:5].tolist()}"
                                                f"{' ...' if len(atoms) > 5 else ''}: {positions[atoms[0]].tolist()}")
    largest = np.abs(positions).max()
    if largest > MAX_COORDINATE:
        raise EvaluationError(INVALID_GEOMETRY, f"a coordinate of {largest:.3g} Å (> {MAX_COORDINATE:g} Å)")
    problem = _cell_problem(np.asarray(cell, dtype=float).tobytes(), np.asarray(g.pbc, dtype=bool).tobytes())
    if problem is not None:
        raise EvaluationError(*problem)
    raise AssertionError("check_geometry refused a structure without a reason")  # unreachable


@functools.lru_cache(maxsize=4096)
def _cell_problem(cell_bytes: bytes, pbc_bytes: bytes) -> tuple[str, str] | None:
    """(kind, reason) if the cell (3x3 float64 bytes) with these periodic axes is unusable, else None."""
    cell = np.frombuffer(cell_bytes).reshape(3, 3)
    if not np.isfinite(cell).all():
        return INVALID_GEOMETRY, f"non-finite cell {cell.tolist()}"
    if np.abs(cell).max() > MAX_COORDINATE:
        return INVALID_GEOMETRY, f"a cell entry of {np.abs(cell).max():.3g} Å (> {MAX_COORDINATE:g} Å)"
    periodic = [int(k) for k in np.flatnonzero(np.frombuffer(pbc_bytes, dtype=bool))]
    spacing = {k: _plane_spacing(cell, k, periodic) for k in periodic}
    thin = [k for k, d in spacing.items() if not d >= MIN_DISTANCE]
    if thin:
        return SINGULAR_CELL, (
            f"periodic cell {np.round(cell, 6).tolist()}: lattice planes along periodic axis {thin} are "
            f"{[float(f'{spacing[k]:.3g}') for k in thin]} Å apart (< {MIN_DISTANCE} Å: "
            "every atom would overlap its own image)")
    return None


def _plane_spacing(cell: np.ndarray, k: int, periodic: list[int]) -> float:
    """Distance between neighbouring lattice planes along cell vector ``k``, Å: the part of
    a_k perpendicular to the other periodic vectors (non-periodic ones, often zero, play no part)."""
    others = cell[[i for i in periodic if i != k]]
    a = cell[k]
    if len(others):
        coeffs, *_ = np.linalg.lstsq(others.T, a, rcond=None)
        a = a - others.T @ coeffs
    return float(np.linalg.norm(a))


def timed(evaluate: Callable, structure) -> Outcome:
    """``evaluate(structure)`` as an :data:`Outcome`: an unexpected exception becomes a
    BACKEND_ERROR of this structure (recorded by the caller, never swallowed)."""
    t0 = time.perf_counter()
    try:
        result = evaluate(structure)
    except EvaluationError as e:
        result = e
    except Exception as e:
        result = EvaluationError(BACKEND_ERROR, f"{type(e).__name__}: {e}")
    return result, time.perf_counter() - t0


def check_species(spec: PotentialSpec, numbers: np.ndarray) -> None:
    """Raise UNSUPPORTED_SPECIES if the atomic ``numbers`` hold an element ``spec`` lacks."""
    elements = {chemical_symbols[z] for z in np.unique(numbers)}
    if not spec.supports(elements):
        raise EvaluationError(UNSUPPORTED_SPECIES, unsupported_reason(spec, elements))


def unsupported_reason(spec: PotentialSpec, elements: set[str] | frozenset[str]) -> str:
    """Why ``spec`` cannot label a structure made of ``elements`` (one wording everywhere)."""
    missing = sorted(set(elements) - set(spec.species))
    return f"structure contains {missing}; {spec.id} supports only {list(spec.species)}"


def check_result(result: EIPResult, n_atoms: int) -> EIPResult:
    """Raise NON_FINITE for NaN/inf or absurd energies; else return ``result``, its local energies
    dropped (None) unless finite and summing to the energy within ``LOCAL_SUM_TOLERANCE``."""
    e, f, s = result.energy, result.forces, result.stress
    total = e + f.sum() + (0.0 if s is None else s.sum())  # one reduction: NaN/inf propagate
    if not np.isfinite(total):
        raise EvaluationError(NON_FINITE, f"non-finite energy/forces/stress (E = {e} eV)")
    if abs(e) / max(n_atoms, 1) > MAX_ABS_ENERGY_PER_ATOM:
        raise EvaluationError(
            NON_FINITE, f"|E|/atom = {abs(e) / n_atoms:.3g} eV > {MAX_ABS_ENERGY_PER_ATOM} eV")
    return check_local_energies(result, n_atoms)


def check_local_energies(result: EIPResult, n_atoms: int) -> EIPResult:
    """``result``, its local energies dropped (None) unless finite and summing to its energy
    within ``LOCAL_SUM_TOLERANCE`` eV/atom (a model may tally per-atom energies partly or not at all)."""
    local = result.local_energies
    if local is not None and not (local.shape == (n_atoms,) and abs(local.sum() - result.energy)
                                  <= LOCAL_SUM_TOLERANCE * max(n_atoms, 1)):
        return result._replace(local_energies=None)
    return result
