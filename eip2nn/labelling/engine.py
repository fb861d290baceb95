"""Label structures with EIPs: parallel, resumable, safe to interrupt.

The parent process owns the store. It claims a chunk of work, hands it to a
worker process (which keeps one long-lived evaluator per EIP), and commits
the chunk's labels and failures in one transaction. Re-running skips what is
done; interrupting loses only chunks in flight; two parents on one store share
the work through claims.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from tqdm import tqdm

from eip2nn.keys import CONFIG_ID
from eip2nn.labelling import worker
from eip2nn.labelling.hashing import structure_hashes
from eip2nn.labelling.packing import pack_geometries, unpack_labels
from eip2nn.labelling.provenance import provenance_info
from eip2nn.labelling.store import LabelStore, StaleLabelsError
from eip2nn.potentials.evaluator import UNSUPPORTED_SPECIES, Geometry, unsupported_reason
from eip2nn.potentials.spec import PotentialSpec
from eip2nn.tables import format_table

CHUNK_ATOMS = 65536  # atoms per chunk of work at most: a chunk's labels are committed together


@dataclass
class EIPStats:
    """What one labelling call did for one EIP."""

    labelled: int = 0  # new labels written by this call
    failed: Counter = field(default_factory=Counter)  # new failures by kind
    already_done: int = 0  # labelled or failed before this call
    left_to_others: int = 0  # claimed by another live process
    atoms: int = 0  # atoms in the new labels
    eval_seconds: float = 0.0  # summed evaluation time of the new labels


@dataclass
class LabelReport:
    """Result of :func:`label`."""

    labels: Path  # the label store written to
    n_structures: int  # distinct structures (by content hash)
    n_duplicates: int  # input structures that repeated an earlier one
    per_eip: dict[str, EIPStats]
    workers: int
    wall_seconds: float
    interrupted: bool = False

    @property
    def atoms_per_second(self) -> float:
        atoms = sum(s.atoms for s in self.per_eip.values())
        return atoms / self.wall_seconds if self.wall_seconds > 0 else 0.0

    def table(self) -> str:
        """A plain-text summary, one row per EIP."""
        rows = [("EIP", "new", "done before", "failed (kind: n)", "other proc.", "atoms/s/worker")]
        for eip, s in self.per_eip.items():
            fails = ", ".join(f"{k}: {n}" for k, n in sorted(s.failed.items())) or "-"
            rate = f"{s.atoms / s.eval_seconds:,.0f}" if s.eval_seconds > 0 else "-"
            rows.append((eip, str(s.labelled), str(s.already_done), fails, str(s.left_to_others), rate))
        state = "INTERRUPTED — re-run the same command to resume" if self.interrupted else "complete"
        footer = (f"{self.n_structures} structures ({self.n_duplicates} duplicates skipped), "
                  f"{self.workers} worker(s), {self.wall_seconds:.1f} s wall, "
                  f"{self.atoms_per_second:,.0f} atoms/s overall; {state}; store: {self.labels}")
        return format_table(rows) + "\n" + footer


class LabellingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during labelling; ``report`` says what was saved."""

    def __init__(self, report: LabelReport):
        super().__init__("labelling interrupted; committed labels are kept")
        self.report = report


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


def _jobs(store: LabelStore, specs: list[PotentialSpec], by_hash: dict[str, Atoms], composition: dict,
          retry_failed: bool, stats: dict) -> list[tuple[PotentialSpec, int, list[str]]]:
    """(spec, provenance id, hashes to label) per EIP: done ones counted, unsupported species recorded as failures,
    the rest sorted so that structures with the same atoms and cell follow each other (the backend reuses its set-up)."""
    set_up_order = {h: (len(a), a.numbers.tobytes(), a.cell.array.tobytes()) for h, a in by_hash.items()}
    jobs = []
    for spec in specs:
        _check_not_stale(store, spec)
        if retry_failed:
            store.forget_failures(spec.id)
        pid = store.provenance_id(spec.id, spec.content_hash(), provenance_info(spec))
        done = store.done(spec.id)
        todo, unsupported = [], []
        for h in by_hash:
            elements = composition[h][1]
            if h in done:
                stats[spec.id].already_done += 1
            elif not spec.supports(elements):
                unsupported.append((h, UNSUPPORTED_SPECIES, unsupported_reason(spec, elements)))
            else:
                todo.append(h)
        store.write(spec.id, pid, [], unsupported)
        stats[spec.id].failed.update(k for _, k, _ in unsupported)
        todo.sort(key=set_up_order.__getitem__)
        jobs.append((spec, pid, todo))
    return jobs


def label(structures: list[Atoms], specs: list[PotentialSpec], labels: str | Path,
          workers: int | None = None, chunk_size: int | None = None, progress: bool = True,
          retry_failed: bool = False) -> LabelReport:
    """Label ``structures`` with every EIP in ``specs`` into the store at ``labels``.

    workers: worker processes (default: all cores); 1 evaluates in this process.
    chunk_size: structures per unit of work (default: adapted to the job).
    retry_failed: forget recorded failures of these EIPs and try them again.
    Raises :class:`LabellingInterrupted` (after saving) on Ctrl-C / SIGTERM.
    """
    t_start = time.perf_counter()
    workers = workers or default_workers()
    by_hash: dict[str, Atoms] = {}
    for h, atoms in zip(structure_hashes(structures), structures):
        by_hash.setdefault(h, atoms)
    n_dup = len(structures) - len(by_hash)
    composition = _compositions(by_hash)  # (formula, elements)
    n_atoms = {h: len(a) for h, a in by_hash.items()}

    store = LabelStore(labels)
    try:
        store.add_structures((h, n_atoms[h], composition[h][0], str(a.info.get(CONFIG_ID, "")))
                             for h, a in by_hash.items())
        stats = {s.id: EIPStats() for s in specs}
        jobs = _jobs(store, specs, by_hash, composition, retry_failed, stats)

        size = chunk_size or _chunk_size([n_atoms[h] for _, _, t in jobs for h in t], workers)
        chunks = [(spec, pid, hashes[i:i + size]) for spec, pid, hashes in jobs
                  for i in range(0, len(hashes), size)]
        bar = tqdm(total=sum(n_atoms[h] for _, _, t in jobs for h in t), unit="atom",
                   unit_scale=True, desc="labelling", disable=not progress, smoothing=0.1)
        interrupted = False
        try:
            if chunks:  # nothing to do starts no worker and imports no backend
                runner = _run_in_process if workers == 1 else _run_in_pool
                runner(chunks, by_hash, n_atoms, store, stats, specs, workers, bar)
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            store.release_claims()
        report = LabelReport(Path(labels), len(by_hash), n_dup, stats, workers,
                             time.perf_counter() - t_start, interrupted)
    finally:
        store.close()
    if report.interrupted:
        raise LabellingInterrupted(report)
    return report


def _chunk_size(todo_atoms: list[int], workers: int) -> int:
    """Structures per chunk: at least 8 chunks per worker, at most ~CHUNK_ATOMS atoms per chunk."""
    if not todo_atoms:
        return 1
    mean_atoms = sum(todo_atoms) / len(todo_atoms)
    return max(1, min(math.ceil(len(todo_atoms) / (8 * workers)), int(CHUNK_ATOMS // mean_atoms)))


def _check_not_stale(store: LabelStore, spec: PotentialSpec) -> None:
    stored = store.spec_hashes(spec.id) - {spec.content_hash()}
    if stored:
        raise StaleLabelsError(
            f"{store.path} holds labels of {spec.id!r} made with a different definition "
            f"(spec hash {sorted(stored)} vs now {spec.content_hash()}, from {spec.source_file}); "
            f"drop the old labels with `eip2nn labels forget-stale --labels {store.path} --eip {spec.id}`, "
            "give the changed EIP a new id, or label into a new store")


def _compositions(by_hash: dict[str, Atoms]) -> dict[str, tuple[str, frozenset[str]]]:
    """:func:`_composition` per hash, computed once per distinct array of atomic numbers."""
    seen: dict[bytes, tuple[str, frozenset[str]]] = {}
    out = {}
    for h, atoms in by_hash.items():
        key = atoms.numbers.tobytes()
        if key not in seen:
            seen[key] = _composition(atoms)
        out[h] = seen[key]
    return out


def _composition(atoms: Atoms) -> tuple[str, frozenset[str]]:
    """(formula such as "Si64", set of element symbols), without ASE's slower Formula."""
    numbers, counts = np.unique(atoms.numbers, return_counts=True)
    symbols = [chemical_symbols[z] for z in numbers]
    return "".join(f"{s}{c}" for s, c in zip(symbols, counts)), frozenset(symbols)


def _record(store, stats, spec, pid, n_atoms, labels, failures, bar) -> None:
    store.write(spec.id, pid, labels, failures)
    s = stats[spec.id]
    s.labelled += len(labels)
    s.failed.update(k for _, k, _ in failures)
    s.atoms += sum(n_atoms[h] for h, *_ in labels)
    s.eval_seconds += sum(sec for *_, sec in labels)
    bar.update(sum(n_atoms[h] for h, *_ in labels) + sum(n_atoms[h] for h, *_ in failures))


def _claim(store, stats, spec, hashes, n_atoms, bar) -> list[str]:
    claimed = store.claim(spec.id, hashes)
    if len(claimed) < len(hashes):
        skipped = set(hashes) - set(claimed)
        stats[spec.id].left_to_others += len(skipped)
        bar.update(sum(n_atoms[h] for h in skipped))
    return claimed


def _run_in_process(chunks, by_hash, n_atoms, store, stats, specs, workers, bar) -> None:
    from threadpoolctl import threadpool_limits
    worker.init_worker(specs, ignore_sigint=False)
    try:
        with threadpool_limits(1, user_api="blas"):
            for spec, pid, hashes in chunks:
                claimed = _claim(store, stats, spec, hashes, n_atoms, bar)
                if claimed:
                    labels, failures = worker.label_chunk(
                        spec.id, [(h, Geometry.of(by_hash[h])) for h in claimed])
                    _record(store, stats, spec, pid, n_atoms, labels, failures, bar)
    finally:
        worker.close_all()


def _run_in_pool(chunks, by_hash, n_atoms, store, stats, specs, workers, bar) -> None:
    ctx = multiprocessing.get_context("spawn")  # no inherited MPI/LAMMPS state
    pool = ProcessPoolExecutor(workers, mp_context=ctx, initializer=worker.init_worker,
                               initargs=(specs,))
    pending: dict = {}
    queue = iter(chunks)
    try:
        while True:
            while len(pending) < 2 * workers:
                nxt = next(queue, None)
                if nxt is None:
                    break
                spec, pid, hashes = nxt
                claimed = _claim(store, stats, spec, hashes, n_atoms, bar)
                if claimed:
                    fut = pool.submit(worker.label_packed_chunk, spec.id, claimed,
                                      pack_geometries([by_hash[h] for h in claimed]))
                    pending[fut] = (spec, pid)
            if not pending:
                break
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                spec, pid = pending.pop(fut)
                packed, failures = fut.result()
                _record(store, stats, spec, pid, n_atoms, unpack_labels(packed), failures, bar)
    except BaseException:
        for proc in list(getattr(pool, "_processes", {}).values()):
            proc.terminate()  # work in flight is lost, not half-written: claims are released
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
