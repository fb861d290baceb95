"""What runs inside a labelling worker: long-lived evaluators, one per EIP."""

from __future__ import annotations

import importlib
import signal

from eip2nn.labelling.packing import pack_labels, unpack_geometries
from eip2nn.potentials.backends import REGISTRY, backend, make_evaluator
from eip2nn.potentials.evaluator import BACKEND_ERROR, EvaluationError, Evaluator, Geometry, evaluate_many
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
    """Preload the specs' backends in the initializer (tenths of a second), before the first chunk.

    A backend that cannot be imported is recorded as the load error of its EIPs,
    so each of their structures fails with that reason, as a failed load would.
    """
    importlib.import_module("matscipy._matscipy")  # the overlap check
    for name in REGISTRY:
        ids = [s.id for s in specs if s.backend_type == name]
        if not ids:
            continue
        try:
            backend(name).preload()
        except ImportError as e:
            for eip_id in ids:
                _LOAD_ERRORS[eip_id] = f"could not load {eip_id}: ImportError: {e}"


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


def label_chunk(eip_id: str, items: list[tuple[str, Geometry]]) -> tuple[list[tuple], list[tuple]]:
    """Evaluate one EIP on (hash, geometry) items.

    Returns (labels, failures): labels are (hash, energy, forces, stress,
    seconds), failures (hash, kind, reason). Every item lands in one of them.
    """
    try:
        outcomes = evaluate_many(_evaluator(eip_id), [g for _, g in items])
    except EvaluationError as e:  # the EIP could not be loaded: each structure fails with why
        outcomes = [(e, 0.0)] * len(items)
    labels, failures = [], []
    for (h, _), (result, seconds) in zip(items, outcomes):
        if isinstance(result, EvaluationError):
            failures.append((h, result.kind, result.reason))
        else:
            labels.append((h, result.energy, result.forces, result.stress, seconds))
    return labels, failures


def label_packed_chunk(eip_id: str, hashes: list[str], blocks: list) -> tuple[tuple, list[tuple]]:
    """:func:`label_chunk` as the process pool calls it: structures packed by
    :func:`~eip2nn.labelling.packing.pack_geometries`, labels returned packed by
    :func:`~eip2nn.labelling.packing.pack_labels`."""
    labels, failures = label_chunk(eip_id, list(zip(hashes, unpack_geometries(blocks))))
    return pack_labels(labels), failures


def close_all() -> None:
    for ev in _EVALUATORS.values():
        ev.close()
    _EVALUATORS.clear()
    _LOAD_ERRORS.clear()
