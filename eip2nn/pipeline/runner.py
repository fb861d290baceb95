"""Run a pipeline: label → pretrain (per seed) → arms × fractions × seeds → report.

Every stage goes through :func:`run_or_reuse`: a stage whose config (hence its
output folder) is unchanged and finished is reused, not retrained; an
interrupted one resumes from its checkpoint. A file lock per stage folder lets
several processes (pipelines, sweep workers) share stages safely. A cell that
fails is recorded with its error and the pipeline goes on; the report says so.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from eip2nn.data.protocol import Split, make_split
from eip2nn.labelling.choice import eligible_eips
from eip2nn.labelling.engine import label
from eip2nn.labelling.hashing import structure_hashes
from eip2nn.labelling.store import LabelStore
from eip2nn.nn.blend import is_blend
from eip2nn.pipeline.auto import choice_counts, choose_for_fraction, validation_score
from eip2nn.pipeline.blend import blend_for_fraction
from eip2nn.pipeline.config import PipelineConfig, arm_name
from eip2nn.pipeline.domain import DomainCheck, domain_checks, domain_markdown
from eip2nn.pipeline.report import (
    CellResult,
    Row,
    against_reference,
    backbone_gains,
    group_markdown_table,
    learning_curve,
    markdown_table,
    metric_name,
    summarise,
    text_table,
    write_cells_csv,
    write_csv,
)
from eip2nn.pipeline.rigidity import CellRigidity, cell_rigidity, rigidity_markdown, rigidity_metrics
from eip2nn.potentials.db import PotentialsDB
from eip2nn.tracking import NullTracker, Tracker, git_commit, make_tracker
from eip2nn.training.config import StageConfig, TrackingConfig
from eip2nn.training.metrics import GROUP_PREFIX
from eip2nn.training.stages import FinishedStage, finished_stage, run_stage, stage_dir, stage_lock

STAGE_OF_ARM = {"baseline": "baseline", "weak": "weak", "transfer": "finetune", "both": "finetune", "delta": "delta",
                "snap": "snap"}  # auto has no stage: it picks one of the cell's arms (pipeline.auto)


@dataclass
class PipelineResult:
    config: PipelineConfig
    output_dir: Path
    cells: list[CellResult]
    rows: list[Row]
    files: dict[str, Path]  # table_md, table_csv, cells_csv, cells_json, learning_curve
    run_id: str | None = None
    notes: list[str] = field(default_factory=list)
    wall_seconds: float = 0.0

    @property
    def failed(self) -> list[CellResult]:
        return [c for c in self.cells if not c.ok]


# -- stage configs -------------------------------------------------------------------
def _tracking(p: PipelineConfig, parent: str | None, name: str) -> TrackingConfig:
    if p.study.backbones:  # one pipeline, several backbones: say which in the run's name
        name += f" [{p.model.backbone}]"
    return TrackingConfig(enabled=p.tracking.enabled, experiment=p.experiment, run_name=name,
                          parent_run_id=parent or "")


def pretrain_config(p: PipelineConfig, seed: int, parent: str | None = None) -> StageConfig:
    """The seed's pretraining stage: EIP heads on EIP labels; EIPs chosen with the smallest fraction's DFT labels."""
    data = dataclasses.replace(p.data, dft_fraction=min(p.study.fractions), split_seed=seed,
                               eips=list(p.pretrain.eips), n_eips=p.pretrain.n_eips)
    return StageConfig(stage="pretrain", output=str(p.output_dir / "stages"), data=data, model=p.model,
                       train=dataclasses.replace(p.pretrain.train, seed=seed, local_energy_weight=p.pretrain.w_local),
                       tracking=_tracking(p, parent, f"pretrain seed={seed}"))


def cell_config(p: PipelineConfig, arm: str, fraction: float, seed: int, pretrained: str = "",
                parent: str | None = None) -> StageConfig:
    """The stage config of one arm (or variant) at one DFT fraction and seed."""
    base = p.base_arm(arm)
    stage = STAGE_OF_ARM[base]
    data = dataclasses.replace(p.data, dft_fraction=fraction, split_seed=seed)
    finetune = dataclasses.replace(p.finetune, pretrained=pretrained) if stage == "finetune" else p.finetune
    weak = dataclasses.replace(p.weak, enabled=base == "both")
    # the SNAP reference has no network, so no prior inside one and no committee of them
    model = dataclasses.replace(p.model, snap_prior="none") if stage == "snap" else p.model
    train = dataclasses.replace(p.train, seed=seed, committee=1 if stage == "snap" else p.train.committee)
    cfg = StageConfig(stage=stage, output=str(p.output_dir / "stages"), data=data, model=model, train=train,
                      finetune=finetune, weak=weak, delta=p.delta, snap=p.snap,
                      tracking=_tracking(p, parent, f"{arm} f={fraction:g} seed={seed}"))
    if arm in p.variants:
        cfg = StageConfig.from_dict(p.variants[arm].applied_to(cfg.as_dict()))
    return cfg


# -- running and reusing stages -----------------------------------------------------
def log_reused(cfg: StageConfig, done: FinishedStage) -> str | None:
    """A child run standing for a reused stage: its tags and final metrics, and where they came from."""
    tags = dict(done.tags)
    tags.update({"eip2nn.arm": cfg.arm,  # today's name, also for stages finished under an older one
                 "eip2nn.reused": "true", "eip2nn.reused_from_run": done.run_id or "-",
                 "eip2nn.stage_dir": str(done.output_dir)})
    tracker = make_tracker(cfg.tracking.experiment, cfg.tracking.enabled)
    with tracker.run(cfg.tracking.run_name + " (reused)", tags, cfg.tracking.parent_run_id or None) as run:
        run.log_params(cfg.as_dict())
        run.log_metrics(done.final_metrics)
        for name in ("metrics.json", "config.yaml"):
            if (done.output_dir / name).is_file():
                run.log_artifact(done.output_dir / name, "outputs")
    return run.run_id


def run_or_reuse(cfg: StageConfig, log=print, on_epoch=None) -> tuple[FinishedStage, bool]:
    """(the finished stage, whether it was reused). Runs the stage unless this exact config already finished."""
    with stage_lock(cfg):
        done = finished_stage(cfg)
        if done is not None:
            run_id = log_reused(cfg, done)
            log(f"  reusing {done.output_dir} (finished run {done.run_id}); logged as {run_id}")
            return done, True
        run_stage(cfg, log=lambda s: log("  " + s), on_epoch=on_epoch)
        done = finished_stage(cfg)
        if done is None:
            raise RuntimeError(f"stage {stage_dir(cfg)} ended without writing its result")
        return done, False


class NotFinishedYet(LookupError):
    """A stage the report of the stages so far needs has not finished (``eip2nn pipeline report``)."""


def finished_or_not_yet(cfg: StageConfig, log=print, on_epoch=None) -> tuple[FinishedStage, bool]:
    """(the finished stage, True) without training; :class:`NotFinishedYet` when it has not finished."""
    done = finished_stage(cfg)
    if done is None:
        raise NotFinishedYet(f"{stage_dir(cfg)} has not finished")
    return done, True


def cell_result(arm: str, fraction: float, seed: int, done: FinishedStage, reused: bool,
                weights: tuple[float, float] = (1.0, 0.1)) -> CellResult:
    """One cell's numbers; ``weights`` (energy, force) make its validation score (pipeline.auto)."""
    test, val = done.metrics.get("test"), done.metrics.get("val")
    groups = {name[len(GROUP_PREFIX):]: (m.energy_mae, m.force_mae) for name, m in done.metrics.items()
              if name.startswith(GROUP_PREFIX)}
    return CellResult(arm, fraction, seed, "reused" if reused else "finished",
                      int(done.tags.get("eip2nn.n_dft_labels", 0)),
                      test.energy_mae if test else math.nan, test.force_mae if test else math.nan,
                      val.energy_mae if val else math.nan, done.seconds, done.run_id,
                      test_stress_mae=getattr(test, "stress_mae", math.nan) if test else math.nan, groups=groups,
                      val_force_mae=val.force_mae if val else math.nan,
                      val_score=validation_score(val.energy_rmse, val.force_rmse, *weights) if val else math.nan,
                      model_path=str(done.model_path))


# -- the stages of a pipeline ---------------------------------------------------------
def check_data(p: PipelineConfig, log=print) -> Split:
    """Read and check the pipeline's data once, before any training; DataError names every bad frame."""
    split = make_split(dataclasses.replace(p.data, dft_fraction=1.0))
    log(f"data {p.data.name}: {len(split.train) + len(split.val)} training structures, {len(split.test)} test "
        f"({split.test_note}); species {', '.join(split.species)}")
    for bad in split.omitted:
        log(f"  left out (data.on_bad: skip): {bad}")
    return split


def omitted_notes(split: Split) -> list[str]:
    """One report line per frame left out (data.on_bad: skip)."""
    return [f"left out (data.on_bad: skip): {bad}" for bad in split.omitted]


def label_stage(p: PipelineConfig, split: Split, tracker: Tracker | NullTracker, parent: str | None,
                log=print) -> list[str]:
    """Label the training structures with every eligible EIP (leakage-tagged ones excluded); returns notes."""
    structures = split.train + split.val
    db = PotentialsDB()
    _, excluded = db.eligible_for(set(split.species), split.source_tag)
    specs = eligible_eips(db, split.species, split.source_tag)
    notes = [f"excluded {s.id}: {why}" for s, why in excluded if s.supports(set(split.species))]
    if not specs:
        notes.append(f"no eligible empirical potential supports {split.species}: the EIP arms cannot run")
        log("labels: " + notes[-1])
        return notes
    log(f"labels: {len(structures)} training structures × {len(specs)} eligible EIPs "
        f"({len(notes)} excluded) into {p.data.labels}")
    report = label(structures, specs, p.data.labels, workers=p.data.workers or None, progress=False,
                   scheduler=p.data.scheduler or None)
    hashes = sorted(set(structure_hashes(structures)))
    counts = {}
    with LabelStore(p.data.labels) as store:
        for s in specs:
            n_ok = sum(1 for _ in store.labels(s.id, hashes=hashes))
            counts[s.id] = (n_ok, len(hashes) - n_ok)
    for eip, (ok, bad) in counts.items():
        if bad:
            notes.append(f"{eip}: no label for {bad} of {len(hashes)} structures (reasons: eip2nn labels failures)")
    with tracker.run("labels", {"eip2nn.stage": "labels", "eip2nn.dataset": p.data.name,
                                "eip2nn.element": ",".join(split.species)}, parent) as run:
        run.log_params({"eips": ",".join(counts), "labels": p.data.labels, "n_structures": len(hashes)})
        run.log_metrics({f"labelled.{e}": ok for e, (ok, _) in counts.items()})
        run.log_metrics({f"failed.{e}": bad for e, (_, bad) in counts.items()})
        run.log_metrics({"wall_seconds": report.wall_seconds, "n_eligible_eips": len(specs)})
    return notes


def run_pipeline(p: PipelineConfig, log=print) -> PipelineResult:
    """Run (or resume) the whole pipeline; returns the cells, the summary rows and the files written.

    One parent run holds every stage's run; it ends FAILED when a cell failed, KILLED on Ctrl-C.
    """
    t0 = time.perf_counter()
    out = p.output_dir
    out.mkdir(parents=True, exist_ok=True)
    config_path = out / "pipeline.yaml"
    config_path.write_text(p.to_yaml())
    log(f"pipeline {p.name}: {p.data.name}, arms {p.arms}, fractions {p.study.fractions}, "
        f"seeds {p.study.seeds}; output {out}")
    tracker = make_tracker(p.experiment, p.tracking.enabled)
    with tracker.run(f"{p.name} {time.strftime('%Y-%m-%d %H:%M')}", {
            "eip2nn.stage": "pipeline", "eip2nn.pipeline": p.name, "eip2nn.dataset": p.data.name,
            "eip2nn.backbone": p.model.backbone, "eip2nn.git_commit": git_commit()}) as parent:
        parent.log_params(p.as_dict())
        parent.log_artifact(config_path, "config")
        if tracker.enabled:
            log(f"MLflow: experiment {p.experiment!r}, parent run {parent.run_id} ({tracker.uri})")
        split = check_data(p, log)
        notes = [f"test set: {split.test_note}", *omitted_notes(split)]
        _record_data(split, parent, out)
        if p.label_all:
            notes += label_stage(p, split, tracker, parent.run_id, log)
        domain = domain_checks(p, split, log) if p.domain_check else []
        parent.log_metrics({c.metric_key: c.auc_mean for c in domain if not c.skipped})
        cells = _run_study(p, parent.run_id, notes, log)
        rows = summarise(cells, p.cell_arms, p.study.fractions)
        rigidity = []
        if p.lpr:
            log("local prediction rigidity of the network cells")
            splits: dict = {}
            rigidity = [r for c in cells if (r := cell_rigidity(p, c, log, splits)) is not None]
            parent.log_metrics(rigidity_metrics(rigidity))
        files = write_report(p, cells, rows, notes, out, domain, rigidity)
        for path in files.values():
            parent.log_artifact(path, "plots" if path.suffix == ".png" else "results")
        for c in cells:  # which models each blended auto cell averages
            if c.arm == "auto" and is_blend(c.model_path):
                parent.log_artifact(Path(c.model_path), "auto")
        parent.log_metrics(_summary_metrics(rows))
        parent.log_metrics({"n_cells_failed": sum(not c.ok for c in cells), "wall_seconds": time.perf_counter() - t0})
        parent.status = "FINISHED" if all(c.ok for c in cells) else "FAILED"
    return PipelineResult(p, out, cells, rows, files, parent.run_id, notes, time.perf_counter() - t0)


def report_so_far(p: PipelineConfig, log=print) -> PipelineResult:
    """The report of the stages already finished, without labelling or training: a running or interrupted
    pipeline's tables so far, written to ``<output>/so_far/``. Unfinished cells are left out (the tables give
    each row's number of seeds) and listed in the notes; ``auto`` chooses among what has finished."""
    t0 = time.perf_counter()
    out = p.output_dir / "so_far"
    out.mkdir(parents=True, exist_ok=True)
    split = check_data(p, log)
    notes = [f"test set: {split.test_note}", *omitted_notes(split),
             "the stages finished so far only (eip2nn pipeline report): nothing was labelled or trained, "
             "and no domain check was made"]
    pending: list[str] = []
    cells = _run_study(p, None, notes, log, run=finished_or_not_yet, pending=pending)
    cells = [c for c in cells if c.ok or c.arm != "auto"]  # a seed with nothing finished yet has nothing to choose
    finished = sum(c.arm != "auto" for c in cells)
    per_arm = Counter(name.split(" f=")[0] for name in pending)
    notes.insert(0, f"{finished} of {finished + len(pending)} cells finished (auto not counted)"
                 + (f"; not yet: {', '.join(f'{arm} {n}' for arm, n in per_arm.items())}" if pending else ""))
    rows = summarise(cells, p.cell_arms, p.study.fractions)
    files = write_report(p, cells, rows, notes, out)
    return PipelineResult(p, out, cells, rows, files, None, notes, time.perf_counter() - t0)


def _record_data(split: Split, parent, out: Path) -> None:
    """The data's species, hashes and left-out frames as the parent run's tags and artifacts."""
    parent.set_tags({"eip2nn.element": ",".join(split.species), "eip2nn.n_frames_omitted": str(len(split.omitted))})
    parent.set_tags({"eip2nn.data." + k: v for k, v in split.hashes.items()})
    if split.omitted:
        omitted = out / "omitted_frames.json"
        omitted.write_text(json.dumps([dataclasses.asdict(b) for b in split.omitted], indent=1))
        parent.log_artifact(omitted, "results")


def _run_study(p: PipelineConfig, parent_id: str | None, notes: list[str], log, run=run_or_reuse,
               pending: list[str] | None = None) -> list[CellResult]:
    """Pretrain each seed (transfer arms), then every arm × fraction × seed (× backbone in a study over
    backbones); failures become failed cells. ``run`` runs or reuses a stage (:func:`run_or_reuse`), or only
    finds it (:func:`finished_or_not_yet`): then cells not finished yet are left out and named in ``pending``."""
    pending = [] if pending is None else pending
    studies = [(name, dataclasses.replace(p, model=model)) for name, model in p.backbone_models()]
    pretrained: dict[str, dict[int, str]] = {name: {} for name, _ in studies}
    if {"transfer", "both"} & {p.base_arm(a) for a in p.arms}:
        for name, pb in studies:
            for seed in p.study.seeds:
                log(f"pretrain seed={seed}" + (f" backbone={name}" if name else ""))
                try:
                    done, _ = run(pretrain_config(pb, seed, parent_id), log)
                    pretrained[name][seed] = str(done.model_path)
                except NotFinishedYet:  # "": its transfer cells have not finished either
                    pretrained[name][seed] = ""
                    log("  not finished yet")
                except Exception as exc:  # recorded: the transfer cells of this seed fail with this reason
                    notes.append(f"pretrain seed={seed}{f' ({name})' if name else ''} failed: "
                                 f"{type(exc).__name__}: {exc}")
                    log("  FAILED: " + notes[-1])
    cells = []
    for fraction in p.study.fractions:
        skipped = {arm: why for arm in p.arms if (why := nothing_to_weakly_label(p, arm, fraction))}
        for arm, why in skipped.items():
            notes.append(why)
            log(f"skipping {arm} f={fraction:g}: {why}")
        per_seed = []
        for seed in p.study.seeds:
            mine = []
            for k, (name, pb) in enumerate(studies):
                for arm in (a for a in p.arms if a not in skipped and a != "auto" and not (a == "snap" and k > 0)):
                    cell = _run_cell(pb, arm, fraction, seed, pretrained[name], parent_id, log, run)
                    if cell is None:
                        pending.append(f"{arm_name(arm, name)} f={fraction:g} seed={seed}")
                    else:
                        mine.append(dataclasses.replace(cell, arm=arm_name(arm, name)))
            per_seed.append(mine)
        autos: list[CellResult] = []
        if "auto" in p.arms:
            everyone = [c for mine in per_seed for c in mine]
            if p.study.auto_choice == "blend":
                try:
                    autos, why = blend_for_fraction(p, everyone, p.candidates_of_auto, log)
                except Exception as exc:  # recorded in the notes: auto falls back to the best single arm
                    autos, why = choose_for_fraction(everyone, p.candidates_of_auto, "mean_over_seeds")
                    notes.append(f"auto f={fraction:g}: no blend ({type(exc).__name__}: {exc}); auto is the "
                                 "best single arm")
                    why += f" ({notes[-1]})"
            else:
                autos, why = choose_for_fraction(everyone, p.candidates_of_auto, p.study.auto_choice)
            log(f"auto f={fraction:g}: {why}")
        for seed, mine in zip(p.study.seeds, per_seed):
            cells += mine + [a for a in autos if a.seed == seed]
    return cells


def nothing_to_weakly_label(p: PipelineConfig, arm: str, fraction: float) -> str:
    """Why a weak-supervision cell would only repeat another arm ('' when it would not)."""
    base = p.base_arm(arm)
    if base in ("weak", "both") and fraction >= 1.0 and not p.weak.extra_structures:
        same = "baseline" if base == "weak" else "transfer"
        return (f"{arm} at dft_fraction {fraction:g} not run: every training structure has its DFT label and "
                f"weak.extra_structures is empty, so there is nothing to weakly label and it would repeat {same}")
    return ""


def _run_cell(p, arm, fraction, seed, pretrained, parent_id, log, run=run_or_reuse) -> CellResult | None:
    """The cell's result; None when ``run`` only finds finished stages and this one (or the pretraining it
    starts from) has not finished."""
    log(f"{arm} f={fraction:g} seed={seed}")
    if STAGE_OF_ARM[p.base_arm(arm)] == "finetune":
        if seed not in pretrained:
            return CellResult(arm, fraction, seed, "failed", error="pretraining of this seed failed")
        if not pretrained[seed]:  # its pretraining has not finished (pipeline report)
            return None
    try:
        done, reused = run(cell_config(p, arm, fraction, seed, pretrained.get(seed, ""), parent_id), log)
    except NotFinishedYet:
        log("  not finished yet")
        return None
    except Exception as exc:  # recorded in the cells table and the report, never dropped
        log(f"  FAILED: {type(exc).__name__}: {exc}")
        return CellResult(arm, fraction, seed, "failed", error=f"{type(exc).__name__}: {exc}")
    cell = cell_result(arm, fraction, seed, done, reused, (p.train.energy_weight, p.train.force_weight))
    log(f"  test energy MAE {cell.test_energy_mae:.2f} meV/atom, force MAE {cell.test_force_mae:.3f} eV/Å"
        + (" (reused)" if reused else f" ({cell.seconds:.0f} s)"))
    return cell


def _summary_metrics(rows: list[Row]) -> dict[str, float]:
    out = {}
    for r in rows:
        key = f"{metric_name(r.arm)}.f{r.fraction:g}"
        out[f"{key}.test_energy_mae_mean"], out[f"{key}.test_energy_mae_spread"] = r.energy
        out[f"{key}.test_force_mae_mean"], out[f"{key}.test_force_mae_spread"] = r.forces
        if not math.isnan(r.energy_gain):
            out[f"{key}.energy_improvement_pct"] = r.energy_gain
    return out


def write_report(p: PipelineConfig, cells: list[CellResult], rows: list[Row], notes: list[str],
                 out: Path, domain: list[DomainCheck] = (), rigidity: list[CellRigidity] = ()) -> dict[str, Path]:
    """results.md (table, domain check, failures, notes), results.csv, cells.csv, learning_curve.png."""
    backbones = ", ".join(name for name, _ in p.backbone_models()) if p.study.backbones else p.model.backbone
    title = f"{p.name}: {p.data.name}, {backbones}, seeds {p.study.seeds}"
    files = {"table_csv": write_csv(rows, out / "results.csv"), "cells_csv": write_cells_csv(cells, out / "cells.csv")}
    if rows:
        files["learning_curve"] = learning_curve(rows, out / "learning_curve.png", title)
    lines = [f"# {title}", "", markdown_table(rows), "",
             "Mean ± sample standard deviation over seeds; "
             "'vs baseline': (baseline − arm) / baseline of the means, positive = lower error."]
    if domain:
        lines += [""] + domain_markdown(domain, p.study.seeds[0])
    if "auto" in p.arms:
        how = {"mean_over_seeds": "one arm per fraction, the lowest validation score averaged over the seeds' splits",
               "blend": "per fraction, the mean of the top k arms by the validation score averaged over the seeds' "
                        "splits, k chosen by the same score; blend files in auto/",
               }.get(p.study.auto_choice, "per seed, by its own validation score")
        lines += ["", f"## What auto chose ({how}; validation DFT labels only)", ""]
        lines += [f"- DFT fraction {f:g}: " + (choice_counts(cells, f) or (
            "nothing (failed)" if any(c.fraction == f for c in cells) else "no cell has finished"))
            for f in sorted(p.study.fractions)]
    if "snap" in p.arms:
        table = against_reference(rows, "snap", p.candidates_of_auto)
        if table:
            lines += ["", "## eip2nn against the SNAP fitted to the same labels", "",
                      "Test energy MAE (meV/atom) / force MAE (eV/Å), means over seeds. `auto` is chosen on "
                      "validation; the best arm is chosen on the test set itself, so it is an upper bound.", "", table]
    if p.study.backbones:
        lines += ["", "## Backbones: what each arm gains over its own baseline", "",
                  "Energy / force gain, (baseline − arm) / baseline of the means over seeds, each backbone against "
                  "its own baseline; the baselines' own errors first.", "",
                  backbone_gains(rows, [name for name, _ in p.backbone_models()])]
    if rigidity:
        lines += ["", "## Local prediction rigidity of the DFT head on the test atoms", "",
                  "Last-layer approximation with the cell's DFT-labelled training structures and the training loss's "
                  "weights; medians over test atoms, mean ± std over seeds; larger = the labels pin the atom's "
                  "energy down more firmly.", "", rigidity_markdown(rigidity, p.cell_arms)]
    by_group = group_markdown_table(cells, p.cell_arms, p.study.fractions)
    if by_group:
        lines += ["", "## Test errors by group", "", by_group]
    failed = [c for c in cells if not c.ok]
    if failed:
        lines += ["", "## Failed cells", ""] + [f"- {c.arm} f={c.fraction:g} seed={c.seed}: {c.error}" for c in failed]
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    files["table_md"] = out / "results.md"
    (out / "cells.json").write_text(json.dumps([dataclasses.asdict(c) for c in cells], indent=1))
    files["cells_json"] = out / "cells.json"
    return files


def summary_text(result: PipelineResult) -> str:
    return text_table(result.rows)
