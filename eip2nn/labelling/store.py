"""The label store: one SQLite file holding EIP labels, failures and provenance.

Rows are keyed by (structure hash, EIP id). Each batch of results is written
in one transaction, so a crash or Ctrl-C at any moment leaves every committed
label intact and nothing half-written. Several processes may share a store:
work is *claimed* before it is computed, and a claim held by a live process is
left alone; claims of dead processes are taken over.

Units: energy eV, forces eV/Å (float64, (n_atoms, 3)), stress eV/Å³ (float64,
ASE Voigt (6,), positive = tensile), local (per-atom) energies eV (float64,
(n_atoms,), summing to the energy).

A label's local energies are NULL when it was stored before schema 3 (never
asked for) and an empty blob when the EIP gives none (e.g. a KIM model without
``partialParticleEnergy``): labelling with ``local_energies=True`` re-evaluates
only the first kind, and fills in their local energies without touching the rest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import socket
import sqlite3
import time
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

SCHEMA_VERSION = 3
UNITS = {"energy": "eV", "forces": "eV/Å", "stress": "eV/Å^3 (ASE Voigt xx yy zz yz xz xy, tensile > 0)",
         "positions": "Å", "local_energies": "eV per atom"}

# Labels, failures and claims refer to a structure by its number in `structures`, in the
# order structures were first registered, and are keyed (EIP, structure number): a labelling
# pass then adds to the end of its EIP's key range. Keyed by the random content hash (schema 1),
# every chunk touched pages all over the key index, and writing a label slowed from 5 to 55 µs
# as a store grew to 150,000 labels.
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS structures (
    id INTEGER PRIMARY KEY, hash TEXT NOT NULL UNIQUE, n_atoms INTEGER NOT NULL,
    formula TEXT NOT NULL, first_source TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS provenance (
    id INTEGER PRIMARY KEY, eip_id TEXT NOT NULL, spec_hash TEXT NOT NULL,
    info TEXT NOT NULL, UNIQUE (eip_id, spec_hash, info));
CREATE TABLE IF NOT EXISTS labels (
    eip_id TEXT NOT NULL, structure_id INTEGER NOT NULL REFERENCES structures(id),
    energy REAL NOT NULL, forces BLOB NOT NULL, stress BLOB,
    seconds REAL NOT NULL, provenance_id INTEGER NOT NULL REFERENCES provenance(id),
    created_at REAL NOT NULL, local_energies BLOB, PRIMARY KEY (eip_id, structure_id));
CREATE TABLE IF NOT EXISTS failures (
    eip_id TEXT NOT NULL, structure_id INTEGER NOT NULL REFERENCES structures(id), kind TEXT NOT NULL,
    reason TEXT NOT NULL, provenance_id INTEGER REFERENCES provenance(id),
    created_at REAL NOT NULL, PRIMARY KEY (eip_id, structure_id));
CREATE TABLE IF NOT EXISTS alignments (
    eip_id TEXT NOT NULL, reference TEXT NOT NULL, structures_hash TEXT NOT NULL,
    info TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (eip_id, reference, structures_hash));
CREATE TABLE IF NOT EXISTS claims (
    eip_id TEXT NOT NULL, structure_id INTEGER NOT NULL, owner TEXT NOT NULL,
    claimed_at REAL NOT NULL, PRIMARY KEY (eip_id, structure_id)) WITHOUT ROWID;
"""

# Schema 1 -> 2: the same rows, re-keyed by structure number (in one transaction).
_MIGRATE_FROM_1 = """
ALTER TABLE structures RENAME TO v1_structures;
ALTER TABLE labels RENAME TO v1_labels;
ALTER TABLE failures RENAME TO v1_failures;
ALTER TABLE claims RENAME TO v1_claims;
{schema};
INSERT INTO structures (hash, n_atoms, formula, first_source)
    SELECT hash, n_atoms, formula, first_source FROM v1_structures ORDER BY rowid;
INSERT INTO labels (eip_id, structure_id, energy, forces, stress, seconds, provenance_id, created_at)
    SELECT l.eip_id, s.id, l.energy, l.forces, l.stress, l.seconds, l.provenance_id,
    l.created_at FROM v1_labels l JOIN structures s ON s.hash = l.structure_hash ORDER BY l.rowid;
INSERT INTO failures SELECT f.eip_id, s.id, f.kind, f.reason, f.provenance_id, f.created_at
    FROM v1_failures f JOIN structures s ON s.hash = f.structure_hash ORDER BY f.rowid;
INSERT INTO claims SELECT c.eip_id, s.id, c.owner, c.claimed_at
    FROM v1_claims c JOIN structures s ON s.hash = c.structure_hash
"""

# Schema 2 -> 3: labels gain local energies, NULL for every label stored so far (never asked for).
_MIGRATE_FROM_2 = "ALTER TABLE labels ADD COLUMN local_energies BLOB"


_MAX_SQL_ARGS = 30000  # SQLite allows 32,766 parameters per statement


_HAS_LOCAL = "AND l.local_energies IS NOT NULL"  # a label counted done when local energies are asked for


class LabelRow(NamedTuple):
    """One EIP label as :meth:`LabelStore.write` takes it (and the labelling workers send it)."""

    hash: str
    energy: float  # eV
    forces: np.ndarray  # (n_atoms, 3), eV/Å
    stress: np.ndarray | None  # (6,) eV/Å³
    seconds: float  # wall time of the evaluation
    local_energies: np.ndarray | None = None  # (n_atoms,) eV; None: the EIP gives none


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
    local_energies: np.ndarray | None = None  # (n_atoms,) eV; None: the EIP gives none, or never asked


@dataclass(frozen=True)
class Failure:
    structure_hash: str
    eip_id: str
    kind: str
    reason: str
    first_source: str = ""  # where the structure was first read, e.g. "file.xyz/12"


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
        self._ids: dict[str, int] = {}  # structure hash -> its number in `structures` (fixed once given)
        try:
            with self._transaction():
                version = self._schema_version()
                if version is None:
                    self._run_script(_SCHEMA)
                    self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
                    self._db.execute("INSERT OR IGNORE INTO meta VALUES ('units', ?)", (json.dumps(UNITS),))
                elif version == 1:
                    self._migrate_from_1()
                elif version == 2:
                    self._migrate_from_2()
                elif version != SCHEMA_VERSION:
                    raise RuntimeError(f"{self.path}: label store schema {version}, this eip2nn reads "
                                       f"{SCHEMA_VERSION} (and migrates 1 and 2)")
        except BaseException:
            self._db.close()
            raise
        if version == 1:
            self._give_back_space()

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

    def _schema_version(self) -> int | None:
        """The store's schema version; None for a new (empty) file."""
        if not self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone():
            return None
        row = self._db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        return None if row is None else int(row[0])

    def _run_script(self, script: str) -> None:
        for statement in filter(str.strip, script.split(";")):
            self._db.execute(statement)

    def _migrate_from_1(self) -> None:
        """Re-key a schema-1 store by structure number (inside the caller's transaction)."""
        tables = ("labels", "failures", "claims")
        before = {t: self._db.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in tables}
        self._run_script(_MIGRATE_FROM_1.format(schema=_SCHEMA))
        for table in tables:
            lost = before[table] - self._db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            if lost:
                raise RuntimeError(f"{self.path}: {lost} {table} rows of label store schema 1 name a "
                                   "structure hash missing from its `structures` table; nothing was "
                                   "changed, and this eip2nn cannot read the store")
        for table in ("structures", *tables):
            self._db.execute(f"DROP TABLE v1_{table}")
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _migrate_from_2(self) -> None:
        """Add the local energies' column (inside the caller's transaction): every row stays."""
        self._db.execute(_MIGRATE_FROM_2)
        self._db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def _give_back_space(self) -> None:
        """After a migration the file holds the old tables' pages as free space: VACUUM it away.
        With another process in the store, VACUUM cannot run; the free pages are re-used later."""
        try:
            self._db.execute("VACUUM")
        except sqlite3.OperationalError as e:
            warnings.warn(f"{self.path}: migrated to schema {SCHEMA_VERSION}; could not VACUUM ({e}), "
                          "so the file keeps the old tables' space for re-use")

    def _structure_ids(self, hashes: list[str]) -> list[int]:
        """Numbers in `structures` of registered structure hashes (KeyError names one that is not)."""
        missing = [h for h in hashes if h not in self._ids]
        for start in range(0, len(missing), _MAX_SQL_ARGS):
            part = missing[start:start + _MAX_SQL_ARGS]
            self._ids.update((h, i) for i, h in self._db.execute(
                f"SELECT id, hash FROM structures WHERE hash IN ({','.join('?' * len(part))})", part))
        try:
            return [self._ids[h] for h in hashes]
        except KeyError as e:
            raise KeyError(f"{self.path}: structure {e.args[0]} was never registered "
                           "(LabelStore.add_structures)") from None

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
            self._db.executemany("INSERT OR IGNORE INTO structures (hash, n_atoms, formula, first_source) "
                                 "VALUES (?, ?, ?, ?)", rows)

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
    def done(self, eip_id: str, local_energies: bool = False) -> set[str]:
        """Structure hashes that have a label or a recorded failure for ``eip_id``; with
        ``local_energies``, not those labelled before local energies were asked for."""
        rows = self._db.execute(
            "SELECT s.hash FROM labels l JOIN structures s ON s.id = l.structure_id WHERE l.eip_id = ? "
            f"{_HAS_LOCAL if local_energies else ''} "
            "UNION SELECT s.hash FROM failures f JOIN structures s ON s.id = f.structure_id "
            "WHERE f.eip_id = ?", (eip_id, eip_id)).fetchall()
        return {r[0] for r in rows}

    def claim(self, eip_id: str, hashes: list[str], local_energies: bool = False) -> list[str]:
        """Claim the given unfinished work for this process; returns what was claimed.

        Skips hashes already labelled/failed (as :meth:`done` counts them) or claimed by
        another live process. Claims of dead processes (or expired leases) are taken over.
        """
        now = time.time()
        ids = self._structure_ids(hashes)
        done, held = set(), {}
        with self._transaction():
            for start in range(0, len(ids), _MAX_SQL_ARGS // 2):
                part = ids[start:start + _MAX_SQL_ARGS // 2]
                marks = ",".join("?" * len(part))
                done.update(r[0] for r in self._db.execute(
                    f"SELECT structure_id FROM labels l WHERE eip_id = ? AND structure_id IN ({marks}) "
                    f"{_HAS_LOCAL if local_energies else ''} "
                    f"UNION SELECT structure_id FROM failures WHERE eip_id = ? AND structure_id IN ({marks})",
                    (eip_id, *part, eip_id, *part)))
                held.update((i, (owner, t)) for i, owner, t in self._db.execute(
                    f"SELECT structure_id, owner, claimed_at FROM claims WHERE eip_id = ? "
                    f"AND structure_id IN ({marks})", (eip_id, *part)))
            claimed = [(h, i) for h, i in zip(hashes, ids) if i not in done and not (
                i in held and held[i][0] != self.owner
                and _owner_alive(held[i][0], self.lease_s, held[i][1]))]
            self._db.executemany("INSERT OR REPLACE INTO claims VALUES (?, ?, ?, ?)",
                                 [(eip_id, i, self.owner, now) for _, i in claimed])
        return [h for h, _ in claimed]

    def release_claims(self) -> None:
        """Drop every claim of this process (work not finished goes back to the pool)."""
        with self._transaction():
            self._db.execute("DELETE FROM claims WHERE owner = ?", (self.owner,))

    def claimed_by_others(self, eip_id: str) -> int:
        rows = self._db.execute("SELECT owner, claimed_at FROM claims WHERE eip_id = ? AND owner != ?",
                                (eip_id, self.owner)).fetchall()
        return sum(_owner_alive(o, self.lease_s, t) for o, t in rows)

    # -- writing results ------------------------------------------------------------
    def write(self, eip_id: str, provenance_id: int, labels: list[LabelRow], failures: list[tuple]) -> None:
        """Store one batch atomically and release its claims.

        labels: :class:`LabelRow` (hash, energy eV, forces (n, 3) eV/Å, stress (6,) eV/Å³ or None,
        seconds, local energies (n,) eV or None = the EIP gives none); a structure labelled before
        keeps its label, and gains the local energies if it had none stored (NULL).
        failures: (hash, kind, reason); the structures must have been registered.
        """
        now = time.time()
        label_ids = self._structure_ids([row.hash for row in labels])
        failure_ids = self._structure_ids([h for h, *_ in failures])
        with self._transaction():
            rows = [(eip_id, i, float(r.energy), _blob(r.forces), None if r.stress is None else _blob(r.stress),
                     float(r.seconds), provenance_id, now, _local_blob(r.local_energies))
                    for i, r in zip(label_ids, labels)]
            self._db.executemany(  # a stored label stays; one stored before local energies were asked gains them
                "INSERT INTO labels (eip_id, structure_id, energy, forces, stress, seconds, provenance_id, created_at, "
                "local_energies) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (eip_id, structure_id) DO UPDATE "
                "SET local_energies = excluded.local_energies WHERE labels.local_energies IS NULL", rows)
            self._db.executemany(
                "INSERT OR IGNORE INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                [(eip_id, i, kind, reason, provenance_id, now)
                 for i, (_, kind, reason) in zip(failure_ids, failures)])
            done = label_ids + failure_ids
            for start in range(0, len(done), _MAX_SQL_ARGS):  # one statement per part, not one per row
                part = done[start:start + _MAX_SQL_ARGS]
                self._db.execute(f"DELETE FROM claims WHERE eip_id = ? AND structure_id IN "
                                 f"({','.join('?' * len(part))})", (eip_id, *part))

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
        sql = ("SELECT s.hash, l.eip_id, l.energy, l.forces, l.stress, l.seconds, "
               "l.provenance_id, s.n_atoms, l.local_energies FROM labels l JOIN structures s ON s.id = l.structure_id")
        where, args = [], []
        if eip_id is not None:
            where.append("l.eip_id = ?")
            args.append(eip_id)
        wanted = set(hashes) if hashes is not None else None
        if where:
            sql += " WHERE " + " AND ".join(where)
        for h, eip, e, f, s, sec, pid, n, local in self._db.execute(sql + " ORDER BY l.rowid", args):
            if wanted is None or h in wanted:
                yield Label(h, eip, e, _array(f, (n, 3)), None if s is None else _array(s, (6,)), sec, pid,
                            _array(local, (n,)) if local else None)

    def failures(self, eip_id: str | None = None) -> list[Failure]:
        sql = ("SELECT s.hash, f.eip_id, f.kind, f.reason, s.first_source FROM failures f "
               "JOIN structures s ON s.id = f.structure_id")
        rows = self._db.execute(sql + (" WHERE f.eip_id = ?" if eip_id else "") + " ORDER BY f.rowid",
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


def _local_blob(local: np.ndarray | None) -> bytes:
    """A label's local energies as stored: the array, or an empty blob where the EIP gives none."""
    return b"" if local is None else _blob(local)


def _blob(a: np.ndarray) -> bytes:
    return np.ascontiguousarray(a, dtype="<f8").tobytes()


def _array(b: bytes, shape: tuple[int, ...]) -> np.ndarray:
    return np.frombuffer(b, dtype="<f8").reshape(shape).copy()
