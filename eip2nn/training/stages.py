"""Trainer stages — baseline, weak, pretrain, finetune — each one tracked MLflow run.

A stage's config is :class:`eip2nn.training.config.StageConfig`; this module runs it.

- baseline: the DFT head on the DFT labels the fraction allows.
- weak: baseline plus α × a Tukey-biweight loss on pseudo-DFT labels that a
  selector picks from the EIPs for the unlabelled structures.
- pretrain: one head per EIP on EIP labels of all training structures.
- finetune: a pretrained backbone plus a DFT head (fresh, or copied from an EIP
  head), trained on the DFT labels; optional freezing and EIP replay; with
  ``weak.enabled`` also the weak labels (the arm "both").
- delta: the DFT head learns DFT − one EIP; the model predicts EIP + network.
- snap: no network — a SNAP fitted to the same DFT labels (the reference arm).

Any network stage with ``train.committee: N`` trains N networks and keeps their mean
(:mod:`eip2nn.training.committee`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from eip2nn.labelling.provenance import package_versions
from eip2nn.locks import file_lock
from eip2nn.nn.checkpoint import NN_PACKAGES, save_checkpoint
from eip2nn.nn.model import DFT_HEAD
from eip2nn.plots import confusion_plot, learning_curve_plot, parity_plot
from eip2nn.tracking import make_tracker
from eip2nn.training.config import StageConfig
from eip2nn.training.metrics import Metrics, group_metrics_key, metrics_by_group, metrics_of, metrics_table, predict
from eip2nn.training.plan import StagePlan, data_tags_and_notes, plan_stage
from eip2nn.training.snap_stage import fit_reference
from eip2nn.training.trainer import FitResult, fit
from eip2nn.weak.arm import WeakData


@dataclass
class StageResult:
    stage: str
    output_dir: Path
    model_path: Path
    heads: list[str]
    metrics: dict[str, Metrics]  # "train"/"val"/"test" for the DFT head; "val:<eip>" after pretraining
    fit: FitResult
    run_id: str | None = None
    eips: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    weak: WeakData | None = None  # selector, its report and the pseudo-labels (weak and both arms)

    def table(self) -> str:
        return metrics_table("split", self.metrics)


RESULT_FILE = "result.json"  # written last: its presence marks a finished stage


def stage_dir(cfg: StageConfig) -> Path:
    """Where ``cfg`` writes: ``<output>/<stage>-<content hash>``."""
    return Path(cfg.output) / f"{cfg.stage}-{cfg.content_hash()}"


def stage_lock(cfg: StageConfig):
    """Exclusive lock on the stage's folder, held while it runs (other processes wait, then reuse)."""
    folder = stage_dir(cfg)
    return file_lock(folder.parent / f"{folder.name}.lock")


@dataclass
class FinishedStage:
    """What a finished stage left in its folder (for reuse without retraining)."""

    stage: str
    output_dir: Path
    model_path: Path
    run_id: str | None
    tags: dict[str, str]
    metrics: dict[str, Metrics]
    final_metrics: dict[str, float]  # as logged to MLflow at the end of the run
    eips: list[str]
    notes: list[str]
    seconds: float


def finished_stage(cfg: StageConfig) -> FinishedStage | None:
    """The finished run of exactly this config, or None (never run, or interrupted)."""
    out = stage_dir(cfg)
    path = out / RESULT_FILE
    if not path.is_file():
        return None
    d = json.loads(path.read_text())
    metrics = {k: Metrics(**v) for k, v in d["metrics"].items()}
    return FinishedStage(d["stage"], out, out / d.get("model_file", "model.pt"), d.get("run_id"), d["tags"], metrics,
                         d["final_metrics"], d["eips"], d["notes"], d["seconds"])


class StopStage(Exception):
    """Raised by an ``on_epoch`` callback to stop a stage early (e.g. an Optuna pruner); the run ends KILLED."""


def run_stage(cfg: StageConfig, log=print, on_epoch=None) -> StageResult:
    """Run one stage end to end and return its metrics; resumes an interrupted run of the same config.

    Planned (:func:`eip2nn.training.plan.plan_stage`), fitted, then recorded, inside one
    tracked run that ends FINISHED, KILLED (Ctrl-C, :class:`StopStage`) or FAILED by itself.
    ``on_epoch(row)`` is called after every epoch with the trainer's history row
    (epoch, train_loss, val_loss, ...); it may raise :class:`StopStage`.
    """
    torch.manual_seed(cfg.train.seed)
    out = stage_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.as_dict(), sort_keys=False))
    if cfg.stage == "snap":
        return _run_snap(cfg, out, log)
    if cfg.train.committee > 1:
        from eip2nn.training.committee import run_committee  # it runs its members through run_stage

        return run_committee(cfg, out, log, on_epoch)
    plan = plan_stage(cfg)
    tracker = make_tracker(cfg.tracking.experiment, cfg.tracking.enabled)
    name = cfg.tracking.run_name or f"{cfg.arm}-{cfg.data.name.replace('/', '-')}-f{cfg.data.dft_fraction}-s{cfg.train.seed}"
    with tracker.run(name, plan.tags, cfg.tracking.parent_run_id or None, killed_by=(StopStage,)) as run:
        _log_plan(plan, run, out, log)
        result = _fit(plan, run, out, log, on_epoch)
        return _record(plan, run, out, result)


def _log_plan(plan: StagePlan, run, out: Path, log) -> None:
    """The run's parameters and provenance tags; the plan in the log."""
    run.log_params(plan.cfg.as_dict())
    run.set_tags({"eip2nn.data." + k: v for k, v in plan.split.hashes.items()})
    run.set_tags({f"eip2nn.version.{k}": v for k, v in package_versions(NN_PACKAGES + ("mlflow",)).items()})
    if plan.weak:
        run.log_params({"selector": plan.weak.labeller.selector.get_params()})
    log(f"{plan.cfg.arm}: {len(plan.train)} training samples, {len(plan.val)} validation, {len(plan.test)} test; "
        f"targets {[t.target for t in plan.terms]}; output {out}")
    for note in plan.notes:
        log("  " + note)
    if plan.weak:
        log("\n".join("  " + line for line in plan.weak.report.table().splitlines()))


def _fit(plan: StagePlan, run, out: Path, log, on_epoch) -> FitResult:
    """Train the plan's model (resuming its checkpoint), logging every epoch to the run and every tenth to ``log``."""
    cfg = plan.cfg
    epochs = cfg.train.epochs_for(len(plan.train))

    def epoch_done(row):
        if on_epoch:
            on_epoch(row)
        run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
        if row["epoch"] % 10 == 0 or row["epoch"] == epochs - 1:
            log(f"  epoch {row['epoch']:4d}/{epochs}  train {row['train_loss']:.3e}  "
                f"val {row['val_loss']:.3e}  lr {row['lr']:.1e}  {row['structures_per_second']:.0f} structures/s")

    result = fit(plan.model, plan.train, plan.val, plan.terms, cfg.train, out / "checkpoint.pt", cfg.result_dict(),
                 epoch_done)
    if result.resumed_from:
        log(f"  resumed from epoch {result.resumed_from}")
    return result


def stage_metrics(plan: StagePlan) -> tuple[dict[str, Metrics], dict]:
    """(metrics, parities): the DFT head on train/val/test and on each test group, or each EIP head on val."""
    metrics, parities = {}, {}
    if not plan.scores_dft:
        return {f"val:{e}": metrics_of(predict(plan.model, plan.val, e)) for e in plan.eips}, parities
    for name, samples in (("train", plan.train), ("val", plan.val), ("test", plan.test)):
        parities[name] = predict(plan.model, samples, DFT_HEAD)
        metrics[name] = metrics_of(parities[name])
    by_group = metrics_by_group(plan.model, plan.test, DFT_HEAD)
    if len(by_group) > 1:
        metrics.update({group_metrics_key(g): m for g, m in by_group.items()})
    return metrics, parities


def _record(plan: StagePlan, run, out: Path, result: FitResult) -> StageResult:
    """Metrics, model, plots and outputs into the stage folder and the run; result.json last."""
    cfg, weak = plan.cfg, plan.weak
    metrics, parities = stage_metrics(plan)
    model_path = save_checkpoint(out / "model.pt", plan.model, cfg.as_dict(), {
        "mlflow_run_id": run.run_id, "stage": cfg.stage, "eips": plan.eips,
        "best_epoch": result.best_epoch, "history": result.history})
    parity_path = parity_plot(parities, out / "parity.png", f"{cfg.stage} {cfg.data.name}") if parities else None
    curve_path = learning_curve_plot(result.history, out / "learning_curve.png", cfg.stage) if result.history else None
    (out / "metrics.json").write_text(json.dumps({k: dataclasses.asdict(v) for k, v in metrics.items()}, indent=1))
    weak_files = _write_weak_outputs(weak, out, cfg.arm) if weak else []
    final = flat_metrics(metrics) | {"best_epoch": result.best_epoch, "train_seconds": result.seconds}
    if weak:
        final.update(weak.report.as_metrics())
        final.update({"n_weak_labels": len(weak.pseudo.labelled), "n_weak_excluded": len(weak.pseudo.excluded)})
    run.log_metrics(final, step=len(result.history))
    run.log_artifact(model_path, "model")
    for p in (parity_path, curve_path, out / "config.yaml", out / "metrics.json", *weak_files):
        if p is not None:
            run.log_artifact(p, "plots" if p.suffix == ".png" else "outputs")
    write_result(out, cfg.stage, run.run_id, plan.tags, metrics, final, plan.eips, plan.notes, result.seconds)
    return StageResult(cfg.stage, out, model_path, plan.model.head_names, metrics, result, run.run_id, plan.eips,
                       plan.notes, weak)


def flat_metrics(metrics: dict[str, Metrics]) -> dict[str, float]:
    """{"<split>_energy_mae_meV_atom": ..., ...}: a stage's metrics as MLflow metric names."""
    out = {}
    for name, m in metrics.items():
        out.update(m.as_dict(name.replace(":", "_")))
    return out


def write_result(out: Path, stage: str, run_id, tags, metrics, final, eips, notes, seconds,
                  model_file: str = "model.pt") -> None:
    tmp = out / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps({"stage": stage, "run_id": run_id, "tags": tags,
                               "metrics": {k: dataclasses.asdict(v) for k, v in metrics.items()},
                               "final_metrics": final, "eips": eips, "notes": notes, "seconds": seconds,
                               "model_file": model_file}, indent=1))
    tmp.replace(out / RESULT_FILE)


def _write_weak_outputs(weak: WeakData, out: Path, arm: str) -> list[Path]:
    """Selector report (text), confusion matrix (PNG), EIP alignments and excluded structures (JSON)."""
    report = out / "selector_report.txt"
    report.write_text(weak.report.table() + "\n")
    plot = confusion_plot(weak.report.confusion, weak.report.classes, out / "selector_confusion.png",
                          f"{arm}: selector, held-out labelled structures")
    details = out / "weak_labels.json"
    details.write_text(json.dumps({"eips": weak.eips, "alignments": weak.labeller.alignment_rows(),
                                   "sources": weak.pseudo.sources,
                                   "excluded": [{"structure": n, "reason": r} for n, r in weak.pseudo.excluded]},
                                  indent=1))
    return [report, plot, details]


SNAP_MODEL_FILE = "snap_model.json"


def _run_snap(cfg: StageConfig, out: Path, log) -> StageResult:
    """The snap stage: fit, score and record a SNAP on the stage's DFT labels, as one tracked run."""
    tracker = make_tracker(cfg.tracking.experiment, cfg.tracking.enabled)
    name = cfg.tracking.run_name or f"snap-{cfg.data.name.replace('/', '-')}-f{cfg.data.dft_fraction}"
    ref = fit_reference(cfg)
    tags, notes = data_tags_and_notes(cfg, ref.split)
    tags.update({"eip2nn.backbone": "snap", "eip2nn.eips": "-", "eip2nn.n_dft_labels": str(ref.n_dft_labels),
                 "eip2nn.snap_quadratic": str(ref.fit.choice["quadratic"]).lower()})
    notes += ref.fit.notes
    with tracker.run(name, tags, cfg.tracking.parent_run_id or None) as run:
        run.log_params(cfg.result_dict())
        run.set_tags({"eip2nn.data." + k: v for k, v in ref.split.hashes.items()})
        log(f"snap: {ref.n_dft_labels} DFT-labelled structures; chose {ref.fit.choice} in {ref.fit.seconds:.1f} s")
        for note in notes:  # as a network stage does: left-out frames, the test set, the fit's own notes
            log("  " + note)
        model_path = ref.fit.model.save(out / SNAP_MODEL_FILE)
        lammps_files = ref.fit.model.write_lammps(out / "snap")
        (out / "snap_candidates.json").write_text(json.dumps(ref.fit.table, indent=1))
        (out / "metrics.json").write_text(json.dumps({k: dataclasses.asdict(v) for k, v in ref.metrics.items()}, indent=1))
        parity_path = parity_plot(ref.parities, out / "parity.png", f"snap {cfg.data.name}")
        final = flat_metrics(ref.metrics) | {"train_seconds": ref.fit.seconds, "ridge_alpha": ref.fit.choice["alpha"],
                                             "n_coefficients": ref.fit.choice["n_coefficients"]}
        run.log_metrics(final)
        for p in (model_path, *lammps_files):
            run.log_artifact(p, "model")
        for p in (parity_path, out / "config.yaml", out / "metrics.json", out / "snap_candidates.json"):
            run.log_artifact(p, "plots" if p.suffix == ".png" else "outputs")
        write_result(out, cfg.stage, run.run_id, tags, ref.metrics, final, [], notes, ref.fit.seconds, SNAP_MODEL_FILE)
    return StageResult(cfg.stage, out, model_path, [], ref.metrics, FitResult(seconds=ref.fit.seconds), run.run_id,
                       [], notes)
