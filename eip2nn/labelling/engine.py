"""Label structures with EIPs: parallel, resumable, safe to interrupt.

The parent process owns the store. It claims a chunk of work, hands it to a
worker process (which keeps one long-lived evaluator per EIP) of its own pool
or of a Dask cluster, and commits the chunk's labels and failures in one
transaction. Re-running skips what is done; interrupting loses only chunks in
flight; two parents on one store share the work through claims.

No structure can stop a job. Structures that C code would choke on are refused
before evaluation (:func:`~eip2nn.potentials.evaluator.check_geometry`); when a
worker dies anyway (segfault, abort, OOM), its chunk is split in halves and run
again in fresh processes until the structure that kills a worker alone is
found (it must kill a worker alone twice: a worker lost to a kill -9 or a dying
machine does not brand an innocent structure), recorded as ``backend_crashed``
with the signal, and skipped by later runs unless ``retry_failed``.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import chemical_symbols
from tqdm import tqdm

from eip2nn.keys import CONFIG_ID
from eip2nn.labelling.hashing import structure_hashes
from eip2nn.labelling.packing import pack_geometries, unpack_labels
from eip2nn.labelling.pools import NOT_STARTED, DaskPool, LocalPool, WorkerLost
from eip2nn.labelling.provenance import package_versions, provenance_info
from eip2nn.labelling.store import LabelStore, StaleLabelsError
from eip2nn.potentials.evaluator import BACKEND_CRASHED, UNSUPPORTED_SPECIES, unsupported_reason
from eip2nn.potentials.spec import PotentialSpec
from eip2nn.tables import format_table

CHUNK_ATOMS = 65536  # atoms per chunk of work at most: a chunk's labels are committed together
CRASHES_TO_RECORD = 2  # a structure is recorded as crashed after killing this many workers, alone each time


@dataclass
class EIPStats:
    """What one labelling call did for one EIP."""

    labelled: int = 0  # new labels written by this call
    new_failures: list = field(default_factory=list)  # (structure hash, kind, reason) of the new failures
    already_done: int = 0  # labelled or failed before this call
    left_to_others: int = 0  # claimed by another live process
    atoms: int = 0  # atoms in the new labels
    eval_seconds: float = 0.0  # summed evaluation time of the new labels

    @property
    def failed(self) -> Counter:
        """New failures by kind."""
        return Counter(kind for _, kind, _ in self.new_failures)


@dataclass
class LabelReport:
    """Result of :func:`label`."""

    labels: Path  # the label store written to
    n_structures: int  # distinct structures (by content hash)
    n_duplicates: int  # input structures that repeated an earlier one
    per_eip: dict[str, EIPStats]
    workers: int  # worker processes (local pool) or worker threads (Dask cluster)
    wall_seconds: float
    interrupted: bool = False
    names: dict[str, str] = field(default_factory=dict)  # structure hash -> where it was first read ("file/frame")
    scheduler: str = ""  # the Dask scheduler's address; "" for the local pool
    chunks_lost: int = 0  # chunks whose worker died (each split or run again): the job's worker crashes
    parent_cpu_seconds: float = 0.0  # CPU time of this (the parent) process: claims, packing, writes

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
        where = f"Dask cluster {self.scheduler}" if self.scheduler else "local pool"
        lost = f", {self.chunks_lost} chunk(s) lost to dead workers and run again" if self.chunks_lost else ""
        footer = (f"{self.n_structures} structures ({self.n_duplicates} duplicates skipped), "
                  f"{self.workers} worker(s) ({where}{lost}), {self.wall_seconds:.1f} s wall, "
                  f"{self.atoms_per_second:,.0f} atoms/s overall; {state}; store: {self.labels}")
        return format_table(rows) + "\n" + footer

    def failure_lines(self, limit: int = 20, skip_kinds: tuple[str, ...] = (UNSUPPORTED_SPECIES,)) -> list[str]:
        """One line per new failure (structure's file/frame, EIP, kind, reason), at most ``limit``."""
        found = [(self.names.get(h, h), eip, kind, reason) for eip, s in self.per_eip.items()
                 for h, kind, reason in s.new_failures if kind not in skip_kinds]
        lines = [f"{name} with {eip}: {kind}: {reason}" for name, eip, kind, reason in found[:limit]]
        if len(found) > limit:
            lines.append(f"... and {len(found) - limit} more (`eip2nn labels failures --labels {self.labels}`)")
        return lines


class LabellingInterrupted(KeyboardInterrupt):
    """Ctrl-C or SIGTERM during labelling; ``report`` says what was saved."""

    def __init__(self, report: LabelReport):
        super().__init__("labelling interrupted; committed labels are kept")
        self.report = report


def default_workers() -> int:
    return len(os.sched_getaffinity(0))


def _jobs(store: LabelStore, specs: list[PotentialSpec], by_hash: dict[str, Atoms], composition: dict,
          retry_failed: bool, local_energies: bool, stats: dict) -> list[tuple[PotentialSpec, int, list[str]]]:
    """(spec, provenance id, hashes to label) per EIP: done ones counted, unsupported species recorded as failures,
    the rest sorted so that structures with the same atoms and cell follow each other (the backend reuses its set-up)."""
    set_up_order = {h: (len(a), a.numbers.tobytes(), a.cell.array.tobytes()) for h, a in by_hash.items()}
    jobs = []
    for spec in specs:
        _check_not_stale(store, spec)
        if retry_failed:
            store.forget_failures(spec.id)
        pid = store.provenance_id(spec.id, spec.content_hash(), provenance_info(spec))
        done = store.done(spec.id, local_energies)
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
        stats[spec.id].new_failures += unsupported
        todo.sort(key=set_up_order.__getitem__)
        jobs.append((spec, pid, todo))
    return jobs


def label(structures: list[Atoms], specs: list[PotentialSpec], labels: str | Path,
          workers: int | None = None, chunk_size: int | None = None, progress: bool = True,
          retry_failed: bool = False, scheduler=None, local_energies: bool = False) -> LabelReport:
    """Label ``structures`` with every EIP in ``specs`` into the store at ``labels``.

    workers: worker processes of the local pool (default: all cores); ignored with a scheduler.
    chunk_size: structures per unit of work (default: adapted to the job).
    retry_failed: forget recorded failures of these EIPs (crashes included) and try them again.
    local_energies: also evaluate again the structures labelled before the store kept local
        energies (schema 2 and older), to store theirs; their labels are kept as they are.
    scheduler: a Dask scheduler address ("tcp://host:8786") or cluster object; the chunks
        run there as tasks, this process keeps the store. Default: the local pool.
    Raises :class:`LabellingInterrupted` (after saving) on Ctrl-C / SIGTERM.
    """
    t_start, cpu_start = time.perf_counter(), time.process_time()
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
        jobs = _jobs(store, specs, by_hash, composition, retry_failed, local_energies, stats)

        todo_atoms = [n_atoms[h] for _, _, t in jobs for h in t]
        bar = tqdm(total=sum(todo_atoms), unit="atom", unit_scale=True, desc="labelling", disable=not progress,
                   smoothing=0.1)
        interrupted, chunks_lost = False, 0
        address = "" if scheduler is None else str(getattr(scheduler, "scheduler_address", scheduler))
        try:
            if todo_atoms:  # nothing to do starts no worker and imports no backend
                pool = LocalPool(workers, specs) if scheduler is None else DaskPool(scheduler, package_versions())
                workers = pool.workers  # a cluster's worker threads size its chunks
                size = chunk_size or _chunk_size(todo_atoms, workers)
                chunks = [(spec, pid, hashes[i:i + size]) for spec, pid, hashes in jobs
                          for i in range(0, len(hashes), size)]
                try:
                    _run(pool, chunks, by_hash, n_atoms, store, stats, bar, local_energies)
                except BaseException:
                    pool.close(terminate=True)  # work in flight is lost, not half-written: claims are released
                    raise
                finally:
                    chunks_lost = pool.chunks_lost
                pool.close()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            bar.close()
            store.release_claims()
        names = {h: str(a.info.get(CONFIG_ID, "")) or h for h, a in by_hash.items()}
        report = LabelReport(Path(labels), len(by_hash), n_dup, stats, workers,
                             time.perf_counter() - t_start, interrupted, names, address, chunks_lost,
                             time.process_time() - cpu_start)
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
    s.new_failures += failures
    s.atoms += sum(n_atoms[r.hash] for r in labels)
    s.eval_seconds += sum(r.seconds for r in labels)
    bar.update(sum(n_atoms[r.hash] for r in labels) + sum(n_atoms[h] for h, *_ in failures))


def _claim(store, stats, spec, hashes, n_atoms, bar, local_energies) -> list[str]:
    claimed = store.claim(spec.id, hashes, local_energies)
    if len(claimed) < len(hashes):
        skipped = set(hashes) - set(claimed)
        stats[spec.id].left_to_others += len(skipped)
        bar.update(sum(n_atoms[h] for h in skipped))
    return claimed


def _run(pool, chunks, by_hash, n_atoms, store, stats, bar, local_energies) -> None:
    """Keep ``pool`` busy with ``chunks`` (spec, provenance id, hashes); record each answer.

    A chunk whose worker died becomes a suspect: it is split in halves, and suspects run
    one at a time, each with a worker to itself, before other work (on a Dask cluster,
    where placement is Dask's, a death also fails the tasks beside the one that caused
    it). A single structure whose worker died CRASHES_TO_RECORD times is recorded as
    BACKEND_CRASHED. A chunk that was only waiting behind a dead one is sent again as it was.
    """
    fresh = deque(chunks)  # not claimed yet
    again: deque = deque()  # claimed, never run: (spec, pid, hashes, crashes)
    suspects: deque = deque()  # claimed, their worker died: (spec, pid, hashes, crashes so far)
    in_flight: dict[int, tuple] = {}  # ticket -> (spec, pid, hashes, crashes, is a suspect)
    tickets = itertools.count()

    def submit(item, suspect: bool) -> bool:
        spec, pid, hashes, crashes = item
        ticket = next(tickets)
        if not pool.submit(ticket, spec, hashes, pack_geometries([by_hash[h] for h in hashes]), alone=suspect):
            return False
        in_flight[ticket] = (spec, pid, hashes, crashes, suspect)
        return True

    def fill() -> None:
        if suspects and not any(item[4] for item in in_flight.values()):
            if not submit(suspects[0], True):
                return  # no more work until a worker is free for it, or it would wait for ever
            suspects.popleft()
        while pool.has_room() and (again or fresh):
            if again:
                if not submit(again[0], False):
                    return
                again.popleft()
                continue
            spec, pid, hashes = fresh.popleft()
            claimed = _claim(store, stats, spec, hashes, n_atoms, bar, local_energies)
            if claimed and not submit((spec, pid, claimed, 0), False):
                again.appendleft((spec, pid, claimed, 0))
                return

    fill()
    while in_flight:
        to_record = []  # (spec, pid, labels, failures)
        for ticket, outcome in pool.next_done():
            spec, pid, hashes, crashes, suspect = in_flight.pop(ticket)
            lost = isinstance(outcome, WorkerLost)
            if outcome is NOT_STARTED:
                (suspects if suspect else again).appendleft((spec, pid, hashes, crashes))
            elif lost and len(hashes) > 1:
                half = len(hashes) // 2
                suspects.extendleft([(spec, pid, hashes[half:], 0), (spec, pid, hashes[:half], 0)])
            elif lost and crashes + 1 < CRASHES_TO_RECORD:
                suspects.appendleft((spec, pid, hashes, crashes + 1))
            elif lost:
                reason = (f"{spec.id} ({spec.backend_type}): {outcome.reason}, evaluating this structure alone "
                          f"({CRASHES_TO_RECORD} times)")
                to_record.append((spec, pid, [], [(hashes[0], BACKEND_CRASHED, reason)]))
            else:
                packed, failures = outcome
                to_record.append((spec, pid, unpack_labels(packed), failures))
        fill()  # the workers go on while this process writes
        for spec, pid, labels, failures in to_record:
            _record(store, stats, spec, pid, n_atoms, labels, failures, bar)
