"""Where the engine's chunks run: its own worker processes, or a Dask cluster.

Both give the engine the same three calls: ``submit(ticket, spec, hashes,
blocks)``, ``next_done() -> (ticket, outcome)`` and ``close()``. An outcome
is the worker's (packed labels, failures), or :class:`WorkerLost` when the
process running the chunk died (a segfault or abort in C code, the OOM
killer, a lost machine): the engine then splits the chunk to find the
structure that did it. Nothing here touches the label store.
"""

from __future__ import annotations

import multiprocessing
import signal
from multiprocessing.connection import wait
from typing import NamedTuple

from eip2nn.labelling import worker
from eip2nn.potentials.spec import PotentialSpec

DASK_CONNECT_TIMEOUT = 30.0  # s to reach the scheduler and see its first worker


class WorkerLost(NamedTuple):
    """The process running a chunk ended without answering."""

    reason: str  # e.g. "the worker process died by SIGSEGV"


def exit_reason(exitcode: int | None) -> str:
    """How a worker process ended, in words (a negative exit code is the signal that killed it)."""
    if exitcode is not None and exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = " (the OOM killer, or a kill -9)" if -exitcode == signal.SIGKILL else ""
        return f"the worker process died by {name}{hint}"
    return f"the worker process exited with code {exitcode} without answering"


class _Worker:
    def __init__(self, ctx, specs: list[PotentialSpec]):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker.serve, args=(child, specs), daemon=True)
        self.process.start()
        child.close()  # so that the worker's death reads as EOF here
        self.ticket: int | None = None
        self.ready = False

    def wait_ready(self) -> None:
        """Block until the worker has loaded its backends; a worker that dies first is an error of
        the set-up (not of any structure), raised here."""
        if self.ready:
            return
        wait([self.conn, self.process.sentinel])
        try:
            status, _ = self.conn.recv()
            self.ready = status == "ready"
        except (EOFError, ConnectionError):
            pass
        if not self.ready:
            self.process.join(timeout=10)
            raise RuntimeError(
                f"a labelling worker process could not start ({exit_reason(self.process.exitcode)}); its error "
                "is printed above. A script that calls eip2nn's labelling must guard its entry point with "
                "`if __name__ == '__main__':` (worker processes are spawned and import the script)")


class LocalPool:
    """``workers`` spawned processes, one chunk each at a time; a dead one is replaced.

    One chunk per process (no queue behind it) means a death loses that chunk only,
    and names it.
    """

    def __init__(self, workers: int, specs: list[PotentialSpec]):
        self._ctx = multiprocessing.get_context("spawn")  # no inherited MPI/LAMMPS state
        self._specs = specs
        self._workers = [_Worker(self._ctx, specs) for _ in range(workers)]
        try:
            for w in self._workers:  # started together, waited for in turn
                w.wait_ready()
        except BaseException:
            self.close(terminate=True)
            raise
        self.workers = self.slots = workers
        self.chunks_lost = 0  # chunks whose worker process died

    def submit(self, ticket: int, spec: PotentialSpec, hashes: list[str], blocks: list) -> None:
        w = next(w for w in self._workers if w.ticket is None)
        w.conn.send((spec.id, hashes, blocks))
        w.ticket = ticket

    def next_done(self) -> tuple[int, object]:
        busy = [w for w in self._workers if w.ticket is not None]
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
        for w in busy:
            if w.conn in ready:
                try:
                    status, payload = w.conn.recv()
                except (EOFError, ConnectionError):
                    break  # died mid-reply: handled as a death below
                ticket, w.ticket = w.ticket, None
                if status == "error":
                    raise RuntimeError(f"a labelling worker raised (a bug, not a structure's failure):\n{payload}")
                return ticket, payload
        for w in busy:
            if w.process.sentinel in ready or w.conn in ready:
                return self._replace(w)
        raise RuntimeError("a labelling worker woke the pool without answering or dying")

    def _replace(self, dead: _Worker) -> tuple[int, WorkerLost]:
        dead.process.join()
        lost = WorkerLost(exit_reason(dead.process.exitcode))
        dead.conn.close()
        self.chunks_lost += 1
        fresh = _Worker(self._ctx, self._specs)
        self._workers[self._workers.index(dead)] = fresh
        fresh.wait_ready()
        return dead.ticket, lost

    def close(self, terminate: bool = False) -> None:
        """Stop the workers: politely after a finished job, at once (``terminate``) after an interrupt."""
        for w in self._workers:
            if terminate:
                w.process.terminate()
            else:
                try:
                    w.conn.send(None)
                except (BrokenPipeError, ConnectionError):
                    pass  # already gone: nothing to stop
        for w in self._workers:
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.conn.close()


class DaskPool:
    """Chunks as tasks on a ``dask.distributed`` cluster; the store stays in this process.

    ``scheduler`` is an address ("tcp://host:8786") or a ``distributed`` cluster object.
    A task that killed its workers comes back as Dask's ``KilledWorker`` and is passed
    on as :class:`WorkerLost`; a worker machine lost while the task ran elsewhere does
    not concern the task (Dask runs it again).
    """

    def __init__(self, scheduler, versions: dict[str, str]):
        from distributed import Client, as_completed
        try:
            self._client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT, set_as_default=False)
        except OSError as e:
            raise ConnectionError(f"cannot reach the Dask scheduler at {scheduler!r} within "
                                  f"{DASK_CONNECT_TIMEOUT:.0f} s: {e}") from e
        try:
            self._client.wait_for_workers(1, timeout=DASK_CONNECT_TIMEOUT)
        except TimeoutError as e:
            self._client.close()
            raise ConnectionError(f"the Dask scheduler at {scheduler!r} has no workers; start some with "
                                  f"`dask worker {self._client.scheduler.address} --nthreads 1`") from e
        threads = sum(w["nthreads"] for w in self._client.scheduler_info()["workers"].values())
        self.workers = threads
        self.slots = 2 * threads  # one running and one waiting per worker thread
        self.chunks_lost = 0  # tasks Dask gave up because their workers died (KilledWorker)
        self._versions = versions
        self._done = as_completed(loop=self._client.loop)
        self._tickets: dict[str, int] = {}

    def submit(self, ticket: int, spec: PotentialSpec, hashes: list[str], blocks: list) -> None:
        fut = self._client.submit(worker.label_on_dask, spec, self._versions, hashes, blocks, pure=False)
        self._tickets[fut.key] = ticket
        self._done.add(fut)

    def next_done(self) -> tuple[int, object]:
        from distributed import KilledWorker
        fut = next(self._done)
        ticket = self._tickets.pop(fut.key)
        if fut.status == "error":
            exc = fut.exception()
            if isinstance(exc, KilledWorker):
                self.chunks_lost += 1
                last = getattr(exc.last_worker, "address", exc.last_worker)
                return ticket, WorkerLost(f"the Dask worker(s) running it died (KilledWorker; last {last})")
            fut.result()  # raises the worker's exception here, with its traceback
        outcome = fut.result()
        fut.release()
        return ticket, outcome

    def close(self, terminate: bool = False) -> None:
        if terminate:
            self._client.cancel(list(self._done.futures))
        self._client.close()
