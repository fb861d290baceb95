"""Where the engine's chunks run: its own worker processes, or a Dask cluster.

Both give the engine the same calls: ``has_room()``, ``submit(ticket, spec,
hashes, blocks, alone) -> accepted``, ``next_done() -> [(ticket, outcome)]``
and ``close()``. An outcome is the worker's (packed labels, failures);
:class:`WorkerLost` when the process running the chunk died (a segfault or
abort in C code, the OOM killer, a lost machine): the engine then splits the
chunk to find the structure that did it; or :data:`NOT_STARTED` for a chunk
that was waiting behind it, to be sent again as it was. Nothing here touches
the label store.
"""

from __future__ import annotations

import multiprocessing
import queue
import signal
import threading
from collections import deque
from multiprocessing.connection import wait
from typing import NamedTuple

from eip2nn.labelling import worker
from eip2nn.potentials.spec import PotentialSpec

DASK_CONNECT_TIMEOUT = 30.0  # s to reach the scheduler and see its first worker
QUEUE_DEPTH = 2  # chunks sent to one worker process at a time: one running, one waiting (no idle gap)
NOT_STARTED = "not started"  # the outcome of a chunk queued behind one whose worker died
_STOP_SENDING = object()


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
    """One worker process, and a thread here that sends it its chunks.

    Sending from a thread means this process never blocks on a worker that is busy (or
    itself sending a result): the pool's thread only waits for answers and reads them.
    """

    def __init__(self, ctx, specs: list[PotentialSpec]):
        self.conn, child = ctx.Pipe()
        self.process = ctx.Process(target=worker.serve, args=(child, specs), daemon=True)
        self.process.start()
        child.close()  # so that the worker's death reads as EOF here
        self.tickets: deque[int] = deque()  # sent, unanswered, in the order the worker takes them
        self.alone = False  # its chunk must have the worker to itself (a suspect being isolated)
        self.ready = False
        self._outbox: queue.SimpleQueue = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_loop, daemon=True)
        self._sender.start()

    def send(self, message) -> None:
        """Queue ``message`` for the worker (a chunk, or None: stop)."""
        self._outbox.put(message)

    def _send_loop(self) -> None:
        while (message := self._outbox.get()) is not _STOP_SENDING:
            try:
                self.conn.send(message)
            except OSError:  # the worker died: the pool sees it by its sentinel
                return

    def stop_sending(self) -> None:
        self._outbox.put(_STOP_SENDING)
        self._sender.join(timeout=10)

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
    """``workers`` spawned processes, each with up to QUEUE_DEPTH chunks; a dead one is replaced.

    A worker takes its chunks in order, so when it dies the first unanswered chunk is the
    one it was running (:class:`WorkerLost`) and the rest never started (NOT_STARTED).
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
        self.workers = workers
        self.chunks_lost = 0  # chunks whose worker process died

    def has_room(self) -> bool:
        return any(not w.alone and len(w.tickets) < QUEUE_DEPTH for w in self._workers)

    def submit(self, ticket: int, spec: PotentialSpec, hashes: list[str], blocks: list, alone: bool = False) -> bool:
        """Send a chunk to the least busy worker; ``alone``: only to an idle one, and nothing after it
        until it is answered. False if no worker can take it now."""
        free = [w for w in self._workers if not w.alone and len(w.tickets) < (1 if alone else QUEUE_DEPTH)]
        if not free:
            return False
        w = min(free, key=lambda w: len(w.tickets))
        w.send((spec.id, hashes, blocks))
        w.tickets.append(ticket)
        w.alone = alone
        return True

    def next_done(self) -> list[tuple[int, object]]:
        busy = [w for w in self._workers if w.tickets]
        ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
        for w in busy:
            if w.conn in ready:
                try:
                    status, payload = w.conn.recv()
                except (EOFError, ConnectionError):
                    break  # died mid-reply: handled as a death below
                ticket = w.tickets.popleft()
                w.alone = False
                if status == "error":
                    raise RuntimeError(f"a labelling worker raised (a bug, not a structure's failure):\n{payload}")
                return [(ticket, payload)]
        for w in busy:
            if w.process.sentinel in ready or w.conn in ready:
                return self._replace(w)
        raise RuntimeError("a labelling worker woke the pool without answering or dying")

    def _replace(self, dead: _Worker) -> list[tuple[int, object]]:
        dead.process.join()
        lost = WorkerLost(exit_reason(dead.process.exitcode))
        dead.stop_sending()
        dead.conn.close()
        self.chunks_lost += 1
        fresh = _Worker(self._ctx, self._specs)
        self._workers[self._workers.index(dead)] = fresh
        fresh.wait_ready()
        running, *waiting = dead.tickets
        return [(running, lost)] + [(t, NOT_STARTED) for t in waiting]

    def close(self, terminate: bool = False) -> None:
        """Stop the workers: politely after a finished job, at once (``terminate``) after an interrupt."""
        for w in self._workers:
            if terminate:
                w.process.terminate()
            else:
                w.send(None)
        for w in self._workers:
            w.process.join(timeout=10)
            if w.process.is_alive():
                w.process.kill()
                w.process.join()
            w.stop_sending()
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
        self._slots = QUEUE_DEPTH * threads  # tasks at the scheduler at a time
        self.chunks_lost = 0  # tasks Dask gave up because their workers died (KilledWorker)
        self._versions = versions
        self._done = as_completed(loop=self._client.loop)
        self._tickets: dict[str, int] = {}

    def has_room(self) -> bool:
        return len(self._tickets) < self._slots

    def submit(self, ticket: int, spec: PotentialSpec, hashes: list[str], blocks: list, alone: bool = False) -> bool:
        """Hand a chunk to the scheduler (which places it; ``alone`` cannot be promised on Dask)."""
        if not self.has_room():
            return False
        fut = self._client.submit(worker.label_on_dask, spec, self._versions, hashes, blocks, pure=False)
        self._tickets[fut.key] = ticket
        self._done.add(fut)
        return True

    def next_done(self) -> list[tuple[int, object]]:
        from distributed import KilledWorker
        fut = next(self._done)
        ticket = self._tickets.pop(fut.key)
        if fut.status == "error":
            exc = fut.exception()
            if isinstance(exc, KilledWorker):
                self.chunks_lost += 1
                last = getattr(exc.last_worker, "address", exc.last_worker)
                return [(ticket, WorkerLost(f"the Dask worker(s) running it died (KilledWorker; last {last})"))]
            fut.result()  # raises the worker's exception here, with its traceback
        outcome = fut.result()
        fut.release()
        return [(ticket, outcome)]

    def close(self, terminate: bool = False) -> None:
        if terminate:
            self._client.cancel(list(self._done.futures))
        self._client.close()
