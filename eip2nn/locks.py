"""Exclusive file locks between processes (stages, stores being created)."""

from __future__ import annotations

import fcntl
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def file_lock(path: str | Path):
    """Hold an exclusive ``flock`` on ``path`` (created, with its folder) for the ``with`` block."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def sqlite_path(uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL, else None."""
    return Path(uri[len("sqlite:///"):]) if uri.startswith("sqlite:///") else None


@contextmanager
def sqlite_store_lock(uri: str):
    """For a SQLite URL, a lock beside the database (schema set-up by MLflow or Optuna is not safe to race)."""
    db = sqlite_path(uri)
    if db is None:
        yield
        return
    with file_lock(db.parent / f"{db.name}.lock"):
        yield
