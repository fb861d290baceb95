"""Run an Optuna study over a pipeline's knobs.

Each trial trains one arm at one DFT fraction for the objective's seeds (the
transfer arms reuse the pretrained backbone when the knobs leave pretraining
alone) and returns the mean validation error. The per-epoch validation loss
of the first seed feeds the pruner. Every trial is an MLflow child run of this
process's sweep run, with the stage runs nested under it. Processes that share
a study name and storage cooperate: Optuna hands each its own trials.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import optuna
import yaml

from eip2nn.locks import sqlite_path, sqlite_store_lock
from eip2nn.pipeline.runner import cell_config, pretrain_config, run_or_reuse
from eip2nn.sweep.config import ParamSpace, Sweep
from eip2nn.tracking import NullTracker, Tracker, git_commit, make_tracker, mlruns_dir
from eip2nn.training.stages import StopStage

METRIC_OF = {"val_energy_mae": lambda m: m.energy_mae, "val_force_mae": lambda m: m.force_mae}


def default_storage() -> str:
    return f"sqlite:///{mlruns_dir() / 'optuna.db'}"


def make_storage(url: str):
    """An Optuna storage for ``url``: SQLite waits for locks (many local processes); "journal:<file>" is a journal file."""
    if url.startswith("journal:"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend
        return JournalStorage(JournalFileBackend(url[len("journal:"):]))
    if (db := sqlite_path(url)) is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 120}})
    return optuna.storages.RDBStorage(url)


def make_pruner(cfg) -> optuna.pruners.BasePruner:
    if cfg.kind == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=cfg.n_startup_trials, n_warmup_steps=cfg.n_warmup_steps)
    if cfg.kind == "hyperband":
        return optuna.pruners.HyperbandPruner()
    if cfg.kind == "threshold":
        return optuna.pruners.ThresholdPruner(upper=cfg.upper)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, name: str, space: ParamSpace):
    if space.type == "categorical":
        return trial.suggest_categorical(name, space.choices)
    if space.type == "int":
        return trial.suggest_int(name, int(space.low), int(space.high), step=int(space.step or 1), log=space.log)
    return trial.suggest_float(name, space.low, space.high, log=space.log, step=space.step or None)


@dataclass
class SweepResult:
    study: optuna.Study
    best_config: Path | None
    n_trials_here: int
    wall_seconds: float

    def summary(self) -> str:
        states = [t.state.name for t in self.study.trials]
        lines = [f"study {self.study.study_name}: {len(states)} trials in storage "
                 f"({', '.join(f'{s.lower()} {states.count(s)}' for s in sorted(set(states)))}); "
                 f"{self.n_trials_here} run by this process in {self.wall_seconds:.0f} s"]
        try:
            best = self.study.best_trial
            lines.append(f"best: trial {best.number}, value {best.value:.4g}, params {best.params}")
            lines.append(f"best config: {self.best_config}  (re-run: eip2nn pipeline run {self.best_config})")
        except ValueError:
            lines.append("no completed trial yet")
        return "\n".join(lines)


def _objective(sweep: Sweep, tracker: Tracker | NullTracker, parent_id: str | None, log, counter: list[int]):
    obj = sweep.config.objective

    def objective(trial: optuna.Trial) -> float:
        counter[0] += 1
        values = {name: suggest(trial, name, space) for name, space in sweep.config.params.items()}
        p = sweep.pipeline(values)
        with tracker.run(f"trial {trial.number}", {
                "eip2nn.stage": "trial", "optuna.study": sweep.config.study, "optuna.trial": str(trial.number),
                "eip2nn.arm": obj.arm, "eip2nn.dft_fraction": str(obj.fraction), "eip2nn.element": p.element,
                "eip2nn.backbone": p.model.backbone}, parent_id, killed_by=(optuna.TrialPruned,)) as run:
            run.log_params(values)
            log(f"trial {trial.number}: {values}")
            try:
                scores = [_score(p, trial, run.run_id, seed, first=k == 0, log=log) for k, seed in enumerate(obj.seeds)]
            except StopStage as exc:
                run.set_tags({"optuna.state": "PRUNED"})
                log(f"trial {trial.number}: {exc}")
                raise optuna.TrialPruned(str(exc)) from None
            value = statistics.mean(scores)
            run.log_metrics({obj.metric: value, **{f"{obj.metric}.seed{s}": v for s, v in zip(obj.seeds, scores)}})
            run.set_tags({"optuna.state": "COMPLETE"})
            log(f"trial {trial.number}: {obj.metric} {value:.4g}")
            return value

    def _score(p, trial, trial_id, seed, first, log) -> float:
        """The objective's metric for one seed; the first seed's validation loss feeds the pruner."""
        pretrained = ""
        if obj.arm in ("transfer", "both"):
            pretrained = str(run_or_reuse(pretrain_config(p, seed, trial_id), log)[0].model_path)

        def on_epoch(row):
            if first and math.isfinite(row["val_loss"]):
                trial.report(row["val_loss"], row["epoch"])
                if trial.should_prune():
                    raise StopStage(f"pruned at epoch {row['epoch']}")

        done, _ = run_or_reuse(cell_config(p, obj.arm, obj.fraction, seed, pretrained, trial_id), log,
                               on_epoch=on_epoch)
        return METRIC_OF[obj.metric](done.metrics["val"])

    return objective


def write_best(sweep: Sweep, study: optuna.Study) -> Path | None:
    """best.yaml: the pipeline with the best trial's knobs, fully resolved, ready for `eip2nn pipeline run`.

    It is named ``<pipeline>-best-<study>`` and writes to the default folder of that name.
    """
    try:
        best = study.best_trial
    except ValueError:
        return None
    out = sweep.config.output_dir
    out.mkdir(parents=True, exist_ok=True)
    # its own name and output folder: running it must not overwrite the swept pipeline's report
    swept = sweep.pipeline(best.params)
    study_tag = re.sub(r"[^A-Za-z0-9_.-]+", "-", study.study_name)
    p = dataclasses.replace(swept, name=f"{swept.name}-best-{study_tag}", output="")
    header = (f"# Best of Optuna study {study.study_name!r}: trial {best.number}, "
              f"{sweep.config.objective.metric} = {best.value:.6g}\n# knobs: {json.dumps(best.params)}\n"
              f"#   eip2nn pipeline run {out / 'best.yaml'}\n")
    tmp = out / f".best.{os.getpid()}.yaml"
    tmp.write_text(header + yaml.safe_dump(p.as_dict(), sort_keys=False))
    tmp.replace(out / "best.yaml")
    (out / "best.json").write_text(json.dumps({"study": study.study_name, "trial": best.number, "value": best.value,
                                               "metric": sweep.config.objective.metric, "params": best.params},
                                              indent=1))
    return out / "best.yaml"


def run_sweep(sweep: Sweep, n_trials: int | None = None, storage: str | None = None, log=print) -> SweepResult:
    """Run ``n_trials`` (default: the file's) trials of the study in this process; 0 only writes best.yaml."""
    t0 = time.perf_counter()
    cfg = sweep.config
    url = storage or cfg.storage or default_storage()
    sampler = optuna.samplers.TPESampler(seed=cfg.sampler_seed + os.getpid() % 10_000)
    with sqlite_store_lock(url):  # the first process creates the schema and the study
        study = optuna.create_study(study_name=cfg.study, storage=make_storage(url), direction="minimize",
                                    sampler=sampler, pruner=make_pruner(cfg.pruner), load_if_exists=True)
    base = sweep.pipeline({})
    tracker = make_tracker(base.experiment, base.tracking.enabled)
    with tracker.run(f"sweep {cfg.study} (pid {os.getpid()})", {
            "eip2nn.stage": "sweep", "optuna.study": cfg.study, "optuna.storage": url.split("@")[-1],
            "eip2nn.element": base.element, "eip2nn.git_commit": git_commit()}) as parent:
        parent.log_params({"sweep": {"objective": vars(cfg.objective),
                                     "params": {k: vars(v) for k, v in cfg.params.items()},
                                     "overrides": cfg.overrides, "pipeline": str(sweep.pipeline_path)}})
        if tracker.enabled:
            log(f"MLflow: experiment {base.experiment!r}, sweep run {parent.run_id}")
        log(f"Optuna study {cfg.study!r} in {url}")
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        counter = [0]
        try:
            study.optimize(_objective(sweep, tracker, parent.run_id, log, counter),
                           n_trials=cfg.n_trials if n_trials is None else n_trials,
                           catch=(ValueError, FloatingPointError, RuntimeError))
        finally:
            best = write_best(sweep, study)
            if best:
                parent.log_artifact(best, "best")
                parent.log_metrics({"best_value": study.best_value})
    return SweepResult(study, best, counter[0], time.perf_counter() - t0)
