"""The fit loop: mini-batches, Adam, LR on plateau or cosine, weight averaging, a final phase, early stopping.

Every epoch ends with an atomic checkpoint holding the weights, the optimiser
and scheduler state, the best weights so far and the history, so a killed run
continues from its last finished epoch with the same result it would have
had (the shuffling order is a function of seed and epoch).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from eip2nn.nn.checkpoint import read_checkpoint, save_checkpoint
from eip2nn.nn.device import resolve_device
from eip2nn.training.config import TrainConfig
from eip2nn.training.ema import WeightAverage
from eip2nn.training.loss import LossTerm, as_terms, batch_loss
from eip2nn.training.samples import Sample


@dataclass
class FitResult:
    history: list[dict] = field(default_factory=list)  # one dict per epoch
    best_epoch: int = -1
    best_val: float = math.inf
    resumed_from: int = 0  # epochs already done when this call started
    stopped_early: bool = False
    seconds: float = 0.0


@dataclass
class _State:
    """What a checkpoint carries besides the weights: the loop's position and memory."""

    best_state: dict
    bad_epochs: int = 0
    start: int = 0
    final_phase: bool = False  # the final loss weights apply
    ema: dict | None = None


def _resume(checkpoint: Path, run_config: dict | None, model, opt, sched, result: FitResult) -> _State:
    """Where to start: from ``checkpoint`` if it exists, which then also restores the model, optimiser,
    scheduler and ``result``'s history; else a fresh start."""
    fresh = _State(copy.deepcopy(model.state_dict()))
    if not checkpoint.is_file():
        return fresh
    saved = read_checkpoint(checkpoint)
    state = saved.get("training") or {}
    if saved.get("config") != (run_config or {}):
        raise ValueError(f"{checkpoint} belongs to a run with another config; "
                         "delete it or choose another output folder")
    model.load_state_dict(saved["model"]["state_dict"])
    if state.get("optimizer"):
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
    result.history = list(state.get("history", []))
    result.best_epoch, result.best_val = state.get("best_epoch", -1), state.get("best_val", math.inf)
    result.stopped_early = state.get("stopped_early", False)
    result.resumed_from = state.get("epoch", 0)
    return _State(state.get("best_state", fresh.best_state), state.get("bad_epochs", 0), result.resumed_from,
                  state.get("final_phase", False), state.get("ema"))


def _scheduler(opt, cfg: TrainConfig):
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(cfg.epochs, 1), eta_min=cfg.min_lr)
    return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=cfg.lr_patience,
                                                      min_lr=cfg.min_lr)


def _enter_final_phase(sched, result: FitResult, state: _State) -> None:
    """Switch to the final loss weights: the validation loss changes scale, so its memory starts afresh."""
    state.final_phase, state.bad_epochs = True, 0
    result.best_val, result.stopped_early = math.inf, False
    if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
        sched.best, sched.num_bad_epochs = math.inf, 0


def _train_epoch(model, train: list[Sample], terms: list[LossTerm], weights, opt, cfg: TrainConfig,
                 epoch: int, ema: WeightAverage | None) -> tuple[float, int]:
    """One pass over ``train`` in a (seed, epoch)-seeded order; (mean training loss, samples used)."""
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
    total, n = 0.0, 0
    for k in range(0, len(train), cfg.batch_size):
        chunk = [train[i] for i in order[k:k + cfg.batch_size].tolist()]
        if not any(t.target in s.targets for s in chunk for t in terms):
            continue
        opt.zero_grad(set_to_none=True)
        loss, _ = batch_loss(model, chunk, terms, weights)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update(model)
        total += float(loss.detach()) * len(chunk)
        n += len(chunk)
    return total / max(n, 1), n


def _val_loss(model, val: list[Sample], terms: list[LossTerm], weights, batch_size) -> float:
    model.eval()
    total, n = 0.0, 0
    for k in range(0, len(val), batch_size):
        chunk = val[k:k + batch_size]
        if not any(t.target in s.targets for s in chunk for t in terms):
            continue
        loss, _ = batch_loss(model, chunk, terms, weights)
        total += float(loss.detach()) * len(chunk)
        n += len(chunk)
    model.train()
    return total / n if n else math.nan


def fit(model, train: list[Sample], val: list[Sample], terms: dict[str, float] | list[LossTerm], cfg: TrainConfig,
        checkpoint: str | Path, run_config: dict | None = None,
        on_epoch: Callable[[dict], None] | None = None) -> FitResult:
    """Train the trainable parameters of ``model`` on the loss ``terms`` (or ``{head: weight}``).

    Validation loss (same weights; of the averaged weights with ``cfg.ema_decay``) drives the
    plateau schedule, early stopping and the choice of the returned weights (the best epoch's;
    the final phase's best when ``cfg.final_start`` < 1). ``checkpoint`` is written every epoch;
    if it exists from an interrupted run of the same config, training resumes from it. The model
    trains on ``cfg.device`` and is returned on the CPU.
    """
    if not train:
        raise ValueError("no training samples")
    terms = as_terms(terms)
    cfg = dataclasses.replace(cfg, epochs=cfg.epochs_for(len(train)))  # min_steps: more epochs for few structures
    model.to(resolve_device(cfg.device))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = _scheduler(opt, cfg)
    result = FitResult()
    state = _resume(Path(checkpoint), run_config, model, opt, sched, result)
    ema = WeightAverage(model, cfg.ema_decay, state.ema) if cfg.ema_decay > 0 else None
    final_epoch = round(cfg.final_start * cfg.epochs)  # = epochs without a final phase
    t0 = time.perf_counter()
    model.train()
    for epoch in range(state.start, cfg.epochs):
        # the final phase starts at final_epoch, or when early stopping ends the first phase (not the run)
        if cfg.has_final_phase and not state.final_phase and (epoch >= final_epoch or result.stopped_early):
            _enter_final_phase(sched, result, state)
        if result.stopped_early:
            break
        weights = cfg.final_loss_weights if state.final_phase else cfg.loss_weights
        t_epoch = time.perf_counter()
        train_loss, n = _train_epoch(model, train, terms, weights, opt, cfg, epoch, ema)
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} at epoch {epoch}; lower train.lr")
        with ema.swapped_in(model) if ema else contextlib.nullcontext():
            val_loss = _val_loss(model, val, terms, weights, cfg.batch_size) if val else train_loss
            improved = val_loss < result.best_val
            if improved:
                state.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if isinstance(sched, torch.optim.lr_scheduler.ReduceLROnPlateau):
            sched.step(val_loss)
        else:
            sched.step()
        if improved:
            result.best_val, result.best_epoch, state.bad_epochs = val_loss, epoch, 0
        else:
            state.bad_epochs += 1
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": opt.param_groups[0]["lr"],
               "final_phase": float(state.final_phase), "epoch_seconds": time.perf_counter() - t_epoch,
               "structures_per_second": n / (time.perf_counter() - t_epoch)}
        result.history.append(row)
        result.stopped_early = state.bad_epochs >= cfg.patience
        save_checkpoint(Path(checkpoint), model, run_config, {
            "epoch": epoch + 1, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "best_state": state.best_state, "best_epoch": result.best_epoch, "best_val": result.best_val,
            "bad_epochs": state.bad_epochs, "history": result.history, "stopped_early": result.stopped_early,
            "final_phase": state.final_phase, "ema": ema.state_dict() if ema else None})
        if on_epoch:
            on_epoch(row)
    model.load_state_dict(state.best_state)
    model.to("cpu").eval()
    result.seconds = time.perf_counter() - t0
    return result
