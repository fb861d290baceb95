"""The label store: one SQLite file holding EIP labels, failures and provenance.

Rows are keyed by (structure hash, EIP id). Each batch of results is written
in one transaction, so a crash or Ctrl-C at any moment leaves every committed
label intact and nothing half-written. Several processes may share a store:
work is *claimed* before it is computed, and a claim held by a live process is
left alone; claims of dead processes are taken over.

Units: energy eV, forces eV/Å (float64, (n_atoms, 3)), stress eV/Å³ (float64,
ASE Voigt (6,), positive = tensile).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SCHEMA_VERSION = 1
UNITS = {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3 (ASE Voigt xx yy zz yz xz xy, tensile > 0)",
         "positions": "Å"}

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS structures (
    hash TEXT PRIMARY KEY, n_atoms INTEGER NOT NULL, formula TEXT NOT NULL,
    first_source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS provenance (
    id INTEGER PRIMARY KEY, eip_id TEXT NOT NULL, spec_hash TEXT NOT NULL,
    info TEXT NOT NULL, UNIQUE (eip_id, spec_hash, info));
CREATE TABLE IF NOT EXISTS labels (
    structure_hash TEXT NOT NULL, eip_id TEXT NOT NULL,
    energy REAL NOT NULL, forces BLOB NOT NULL, stress BLOB,
    seconds REAL NOT NULL, provenance_id INTEGER NOT NULL REFERENCES provenance(id),
    created_at REAL NOT NULL, PRIMARY KEY (structure_hash, eip_id));
CREATE TABLE IF NOT EXISTS failures (
    structure_hash TEXT NOT NULL, eip_id TEXT NOT NULL, kind TEXT NOT NULL,
    reason TEXT NOT NULL, provenance_id INTEGER REFERENCES provenance(id),
    created_at REAL NOT NULL, PRIMARY KEY (structure_hash, eip_id));
CREATE TABLE IF NOT EXISTS alignments (
    eip_id TEXT NOT NULL, reference TEXT NOT NULL, structures_hash TEXT NOT NULL,
    info TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (eip_id, reference, structures_hash));
CREATE TABLE IF NOT EXISTS claims (
    structure_hash TEXT NOT NULL, eip_id TEXT NOT NULL, owner TEXT NOT NULL,
    claimed_at REAL NOT NULL, PRIMARY KEY (structure_hash, eip_id));
"""


class StaleLabelsError(RuntimeError):
    """The store holds labels of an EIP id whose definition has since changed."""


@dataclass(frozen=True)
class Label:
    """One stored EIP label."""

    structure_hash: str
    eip_id: str
    energy: float  # eV
    forces: np.ndarray  # (n_atoms, 3), eV/Å
    stress: np.ndarray | None  # (6,), eV/Å³
    seconds: float  # wall time of the evaluation
    provenance_id: int


@dataclass(frozen=True)
class Failure:
    structure_hash: str
    eip_id: str
    kind: str
    reason: str


def owner_id() -> str:
    """``host:pid:start`` of this process, the owner name written on claims."""
    return f"{socket.gethostname()}:{os.getpid()}:{_PROCESS_START:.0f}"


_PROCESS_START = time.time()


def _owner_alive(owner: str, lease_s: float, claimed_at: float) -> bool:
    host, pid, _ = owner.split(":")
    if host == socket.gethostname():
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return time.time() - claimed_at < lease_s  # another host: trust the lease


class LabelStore:
    """A label store file. Open one per process; not thread-safe."""

    def __init__(self, path: str | Path, lease_s: float = 3600.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lease_s = lease_s  # claims by processes on other hosts expire after this
        self.owner = owner_id()
        self._db = sqlite3.connect(self.path, timeout=60.0, isolation_level=None)
        self._db.execute("PRAGMA busy_timeout=60000")
        self._db.execute("PRAGMA page_size=16384")  # a new store's pages: 10 labels of 64 atoms, not 2
        self._set_wal()
        self._db.execute("PRAGMA synchronous=NORMAL")
        with self._transaction():
            for stmt in filter(str.strip, _SCHEMA.split(";")):
                self._db.execute(stmt)
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)",
                             (str(SCHEMA_VERSION),))
            self._db.execute("INSERT OR IGNORE INTO meta VALUES ('units', ?)", (json.dumps(UNITS),))
        version = int(self._meta("schema_version"))
        if version != SCHEMA_VERSION:
            raise RuntimeError(f"{self.path}: label store schema {version}, this eip2nn reads "
                               f"{SCHEMA_VERSION}")

    # -- plumbing --------------------------------------------------------------
    def _set_wal(self, patience_s: float = 60.0) -> None:
        """Switch to WAL. Two processes creating one store at once can make SQLite answer
        SQLITE_BUSY here without waiting on the busy timeout, so retry until ``patience_s``."""
        deadline = time.monotonic() + patience_s
        delay = 0.01
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise sqlite3.OperationalError(f"{self.path}: could not switch to WAL: {e}") from e
                time.sleep(delay)
                delay = min(2 * delay, 0.5)

    @contextlib.contextmanager
    def _transaction(self):
        """One write transaction: committed on success, rolled back on any exception.

        A signal (Ctrl-C, SIGTERM) may raise between any two statements, also
        right after BEGIN or during COMMIT; so the rollback asks SQLite whether
        a transaction is still open instead of assuming it.
        """
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise

    def _meta(self, key: str) -> str:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0]

    def close(self) -> None:
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- registration ---------------------------------------------------------------
    def add_structures(self, rows: Iterable[tuple[str, int, str, str]]) -> None:
        """Register (hash, n_atoms, formula, source) rows; known hashes are kept."""
        with self._transaction():
            self._db.executemany("INSERT OR IGNORE INTO structures VALUES (?, ?, ?, ?)", rows)

    def provenance_id(self, eip_id: str, spec_hash: str, info: dict) -> int:
        """Id of this provenance record, created on first use."""
        text = json.dumps(info, sort_keys=True)
        with self._transaction():
            self._db.execute("INSERT OR IGNORE INTO provenance (eip_id, spec_hash, info) "
                             "VALUES (?, ?, ?)", (eip_id, spec_hash, text))
            row = self._db.execute("SELECT id FROM provenance WHERE eip_id = ? AND spec_hash = ? "
                                   "AND info = ?", (eip_id, spec_hash, text)).fetchone()
        return row[0]

    def spec_hashes(self, eip_id: str) -> set[str]:
        """Spec hashes under which labels of ``eip_id`` were stored."""
        rows = self._db.execute(
            "SELECT DISTINCT p.spec_hash FROM labels l JOIN provenance p ON l.provenance_id = p.id "
            "WHERE l.eip_id = ?", (eip_id,)).fetchall()
        return {r[0] for r in rows}

    # -- what is left to do --------------------------------------------------------
    def done(self, eip_id: str) -> set[str]:
        """Structure hashes that have a label or a recorded failure for ``eip_id``."""
        rows = self._db.execute(
            "SELECT structure_hash FROM labels WHERE eip_id = ? UNION "
            "SELECT structure_hash FROM failures WHERE eip_id = ?", (eip_id, eip_id)).fetchall()
        return {r[0] for r in rows}

    def claim(self, eip_id: str, hashes: list[str]) -> list[str]:
        """Claim the given unfinished work for this process; returns what was claimed.

        Skips hashes already labelled/failed or claimed by another live process.
        Claims of dead processes (or expired leases) are taken over.
        """
        now = time.time()
        marks = ",".join("?" * len(hashes))
        with self._transaction():
            done = {r[0] for r in self._db.execute(
                f"SELECT structure_hash FROM labels WHERE eip_id = ? AND structure_hash IN ({marks}) "
                f"UNION SELECT structure_hash FROM failures WHERE eip_id = ? AND structure_hash IN ({marks})",
                (eip_id, *hashes, eip_id, *hashes))}
            held = {h: (owner, t) for h, owner, t in self._db.execute(
                f"SELECT structure_hash, owner, claimed_at FROM claims WHERE eip_id = ? "
                f"AND structure_hash IN ({marks})", (eip_id, *hashes))}
            claimed = [h for h in hashes if h not in done and not (
                h in held and held[h][0] != self.owner
                and _owner_alive(held[h][0], self.lease_s, held[h][1]))]
            self._db.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)",
                                 [(h, eip_id, self.owner, now) for h in claimed])
        return claimed

    def release_claims(self) -> None:
        """Drop every claim of this process (work not finished goes back to the pool)."""
        with self._transaction():
            self._db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))

    def claimed_by_others(self, eip_id: str) -> int:
        rows = self._db.execute("SELECT owner, claimed_at FROM claims WHERE eip_id = ? AND owner != ?",
                                (eip_id, self.owner)).fetchall()
        return sum(_owner_alive(o, self.lease_s, t) for o, t in rows)

    # -- writing results ------------------------------------------------------------
    def write(self, eip_id: str, provenance_id: int, labels: list[tuple], failures: list[tuple]) -> None:
        """Store one batch atomically and release its claims.

        labels: (hash, energy eV, forces (n, 3) eV/Å, stress (6,) eV/Å³ or None, seconds)
        failures: (hash, kind, reason)
        """
        now = time.time()
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(h, eip_id, float(e), _blob(f), None if s is None else _blob(s), float(sec),
                  provenance_id, now) for h, e, f, s, sec in labels])
            self._db.executemany(
                "INSERT OR IGNORE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                [(h, eip_id, kind, reason, provenance_id, now) for h, kind, reason in failures])
            done = [h for h, *_ in labels] + [h for h, *_ in failures]
            self._db.execute(f"DELETE FROM claims WHERE eip_id = ? AND structure_hash IN "
                             f"({','.join('?' * len(done))})", (eip_id, *done))  # one statement, not one per row

    def forget_failures(self, eip_id: str, kinds: Iterable[str] | None = None) -> int:
        """Delete recorded failures of ``eip_id`` (optionally only some kinds) so they are retried."""
        with self._transaction():
            if kinds is None:
                cur = self._db.execute("DELETE FROM failures WHERE eip_id = ?", (eip_id,))
            else:
                kinds = list(kinds)
                cur = self._db.execute(
                    f"DELETE FROM failures WHERE eip_id = ? AND kind IN ({','.join('?' * len(kinds))})",
                    (eip_id, *kinds))
        return cur.rowcount

    def forget_stale(self, eip_id: str, spec_hash: str) -> int:
        """Delete the labels, failures and alignments of ``eip_id`` made under another spec hash
        (its definition changed since); returns how many labels went."""
        stale = "SELECT id FROM provenance WHERE eip_id = ? AND spec_hash != ?"
        with self._transaction():
            cur = self._db.execute(f"DELETE FROM labels WHERE eip_id = ? AND provenance_id IN ({stale})",
                                   (eip_id, eip_id, spec_hash))
            self._db.execute(f"DELETE FROM failures WHERE eip_id = ? AND provenance_id IN ({stale})",
                             (eip_id, eip_id, spec_hash))
            if cur.rowcount:
                self._db.execute("DELETE FROM alignments WHERE eip_id = ?", (eip_id,))
        return cur.rowcount

    # -- reading -----------------------------------------------------------------
    def labels(self, eip_id: str | None = None, hashes: Iterable[str] | None = None) -> Iterator[Label]:
        """Stored labels, optionally of one EIP and/or some structures."""
        sql = ("SELECT l.structure_hash, l.eip_id, l.energy, l.forces, l.stress, l.seconds, "
               "l.provenance_id, s.n_atoms FROM labels l JOIN structures s ON s.hash = l.structure_hash")
        where, args = [], []
        if eip_id is not None:
            where.append("l.eip_id = ?")
            args.append(eip_id)
        wanted = set(hashes) if hashes is not None else None
        if where:
            sql += " WHERE " + " AND ".join(where)
        for h, eip, e, f, s, sec, pid, n in self._db.execute(sql + " ORDER BY l.rowid", args):
            if wanted is None or h in wanted:
                yield Label(h, eip, e, _array(f, (n, 3)),
                            None if s is None else _array(s, (6,)), sec, pid)

    def failures(self, eip_id: str | None = None) -> list[Failure]:
        sql = "SELECT structure_hash, eip_id, kind, reason FROM failures"
        rows = self._db.execute(sql + (" WHERE eip_id = ?" if eip_id else "") + " ORDER BY rowid",
                                (eip_id,) if eip_id else ()).fetchall()
        return [Failure(*r) for r in rows]

    def provenance(self, provenance_id: int) -> dict:
        row = self._db.execute("SELECT eip_id, spec_hash, info FROM provenance WHERE id = ?",
                               (provenance_id,)).fetchone()
        return {"eip_id": row[0], "spec_hash": row[1], **json.loads(row[2])}

    def counts(self) -> dict[str, dict[str, int]]:
        """Per EIP: number of labels, failures (by kind) and open claims."""
        out: dict[str, dict[str, int]] = {}
        for eip, n in self._db.execute("SELECT eip_id, COUNT(*) FROM labels GROUP BY eip_id"):
            out.setdefault(eip, {})["labels"] = n
        for eip, kind, n in self._db.execute(
                "SELECT eip_id, kind, COUNT(*) FROM failures GROUP BY eip_id, kind"):
            out.setdefault(eip, {})[f"failed:{kind}"] = n
        for eip, n in self._db.execute("SELECT eip_id, COUNT(*) FROM claims GROUP BY eip_id"):
            out.setdefault(eip, {})["claimed"] = n
        return out

    # -- alignments to a reference ------------------------------------------------------
    def save_alignment(self, eip_id: str, reference: str, structure_hashes: Iterable[str], info: dict) -> None:
        """Keep the per-element offsets aligning ``eip_id`` to ``reference`` (e.g. "mlearn/Si DFT").

        structure_hashes: the labelled structures the offsets were fitted on;
        info: offsets (eV/atom per element) and aligned errors. Refitting on the
        same structures replaces the row.
        """
        digest = hashlib.sha256("\n".join(sorted(structure_hashes)).encode()).hexdigest()[:16]
        with self._transaction():
            self._db.execute("INSERT OR REPLACE INTO alignments VALUES (?, ?, ?, ?, ?)",
                             (eip_id, reference, digest, json.dumps(info, sort_keys=True), time.time()))

    def alignments(self, eip_id: str | None = None) -> list[dict]:
        """Stored alignments, oldest first: eip_id, reference, structures_hash, created_at and the info."""
        sql = "SELECT eip_id, reference, structures_hash, info, created_at FROM alignments"
        rows = self._db.execute(sql + (" WHERE eip_id = ?" if eip_id else "") + " ORDER BY created_at",
                                (eip_id,) if eip_id else ()).fetchall()
        return [{"eip_id": e, "reference": r, "structures_hash": h, "created_at": t, **json.loads(i)}
                for e, r, h, i, t in rows]

    def n_structures(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM structures").fetchone()[0]


def _blob(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def _array(b: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(b, dtype="<f8").reshape(shape).copy()
