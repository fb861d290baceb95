"""Pretrain → finetune against baseline at a small DFT fraction (mlearn Si, 10% by default).

One pretraining run (one head per EIP, the ``n_eips`` eligible EIPs closest to
DFT on the labelled 10%, leakage-tagged ones excluded) on EIP labels of all
training structures; then, for each seed, a baseline (DFT labels only) and a
finetune from the pretrained backbone, with the same DFT labels, the same
split and the same epochs budget. Prints test energy and force MAE,
mean ± sample std over seeds, and the relative improvement.

Usage: python benchmarks/transfer_low_data.py [--element Si] [--fraction 0.1] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from stats import mean_spread

from eip2nn.training.config import StageConfig
from eip2nn.training.stages import run_stage


def config(stage: str, args, seed: int, **extra) -> StageConfig:
    d = {"stage": stage, "output": f"{args.output}/runs",
         "data": {"dataset": f"mlearn/{args.element}", "dft_fraction": args.fraction, "n_eips": args.n_eips,
                  "labels": f"{args.output}/labels.sqlite"},
         "model": {"backbone": args.backbone, "cutoff": 5.0, "width": 64, "depth": 3 if args.backbone == "schnet" else 2},
         "train": {"epochs": args.epochs, "seed": seed, "patience": 60},
         "tracking": {"experiment": "benchmarks",
                      "run_name": f"transfer-{args.element}-f{args.fraction}-{stage}-s{seed}"}}
    for k, v in extra.items():
        d[k] = {**d.get(k, {}), **v}
    return StageConfig.from_dict(d)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--element", default="Si")
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--pretrain-epochs", type=int, default=100)
    p.add_argument("--n-eips", type=int, default=3)
    p.add_argument("--backbone", default="schnet")
    p.add_argument("--output", default="outputs/benchmarks")
    args = p.parse_args()
    t0 = time.perf_counter()
    pre = run_stage(config("pretrain", args, 0, train={"epochs": args.pretrain_epochs, "patience": 30}))
    pretrain_s = time.perf_counter() - t0
    rows = {"baseline": [], "transfer": []}  # arms: the pipeline's names
    for seed in args.seeds:
        for arm, cfg in (("baseline", config("baseline", args, seed)),
                         ("transfer", config("finetune", args, seed, train={"lr": 1e-3},
                                             finetune={"pretrained": str(pre.model_path), "init_head": "best"}))):
            t = time.perf_counter()
            r = run_stage(cfg)
            m = r.metrics["test"]
            rows[arm].append({"seed": seed, "energy_mae": m.energy_mae, "force_mae": m.force_mae,
                              "seconds": time.perf_counter() - t, "run_id": r.run_id})
            print(f"{arm} seed {seed}: test E MAE {m.energy_mae:.2f} meV/atom, F MAE {m.force_mae:.3f} eV/Å", flush=True)
    base_e = statistics.mean(r["energy_mae"] for r in rows["baseline"])
    base_f = statistics.mean(r["force_mae"] for r in rows["baseline"])
    print(f"\nmlearn/{args.element}, DFT fraction {args.fraction} ({len(args.seeds)} seeds, mean ± std), "
          f"backbone {args.backbone}; EIPs {pre.eips}; pretraining {pretrain_s:.0f} s\n")
    print("| arm | test E MAE (meV/atom) | vs baseline | test F MAE (eV/Å) | vs baseline |")
    print("|---|---|---|---|---|")
    for arm, rs in rows.items():
        e = statistics.mean(r["energy_mae"] for r in rs)
        f = statistics.mean(r["force_mae"] for r in rs)
        print(f"| {arm} | {mean_spread([r['energy_mae'] for r in rs])} | {100 * (base_e - e) / base_e:+.0f}% | "
              f"{mean_spread([r['force_mae'] for r in rs], 3)} | {100 * (base_f - f) / base_f:+.0f}% |")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"transfer_{args.element}_{args.fraction}.json").write_text(
        json.dumps({"eips": pre.eips, "pretrain_run": pre.run_id, **rows}, indent=1))


if __name__ == "__main__":
    main()
