"""MLflow at the edge: where runs go, and one run's logging.

Default store: SQLite ``mlruns/mlflow.db`` with artifacts in
``mlruns/artifacts/<experiment>``, where ``mlruns/`` is the nearest such
folder at or above the working directory (the repo root's), else created in
the working directory. ``MLFLOW_TRACKING_URI`` overrides it (a user's server).
Open the UI with ``mlflow ui --backend-store-uri sqlite:///mlruns/mlflow.db``.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eip2nn.config import flatten
from eip2nn.locks import sqlite_path, sqlite_store_lock

PARAM_MAX = 6000  # MLflow's limit on a param value's length


def mlruns_dir() -> Path:
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "mlruns").is_dir():
            return folder / "mlruns"
    return here / "mlruns"


def tracking_uri() -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        return uri
    folder = mlruns_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}"


def git_commit() -> str:
    """Commit of the eip2nn source tree ("unknown" outside a git checkout)."""
    src = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return out.stdout.strip() + ("+dirty" if dirty else "") if out.returncode == 0 else "unknown"


class Tracker:
    """One MLflow experiment; :meth:`start` opens runs in it."""

    def __init__(self, experiment: str, uri: str | None = None):
        for name in ("alembic", "mlflow.store.db.utils", "mlflow.tracking.fluent"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from mlflow.tracking import MlflowClient

        self.uri = uri or tracking_uri()
        with sqlite_store_lock(self.uri):  # first use creates/migrates the store: one process at a time
            self.client = MlflowClient(tracking_uri=self.uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:
                db = sqlite_path(self.uri)
                location = (db.parent / "artifacts" / experiment).as_uri() if db else None
                exp_id = self.client.create_experiment(experiment, artifact_location=location)
            else:
                exp_id = exp.experiment_id
        self.experiment_id = exp_id

    enabled = True

    def start(self, run_name: str, tags: dict[str, str], parent_run_id: str | None = None) -> "Run":
        """A new run; the caller ends it (prefer :meth:`run`, which does)."""
        tags = dict(tags)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        return Run(self.client, run.info.run_id)

    @contextmanager
    def run(self, run_name: str, tags: dict[str, str], parent_run_id: str | None = None,
            killed_by: tuple[type[BaseException], ...] = ()) -> Iterator["Run"]:
        """A run that ends itself: FINISHED (or the ``status`` the block set), KILLED on Ctrl-C/SIGTERM
        or an exception of ``killed_by`` (a pruned trial), FAILED on any other exception (re-raised)."""
        run = self.start(run_name, tags, parent_run_id)
        with ending(run, killed_by):
            yield run


@contextmanager
def ending(run: "Run | NullRun", killed_by: tuple[type[BaseException], ...] = ()) -> Iterator[None]:
    """End ``run`` when the block ends, with the status that says how it ended."""
    status = "FAILED"
    try:
        yield
        status = run.status or "FINISHED"
    except (KeyboardInterrupt, *killed_by):
        status = "KILLED"
        raise
    finally:
        run.end(status)


class NullRun:
    """Stands in for a run when tracking is off: it records nothing."""

    run_id = None
    status: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        pass

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        pass

    def set_tags(self, tags: dict[str, Any]) -> None:
        pass

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        pass

    def end(self, status: str = "FINISHED") -> None:
        pass


class NullTracker:
    """Stands in for a :class:`Tracker` when tracking is off: its runs record nothing."""

    enabled = False
    uri = None
    experiment_id = None

    def start(self, run_name: str, tags: dict[str, str], parent_run_id: str | None = None) -> NullRun:
        return NullRun()

    @contextmanager
    def run(self, run_name: str, tags: dict[str, str], parent_run_id: str | None = None,
            killed_by: tuple[type[BaseException], ...] = ()) -> Iterator[NullRun]:
        yield NullRun()


def make_tracker(experiment: str, enabled: bool = True) -> Tracker | NullTracker:
    """The experiment's :class:`Tracker`, or a :class:`NullTracker` when tracking is off."""
    return Tracker(experiment) if enabled else NullTracker()


_NOT_IN_MLFLOW_NAMES = re.compile(r"[^A-Za-z0-9_\-. :/]")


def mlflow_key(name: str) -> str:
    """``name`` as an MLflow param or metric key: characters MLflow refuses (e.g. the ``+`` of a variant
    ``snap+nn``) become ``_``."""
    return _NOT_IN_MLFLOW_NAMES.sub("_", name)


class Run:
    """One MLflow run. Set :attr:`status` inside :meth:`Tracker.run` to end it otherwise than FINISHED."""

    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id
        self.status: str | None = None

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(mlflow_key(k), str(v)[:PARAM_MAX]) for k, v in sorted(flat.items())]
        for k in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[k:k + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(mlflow_key(k), float(v), now, step or 0) for k, v in metrics.items() if v == v]  # drop NaN
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def set_tags(self, tags: dict[str, Any]) -> None:
        for k, v in tags.items():
            self.client.set_tag(self.run_id, k, str(v))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status)


def download_checkpoint(run_id: str, artifact: str = "model/model.pt", uri: str | None = None) -> Path:
    """Local path of the model checkpoint logged by run ``run_id``."""
    from mlflow.artifacts import download_artifacts

    return Path(download_artifacts(run_id=run_id, artifact_path=artifact, tracking_uri=uri or tracking_uri()))
