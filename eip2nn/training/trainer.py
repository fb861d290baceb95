"""The fit loop: mini-batches, Adam, LR on plateau, early stopping, resumable.

Every epoch ends with an atomic checkpoint holding the weights, the optimiser
and scheduler state, the best weights so far and the history, so a killed run
continues from its last finished epoch with the same result it would have
had (the shuffling order is a function of seed and epoch).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from eip2nn.nn.checkpoint import read_checkpoint, save_checkpoint
from eip2nn.training.config import TrainConfig
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


def _resume(checkpoint: Path, run_config: dict | None, model, opt, sched, result: FitResult) -> tuple[dict, int, int]:
    """(best weights, epochs without improvement, first epoch to run): from ``checkpoint`` if it exists, which then
    also restores the model, optimiser, scheduler and ``result``'s history; else a fresh start."""
    best_state = copy.deepcopy(model.state_dict())
    if not checkpoint.is_file():
        return best_state, 0, 0
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
    return state.get("best_state", best_state), state.get("bad_epochs", 0), result.resumed_from


def _train_epoch(model, train: list[Sample], terms: list[LossTerm], weights, opt, cfg: TrainConfig,
                 epoch: int) -> tuple[float, int]:
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

    Validation loss (same weights) drives the LR schedule, early stopping and
    the choice of the returned weights (the best epoch's). ``checkpoint`` is
    written every epoch; if it exists from an interrupted run of the same
    config, training resumes from it.
    """
    if not train:
        raise ValueError("no training samples")
    terms = as_terms(terms)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=cfg.lr_factor, patience=cfg.lr_patience,
                                                       min_lr=cfg.min_lr)
    result = FitResult()
    best_state, bad_epochs, start = _resume(Path(checkpoint), run_config, model, opt, sched, result)
    t0 = time.perf_counter()
    weights = cfg.loss_weights
    model.train()
    for epoch in range(start, cfg.epochs):
        if result.stopped_early:
            break
        t_epoch = time.perf_counter()
        train_loss, n = _train_epoch(model, train, terms, weights, opt, cfg, epoch)
        val_loss = _val_loss(model, val, terms, weights, cfg.batch_size) if val else train_loss
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"training loss became {train_loss} at epoch {epoch}; lower train.lr")
        sched.step(val_loss)
        if val_loss < result.best_val:
            result.best_val, result.best_epoch, bad_epochs = val_loss, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": opt.param_groups[0]["lr"],
               "epoch_seconds": time.perf_counter() - t_epoch, "structures_per_second": n / (time.perf_counter() - t_epoch)}
        result.history.append(row)
        result.stopped_early = bad_epochs >= cfg.patience
        save_checkpoint(Path(checkpoint), model, run_config, {
            "epoch": epoch + 1, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
            "best_state": best_state, "best_epoch": result.best_epoch, "best_val": result.best_val,
            "bad_epochs": bad_epochs, "history": result.history, "stopped_early": result.stopped_early})
        if on_epoch:
            on_epoch(row)
    model.load_state_dict(best_state)
    model.eval()
    result.seconds = time.perf_counter() - t0
    return result
