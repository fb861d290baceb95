"""How the DFT head of a model with a SNAP prior (model.snap_prior) should start: as built (default init) or
with its last layer zero, so that training starts exactly at the SNAP. Test errors side by side, one cell each.

The cell is the Si pipeline's (pipelines/si.yaml: bispectrum 2J = 8, 5.2 Å, 128 x 2, 200 epochs, cosine, EMA,
final energy phase) at one DFT fraction and seed; the SNAP prior is chosen on validation (auto).

    python benchmarks/snap_prior_init.py --fraction 0.25 --seed 0
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import torch

from eip2nn.nn.graph import collate
from eip2nn.nn.model import DFT_HEAD
from eip2nn.training.config import StageConfig
from eip2nn.training.plan import plan_stage
from eip2nn.training.trainer import fit

RECIPE = {"epochs": 200, "batch_size": 8, "lr": 0.003, "patience": 1000, "schedule": "cosine", "ema_decay": 0.99,
          "final_start": 0.7, "final_energy_weight": 10, "final_force_weight": 0.1}


def test_errors(fraction: float, seed: int, init: str) -> tuple[float, float]:
    """(test energy MAE meV/atom, force MAE eV/Å) of one cell trained with the head started as ``init``."""
    cfg = StageConfig.from_dict({
        "stage": "baseline", "data": {"dataset": "mlearn/Si", "dft_fraction": fraction, "split_seed": seed},
        "model": {"backbone": "bispectrum", "twojmax": 8, "cutoff": 5.2, "width": 128, "depth": 2,
                  "snap_prior": "auto"},
        "train": {**RECIPE, "seed": seed}})
    torch.manual_seed(seed)
    plan = plan_stage(cfg)
    if init == "zero":
        last = plan.model.head(DFT_HEAD).net[-1]
        with torch.no_grad():
            last.weight.zero_()
            last.bias.zero_()
    with tempfile.TemporaryDirectory() as tmp:
        fit(plan.model, plan.train, plan.val, plan.terms, plan.cfg.train, Path(tmp) / "checkpoint.pt")
    model = plan.model.eval()
    energy, forces = [], []
    for sample in plan.test:
        pred = model(collate([sample.graph]))[DFT_HEAD]
        energy.append(abs(pred.energy.item() - sample.targets[DFT_HEAD].energy) / sample.graph.n_atoms)
        forces.append(np.abs(pred.forces.detach().numpy() - sample.targets[DFT_HEAD].forces.numpy()).ravel())
    return 1000.0 * float(np.mean(energy)), float(np.concatenate(forces).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"Si, DFT fraction {args.fraction}, seed {args.seed}: test energy MAE meV/atom, force MAE eV/Å")
    for init in ("default", "zero"):
        e, f = test_errors(args.fraction, args.seed, init)
        print(f"  head started {init:>7}: {e:.2f} / {f:.4f}")


if __name__ == "__main__":
    main()
