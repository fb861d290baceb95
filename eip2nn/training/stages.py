"""Trainer stages — baseline, weak, pretrain, finetune — each one tracked MLflow run.

- baseline: the DFT head on the DFT labels the fraction allows.
- weak: baseline plus α × a Tukey-biweight loss on pseudo-DFT labels that a
  selector picks from the EIPs for the unlabelled structures.
- pretrain: one head per EIP on EIP labels of all training structures.
- finetune: a pretrained backbone plus a DFT head (fresh, or copied from an EIP
  head), trained on the DFT labels; optional freezing and EIP replay; with
  ``weak.enabled`` also the weak labels (the arm "both").
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml

from eip2nn.alignment import aligned_energy_errors
from eip2nn.config import from_dict
from eip2nn.data.registry import sha256_of
from eip2nn.labelling.provenance import package_versions
from eip2nn.nn.checkpoint import NN_PACKAGES, model_from_record, read_checkpoint, save_checkpoint
from eip2nn.nn.graph import collate
from eip2nn.nn.model import DFT_HEAD, EnergyModel, ModelConfig
from eip2nn.nn.offsets import fit_head_statistics
from eip2nn.plots import confusion_plot, learning_curve_plot, parity_plot
from eip2nn.potentials.db import PotentialsDB
from eip2nn.tracking import Tracker, download_checkpoint, git_commit
from eip2nn.training.metrics import Metrics, metrics_by_group, metrics_of, metrics_table, predict
from eip2nn.training.protocol import DataConfig, Split, candidate_species, make_split
from eip2nn.training.loss import LossTerm
from eip2nn.training.samples import WEAK_TARGET, Sample, head_arrays, make_samples
from eip2nn.training.trainer import FitResult, TrainConfig, fit
from eip2nn.training.transfer import EIP_CHOICE_RULE, freeze, label_with, resolve_eips, select_eips
from eip2nn.weak.arm import WeakData, weak_data
from eip2nn.weak.labeller import WeakConfig

STAGES = ("baseline", "weak", "pretrain", "finetune")


@dataclass
class FinetuneConfig:
    pretrained: str = ""  # checkpoint path, or "runs:/<mlflow run id>"
    init_head: str = "fresh"  # "fresh" | "best" (EIP head closest to DFT) | an EIP head's id
    freeze: str = "none"  # "none" | "backbone" | "embedding" | "interactions:N" | "layers:N"
    replay_fraction: float = 0.0  # share of unlabelled training structures replayed with EIP labels
    replay_weight: float = 0.1  # loss weight of each replayed EIP head


@dataclass
class TrackingConfig:
    enabled: bool = True
    experiment: str = "eip2nn"
    run_name: str = ""  # default: "<stage>-<dataset>-f<fraction>-s<seed>"
    parent_run_id: str = ""


@dataclass
class StageConfig:
    stage: str = "baseline"  # "baseline" | "pretrain" | "finetune"
    output: str = "outputs/runs"  # each run writes to <output>/<stage>-<config hash>/
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage: {self.stage!r} is not one of {STAGES}")
        if self.stage == "finetune" and not self.finetune.pretrained:
            raise ValueError("finetune.pretrained is required for stage finetune")
        if self.weak.enabled and self.stage not in ("weak", "finetune"):
            raise ValueError(f"weak.enabled applies to stages weak and finetune, not {self.stage}; "
                             "use stage: weak for the weak arm")

    @property
    def arm(self) -> str:
        """baseline | weak | pretrain | finetune | both (finetune with weak labels)."""
        return "both" if self.stage == "finetune" and self.weak.enabled else self.stage

    @property
    def uses_weak_labels(self) -> bool:
        return self.arm in ("weak", "both")

    @property
    def chooses_eips(self) -> bool:
        """Whether this stage picks its EIPs itself (pretraining heads or weak-selector candidates)."""
        return (self.stage == "pretrain" and not self.data.eips) or (self.uses_weak_labels and not self.weak.eips)

    @classmethod
    def from_dict(cls, data: dict) -> "StageConfig":
        return from_dict(cls, data)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def result_dict(self) -> dict:
        """Everything that shapes the result: the config without its tracking section.

        Data and training fields added later (``LATE_FIELDS``) are left out while at their
        defaults, so stages finished before they existed are still found and reused.
        """
        d = self.as_dict()
        d.pop("tracking")
        for section, cls in (("data", DataConfig), ("train", TrainConfig)):
            defaults = dataclasses.asdict(cls())
            for name in cls.LATE_FIELDS:
                if d[section][name] == defaults[name]:
                    del d[section][name]
        return d

    def content_hash(self) -> str:
        """Hash of :meth:`result_dict`, the contents of the user's data files and extra structure files included
        (an edited file is new data: its stages run again)."""
        d = self.result_dict()
        d["extra_structures_sha256"] = [_file_sha256(p) for p in self.weak.extra_structures]
        if self.data.is_files:
            d["data_files_sha256"] = [_file_sha256(p) for p in (self.data.train, self.data.test) if p]
        if self.chooses_eips:  # a stage whose EIPs were chosen under another rule is not reused
            d["eip_choice_rule"] = EIP_CHOICE_RULE
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _file_sha256(path: str) -> str | None:
    """sha256 of a file's bytes (memoised per size and mtime), None when it does not exist."""
    return sha256_of(Path(path)) if Path(path).is_file() else None


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


def _load_pretrained(ref: str) -> tuple[dict, Path]:
    path = download_checkpoint(ref[len("runs:/"):]) if ref.startswith("runs:/") else Path(ref)
    return read_checkpoint(path), path


def _best_eip_head(model: EnergyModel, eips: list[str], labelled: list[Sample]) -> str:
    """The EIP head whose predictions, offset-aligned, are closest to DFT on ``labelled``."""
    counts = np.stack([s.counts for s in labelled])
    ref = np.array([s.targets[DFT_HEAD].energy for s in labelled])
    model.eval()
    scores = {}
    for h in eips:
        pred = np.concatenate([
            model(collate([s.graph for s in labelled[k:k + 16]]), heads=[h], forces=False)[h].energy.detach().numpy()
            for k in range(0, len(labelled), 16)])
        scores[h] = float(np.abs(aligned_energy_errors(counts, ref, pred)[0]).mean())
    return min(scores, key=scores.get)


GROUP_PREFIX = "test/"  # metrics of one group of the test set: "test/<group>"
RESULT_FILE = "result.json"  # written last: its presence marks a finished stage


def stage_dir(cfg: StageConfig) -> Path:
    """Where ``cfg`` writes: ``<output>/<stage>-<content hash>``."""
    return Path(cfg.output) / f"{cfg.stage}-{cfg.content_hash()}"


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
    return FinishedStage(d["stage"], out, out / "model.pt", d.get("run_id"), d["tags"], metrics,
                         d["final_metrics"], d["eips"], d["notes"], d["seconds"])


class StopStage(Exception):
    """Raised by an ``on_epoch`` callback to stop a stage early (e.g. an Optuna pruner); the run ends KILLED."""


def run_stage(cfg: StageConfig, log=print, on_epoch=None) -> StageResult:
    """Run one stage end to end and return its metrics; resumes an interrupted run of the same config.

    ``on_epoch(row)`` is called after every epoch with the trainer's history row
    (epoch, train_loss, val_loss, ...); it may raise :class:`StopStage`.
    """
    torch.manual_seed(cfg.train.seed)
    dtype = getattr(torch, cfg.train.dtype)
    split = make_split(cfg.data, candidate_species() if cfg.stage != "baseline" else None)
    out = stage_dir(cfg)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(cfg.as_dict(), sort_keys=False))
    workers = cfg.data.workers or None
    notes: list[str] = []
    tags = {"eip2nn.stage": cfg.stage, "eip2nn.arm": cfg.arm, "eip2nn.dataset": cfg.data.name,
            "eip2nn.dft_fraction": str(cfg.data.dft_fraction), "eip2nn.seed": str(cfg.train.seed),
            "eip2nn.backbone": cfg.model.backbone, "eip2nn.element": ",".join(split.species),
            "eip2nn.git_commit": git_commit()}
    if split.omitted:
        notes.append(f"{len(split.omitted)} bad frame(s) left out (data.on_bad: skip): "
                     + "; ".join(str(b) for b in split.omitted[:20]) + (" ..." if len(split.omitted) > 20 else ""))
        tags["eip2nn.n_frames_omitted"] = str(len(split.omitted))
    notes.append(f"test set: {split.test_note}")
    eips: list[str] = []
    refit_scale = {DFT_HEAD: True}
    if cfg.stage in ("baseline", "weak"):
        model = EnergyModel(cfg.model, split.species, [DFT_HEAD]).to(dtype)
        train_atoms, val_atoms = Split.labelled(split.train), Split.labelled(split.val)
        head_weights = {DFT_HEAD: 1.0}
    elif cfg.stage == "pretrain":
        specs, chosen_notes = select_eips(PotentialsDB(), cfg.data.eips, cfg.data.n_eips, Split.labelled(split.train),
                                          split.species, split.source_tag, cfg.data.labels, workers,
                                          compare_on=split.train)
        notes += chosen_notes
        eips = [s.id for s in specs]
        train_atoms = label_with(split.train, specs, cfg.data.labels, workers)
        val_atoms = label_with(split.val, specs, cfg.data.labels, workers)
        model = EnergyModel(cfg.model, split.species, eips).to(dtype)
        head_weights = {e: 1.0 for e in eips}
        refit_scale = {e: True for e in eips}
    else:
        record, path = _load_pretrained(cfg.finetune.pretrained)
        model = model_from_record(record["model"]).to(dtype)
        if record["model"]["species"] != split.species:
            raise ValueError(f"pretrained model {path} knows {record['model']['species']}, data has {split.species}")
        pre_run = (record.get("training") or {}).get("mlflow_run_id")
        if pre_run:
            tags["eip2nn.pretrain_run_id"] = pre_run
        tags["eip2nn.pretrained"] = str(path)
        eips = [h for h in model.head_names if h != DFT_HEAD]
        tags["eip2nn.backbone"] = model.config.backbone
        cfg = dataclasses.replace(cfg, model=model.config)  # the architecture is the pretrained one
        train_atoms, val_atoms = Split.labelled(split.train), Split.labelled(split.val)
        head_weights = {DFT_HEAD: 1.0}
        if cfg.finetune.replay_fraction > 0:
            pool = Split.unlabelled(split.train) or split.train
            n = max(1, round(cfg.finetune.replay_fraction * len(pool)))
            pick = np.random.default_rng(cfg.train.seed).choice(len(pool), size=min(n, len(pool)), replace=False)
            specs = resolve_eips(PotentialsDB(), eips, split.species, split.source_tag)
            replay = label_with([pool[i] for i in sorted(pick)], specs, cfg.data.labels, workers)
            train_atoms = train_atoms + replay
            head_weights.update({e: cfg.finetune.replay_weight for e in eips})
            notes.append(f"replaying {len(replay)} structures with labels of {eips}")
    terms = [LossTerm(h, h, w) for h, w in head_weights.items()]
    weak = None
    if cfg.uses_weak_labels:
        weak = weak_data(cfg.weak, split, cfg.data.labels, workers, cfg.train.seed,
                         f"{cfg.data.name} DFT (fraction {cfg.data.dft_fraction}, split seed {cfg.data.split_seed})")
        c_e, c_f = weak.labeller.tukey_scales()
        terms.append(LossTerm(WEAK_TARGET, DFT_HEAD, cfg.weak.alpha, c_e, c_f, cfg.weak.forces))
        train_atoms = train_atoms + weak.pseudo.labelled
        notes += weak.notes
        notes.append(f"weak loss: alpha {cfg.weak.alpha}, Tukey c {c_e * 1000:.1f} meV/atom"
                     + (f", forces with c {c_f:.3f} eV/Å" if cfg.weak.forces else ", energies only"))
        tags["eip2nn.weak_eips"] = ",".join(weak.eips)
        tags["eip2nn.n_weak_labels"] = str(len(weak.pseudo.labelled))
    targets = [t.target for t in terms]
    train = make_samples(model, train_atoms, targets)
    val = make_samples(model, val_atoms, [t for t in targets if t != WEAK_TARGET])
    test = make_samples(model, split.test, [DFT_HEAD])
    if not any(DFT_HEAD in s.targets for s in train) and DFT_HEAD in head_weights:
        raise ValueError(f"no DFT-labelled training structure at dft_fraction={cfg.data.dft_fraction}")
    if cfg.stage != "finetune" and model.backbone.needs_descriptor:
        model.backbone.fit_standardisation([s.graph for s in train])
    if cfg.stage == "finetune":
        init = cfg.finetune.init_head
        labelled = [s for s in train if DFT_HEAD in s.targets]
        source = None if init == "fresh" else (_best_eip_head(model, eips, labelled) if init == "best" else init)
        if source is not None and source not in eips:
            raise ValueError(f"finetune.init_head: {source!r} is not a head of the pretrained model ({eips})")
        model.add_head(DFT_HEAD, copy_from=source)
        refit_scale = {DFT_HEAD: source is None}
        tags["eip2nn.init_head"] = source or "fresh"
        frozen = freeze(model, cfg.finetune.freeze)
        notes.append(f"DFT head initialised from {source or 'scratch'}; {len(frozen)} parameter tensors frozen")
    for h, fit_scale in refit_scale.items():
        stats = fit_head_statistics(model.head(h), *head_arrays(train, h), fit_scale=fit_scale)
        notes.append(f"head {h}: offsets {np.round(stats['offsets_eV_per_atom'], 4).tolist()} eV/atom, "
                     f"scale {stats['scale_eV']:.3f} eV")
    tags["eip2nn.eips"] = ",".join(eips) or "-"
    tags["eip2nn.n_dft_labels"] = str(sum(DFT_HEAD in s.targets for s in train + val))

    run = None
    if cfg.tracking.enabled:
        name = cfg.tracking.run_name or f"{cfg.arm}-{cfg.data.name.replace('/', '-')}-f{cfg.data.dft_fraction}-s{cfg.train.seed}"
        run = Tracker(cfg.tracking.experiment).start(name, tags, cfg.tracking.parent_run_id or None)
        run.log_params(cfg.as_dict())
        run.set_tags({"eip2nn.data." + k: v for k, v in split.hashes.items()})
        run.set_tags({f"eip2nn.version.{k}": v for k, v in package_versions(NN_PACKAGES + ("mlflow",)).items()})
        if weak:
            run.log_params({"selector": weak.labeller.selector.get_params()})
    log(f"{cfg.arm}: {len(train)} training samples, {len(val)} validation, {len(test)} test; "
        f"targets {targets}; output {out}")
    for note in notes:
        log("  " + note)
    if weak:
        log("\n".join("  " + line for line in weak.report.table().splitlines()))
    status = "FAILED"
    try:
        def epoch_done(row):
            if on_epoch:
                on_epoch(row)
            if run:
                run.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=row["epoch"])
            if row["epoch"] % 10 == 0 or row["epoch"] == cfg.train.epochs - 1:
                log(f"  epoch {row['epoch']:4d}/{cfg.train.epochs}  train {row['train_loss']:.3e}  "
                    f"val {row['val_loss']:.3e}  lr {row['lr']:.1e}  {row['structures_per_second']:.0f} structures/s")

        result = fit(model, train, val, terms, cfg.train, out / "checkpoint.pt", cfg.result_dict(), epoch_done)
        if result.resumed_from:
            log(f"  resumed from epoch {result.resumed_from}")
        metrics, parities = {}, {}
        if DFT_HEAD in head_weights:
            for name, samples in (("train", train), ("val", val), ("test", test)):
                parities[name] = predict(model, samples, DFT_HEAD)
                metrics[name] = metrics_of(parities[name])
            by_group = metrics_by_group(model, test, DFT_HEAD)
            if len(by_group) > 1:
                metrics.update({GROUP_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", g): m for g, m in by_group.items()})
        else:
            for e in eips:
                metrics[f"val:{e}"] = metrics_of(predict(model, val, e))
        model_path = save_checkpoint(out / "model.pt", model, cfg.as_dict(), {
            "mlflow_run_id": run.run_id if run else None, "stage": cfg.stage, "eips": eips,
            "best_epoch": result.best_epoch, "history": result.history})
        parity_path = parity_plot(parities, out / "parity.png", f"{cfg.stage} {cfg.data.name}") if parities else None
        curve_path = learning_curve_plot(result.history, out / "learning_curve.png", cfg.stage) if result.history else None
        (out / "metrics.json").write_text(json.dumps({k: dataclasses.asdict(v) for k, v in metrics.items()}, indent=1))
        weak_files = _write_weak_outputs(weak, out, cfg.arm) if weak else []
        final = {}
        for name, m in metrics.items():
            final.update(m.as_dict(name.replace(":", "_")))
        final.update({"best_epoch": result.best_epoch, "train_seconds": result.seconds})
        if weak:
            final.update(weak.report.as_metrics())
            final.update({"n_weak_labels": len(weak.pseudo.labelled), "n_weak_excluded": len(weak.pseudo.excluded)})
        if run:
            run.log_metrics(final, step=len(result.history))
            run.log_artifact(model_path, "model")
            for p in (parity_path, curve_path, out / "config.yaml", out / "metrics.json", *weak_files):
                if p is not None:
                    run.log_artifact(p, "plots" if p.suffix == ".png" else "outputs")
        _write_result(out, cfg.stage, run.run_id if run else None, tags, metrics, final, eips, notes, result.seconds)
        status = "FINISHED"
    except (KeyboardInterrupt, StopStage):
        status = "KILLED"
        raise
    finally:
        if run:
            run.end(status)
    return StageResult(cfg.stage, out, model_path, model.head_names, metrics, result,
                       run.run_id if run else None, eips, notes, weak)


def _write_result(out: Path, stage: str, run_id, tags, metrics, final, eips, notes, seconds) -> None:
    tmp = out / (RESULT_FILE + ".tmp")
    tmp.write_text(json.dumps({"stage": stage, "run_id": run_id, "tags": tags,
                               "metrics": {k: dataclasses.asdict(v) for k, v in metrics.items()},
                               "final_metrics": final, "eips": eips, "notes": notes, "seconds": seconds}, indent=1))
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


def load_stage_config(path: str | Path, overrides: list[str] | None = None) -> StageConfig:
    from eip2nn.config import apply_overrides, load_yaml

    return StageConfig.from_dict(apply_overrides(load_yaml(path), overrides or []))

