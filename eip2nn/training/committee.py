"""Committee stages (``train.committee: N``): N networks of the stage's design, trained on the same labels from
other initial weights; the stage's model is their mean (:class:`~eip2nn.nn.committee.Committee`).

Member k is the same stage with ``train.committee: 1`` and ``train.seed + MEMBER_SEED_STEP · k``, so member 0
is the single network of the same config (a pipeline's plain arm) and is reused when it has finished. Each member
is a stage of its own (folder, checkpoint, MLflow run, a child of the committee's run), so an interrupted
committee resumes member by member. The committee stage then scores the mean on the stage's training, validation
and test samples and records it like any stage, its model file holding every member.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from eip2nn.nn.checkpoint import load_model, save_checkpoint
from eip2nn.nn.committee import Committee
from eip2nn.plots import parity_plot
from eip2nn.tracking import make_tracker
from eip2nn.training.config import StageConfig
from eip2nn.training.plan import plan_stage
from eip2nn.training.stages import (
    FinishedStage,
    StageResult,
    StopStage,
    finished_stage,
    flat_metrics,
    run_stage,
    stage_lock,
    stage_metrics,
    write_result,
)
from eip2nn.training.trainer import FitResult

MEMBER_SEED_STEP = 100  # member k trains with train.seed + 100 k


def member_configs(cfg: StageConfig, parent_run_id: str = "") -> list[StageConfig]:
    """The single-network stages whose mean is committee stage ``cfg`` (member 0 first)."""
    members = []
    for k in range(cfg.train.committee):
        train = dataclasses.replace(cfg.train, committee=1, seed=cfg.train.seed + MEMBER_SEED_STEP * k)
        name = cfg.tracking.run_name or cfg.arm
        tracking = dataclasses.replace(cfg.tracking, run_name=f"{name} member {k}",
                                       parent_run_id=parent_run_id or cfg.tracking.parent_run_id)
        members.append(dataclasses.replace(cfg, train=train, tracking=tracking))
    return members


def run_members(members: list[StageConfig], log=print, on_epoch=None) -> list[FinishedStage]:
    """Each member (:func:`member_configs`) finished: reused, or trained now (under its stage lock, as a pipeline
    cell is). ``on_epoch`` sees member 0's epochs only (a pruner judges the first network)."""
    done = []
    for k, member in enumerate(members):
        with stage_lock(member):
            finished = finished_stage(member)
            if finished is None:
                log(f"committee member {k + 1} of {len(members)} (train.seed {member.train.seed})")
                run_stage(member, log=lambda s: log("  " + s), on_epoch=on_epoch if k == 0 else None)
                finished = finished_stage(member)
                if finished is None:
                    raise RuntimeError(f"committee member {k} ended without writing its result")
            else:
                log(f"committee member {k + 1} of {len(members)} (train.seed {member.train.seed}): "
                    f"reusing {finished.output_dir}")
        done.append(finished)
    return done


def run_committee(cfg: StageConfig, out: Path, log=print, on_epoch=None) -> StageResult:
    """Train (or reuse) the members of committee stage ``cfg``, score their mean and record it in ``out``,
    as one tracked run whose children are the members' runs."""
    tracker = make_tracker(cfg.tracking.experiment, cfg.tracking.enabled)
    name = cfg.tracking.run_name or f"{cfg.arm}-{cfg.data.name.replace('/', '-')}-f{cfg.data.dft_fraction}"
    tags = {"eip2nn.arm": cfg.arm, "eip2nn.committee": str(cfg.train.committee)}
    with tracker.run(name, tags, cfg.tracking.parent_run_id or None, killed_by=(StopStage,)) as run:
        run.log_params(cfg.as_dict())
        configs = member_configs(cfg, run.run_id or "")
        members = run_members(configs, log, on_epoch)
        plan = plan_stage(configs[0])  # the samples every member was scored on
        committee = Committee([load_model(m.model_path) for m in members])
        plan = dataclasses.replace(plan, cfg=cfg, model=committee)
        metrics, parities = stage_metrics(plan)
        tags = plan.tags | tags | {"eip2nn.committee_members": " ".join(str(m.output_dir) for m in members)}
        run.set_tags(tags)
        notes = plan.notes + [member_note(configs, members, metrics)]
        log(notes[-1])
        seconds = sum(m.seconds for m in members)
        model_path = save_checkpoint(out / "model.pt", committee, cfg.as_dict(), {
            "mlflow_run_id": run.run_id, "stage": cfg.stage, "eips": plan.eips,
            "members": [str(m.output_dir) for m in members]})
        parity_path = parity_plot(parities, out / "parity.png", f"{cfg.arm} committee of {len(members)} "
                                  f"{cfg.data.name}")
        (out / "metrics.json").write_text(json.dumps({k: dataclasses.asdict(v) for k, v in metrics.items()},
                                                     indent=1))
        final = flat_metrics(metrics) | {"train_seconds": seconds}
        for k, m in enumerate(members):
            final |= {f"member{k}_{key}": v for key, v in m.metrics["test"].as_dict("test").items()}
        run.log_metrics(final)
        run.log_artifact(model_path, "model")
        for p in (parity_path, out / "config.yaml", out / "metrics.json"):
            run.log_artifact(p, "plots" if p.suffix == ".png" else "outputs")
        write_result(out, cfg.stage, run.run_id, tags, metrics, final, plan.eips, notes, seconds)
    return StageResult(cfg.stage, out, model_path, committee.head_names, metrics, FitResult(seconds=seconds),
                       run.run_id, plan.eips, notes, plan.weak)


def member_note(configs: list[StageConfig], members: list[FinishedStage], metrics) -> str:
    """One line: the members' seeds and test errors beside the committee's."""
    seeds = ", ".join(str(c.train.seed) for c in configs)
    energies = " / ".join(f"{m.metrics['test'].energy_mae:.3g}" for m in members)
    forces = " / ".join(f"{m.metrics['test'].force_mae:.3g}" for m in members)
    return (f"committee of {len(members)} (train.seed {seeds}): test errors of the members {energies} meV/atom "
            f"and {forces} eV/Å; of their mean {metrics['test'].energy_mae:.3g} meV/atom and "
            f"{metrics['test'].force_mae:.3g} eV/Å")
