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
import subprocess
import time
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

    def start(self, run_name: str, tags: dict[str, str], parent_run_id: str | None = None) -> "Run":
        tags = dict(tags)
        if parent_run_id:
            tags["mlflow.parentRunId"] = parent_run_id
        run = self.client.create_run(self.experiment_id, run_name=run_name, tags=tags)
        return Run(self.client, run.info.run_id)


class Run:
    def __init__(self, client, run_id: str):
        self.client, self.run_id = client, run_id

    def log_params(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        flat = flatten(params)
        items = [Param(k, str(v)[:PARAM_MAX]) for k, v in sorted(flat.items())]
        for k in range(0, len(items), 100):
            self.client.log_batch(self.run_id, params=items[k:k + 100])

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(k, float(v), now, step or 0) for k, v in metrics.items() if v == v]  # drop NaN
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
