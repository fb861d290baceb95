"""What runs inside a labelling worker: long-lived evaluators, one per EIP.

A worker is a process of the engine's own pool (:func:`serve`) or of a Dask
cluster (:func:`label_on_dask`); either way it keeps its evaluators between
chunks.
"""

from __future__ import annotations

import importlib
import os
import signal
import threading
import traceback

from eip2nn.labelling.packing import pack_labels, unpack_geometries
from eip2nn.labelling.store import LabelRow
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

    Returns (labels, failures): labels are :class:`~eip2nn.labelling.store.LabelRow`,
    failures (hash, kind, reason). Every item lands in one of them.
    """
    _crash_if_asked([h for h, _ in items])
    try:
        outcomes = evaluate_many(_evaluator(eip_id), [g for _, g in items])
    except EvaluationError as e:  # the EIP could not be loaded: each structure fails with why
        outcomes = [(e, 0.0)] * len(items)
    labels, failures = [], []
    for (h, _), (result, seconds) in zip(items, outcomes):
        if isinstance(result, EvaluationError):
            failures.append((h, result.kind, result.reason))
        else:
            labels.append(LabelRow(h, result.energy, result.forces, result.stress, seconds, result.local_energies))
    return labels, failures


def label_packed_chunk(eip_id: str, hashes: list[str], blocks: list) -> tuple[tuple, list[tuple]]:
    """:func:`label_chunk` as the process pool calls it: structures packed by
    :func:`~eip2nn.labelling.packing.pack_geometries`, labels returned packed by
    :func:`~eip2nn.labelling.packing.pack_labels`."""
    labels, failures = label_chunk(eip_id, list(zip(hashes, unpack_geometries(blocks))))
    return pack_labels(labels), failures


def serve(conn, specs: list[PotentialSpec]) -> None:
    """Body of a worker process of the engine's pool: say ("ready", None), then label chunks
    sent on ``conn`` until it sends None or closes. Each reply is ("ok", packed labels and
    failures) or ("error", a traceback): an exception here is a bug, reported to the parent,
    not a structure's failure."""
    init_worker(specs)
    conn.send(("ready", None))
    try:
        while True:
            try:
                task = conn.recv()
            except (EOFError, OSError):  # the parent is gone
                return
            if task is None:
                return
            try:
                reply = ("ok", label_packed_chunk(*task))
            except Exception:
                reply = ("error", traceback.format_exc())
            conn.send(reply)
    finally:
        close_all()


_DASK_LOCK = threading.Lock()  # evaluators are not thread-safe: one chunk at a time per worker process
_VERSIONS: dict[str, str] = {}  # this process's package versions, read on its first Dask task


def label_on_dask(spec: PotentialSpec, versions: dict[str, str], hashes: list[str],
                  blocks: list) -> tuple[tuple, list[tuple]]:
    """:func:`label_packed_chunk` as a Dask task: the spec travels with the task, the worker's
    evaluators persist between tasks. ``versions`` are the parent's
    :func:`~eip2nn.labelling.provenance.package_versions`; a worker whose packages differ
    refuses, since the labels' provenance would be wrong."""
    from eip2nn.labelling.provenance import package_versions
    with _DASK_LOCK:
        if not _VERSIONS:  # package metadata and the KIM-API .pc file: read once, not per task
            _VERSIONS.update(package_versions())
        differ = {k: (v, _VERSIONS.get(k)) for k, v in versions.items() if _VERSIONS.get(k) != v}
        if differ:
            raise RuntimeError(f"Dask worker on {os.uname().nodename} has other package versions than the "
                               f"labelling process (parent, worker): {differ}; install the same environment")
        if spec.id not in _SPECS:
            init_worker([spec], ignore_sigint=False)
        return label_packed_chunk(spec.id, hashes, blocks)


CRASH_ENV = "EIP2NN_CRASH_ON"  # "SIGNAME:hash,hash,...": a worker kills itself on these structures (tests)
CRASH_ONCE_ENV = "EIP2NN_CRASH_ONCE"  # a file path: crash only if it does not exist yet, creating it


def _crash_if_asked(hashes: list[str]) -> None:
    """Fault injection for the crash-isolation tests: with ``EIP2NN_CRASH_ON=SIGSEGV:h1,h2`` set,
    a worker that meets structure h1 or h2 dies by that signal, as a crashing backend would; with
    ``EIP2NN_CRASH_ONCE=path`` too, only the first time (a worker lost once, as to a dying machine)."""
    asked = os.environ.get(CRASH_ENV)
    if not asked:
        return
    name, _, targets = asked.partition(":")
    if not set(targets.split(",")) & set(hashes):
        return
    once = os.environ.get(CRASH_ONCE_ENV)
    if once:
        try:
            with open(once, "x"):
                pass
        except FileExistsError:
            return
    os.kill(os.getpid(), getattr(signal, name))


def close_all() -> None:
    for ev in _EVALUATORS.values():
        ev.close()
    _EVALUATORS.clear()
    _LOAD_ERRORS.clear()
