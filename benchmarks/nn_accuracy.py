"""Test-set accuracy of each backbone on one mlearn element with the full DFT training set.

Trains the ``baseline`` stage (DFT labels only) for each backbone and seed,
tracked in MLflow (experiment ``benchmarks``), and prints test energy and
force MAE (mean ± sample std over seeds) next to the published GAP and MTP
errors on the same test set (Zuo et al., J. Phys. Chem. A 124, 731 (2020),
as quoted in ../shared/data/README.md).

Usage: python benchmarks/nn_accuracy.py [--element Si] [--seeds 0 1] [--epochs 300] [--set train.ema_decay=0.99 ...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from stats import mean_spread

from eip2nn.config import apply_overrides
from eip2nn.training.config import StageConfig
from eip2nn.training.stages import run_stage

PUBLISHED = {  # element: (GAP E meV/atom, MTP E, GAP F eV/Å, MTP F)
    "Ni": (0.42, 0.48, 0.02, 0.01), "Cu": (0.46, 0.41, 0.01, 0.01), "Li": (0.49, 0.49, 0.01, 0.01),
    "Mo": (2.24, 2.83, 0.09, 0.09), "Si": (2.91, 2.21, 0.07, 0.06), "Ge": (2.06, 1.79, 0.05, 0.05),
}
BACKBONES = {"schnet": {"backbone": "schnet", "width": 64, "depth": 3},
             "symmetry_functions": {"backbone": "symmetry_functions", "width": 64, "depth": 2},
             "bispectrum": {"backbone": "bispectrum", "width": 64, "depth": 2, "twojmax": 6}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--element", default="Si")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    p.add_argument("--output", default="outputs/benchmarks")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a stage config value, e.g. train.schedule=cosine (repeatable)")
    p.add_argument("--label", default="", help="name of this recipe in the table and the JSON file")
    args = p.parse_args()
    rows = {}
    for bb in args.backbones:
        for seed in args.seeds:
            cfg = StageConfig.from_dict(apply_overrides({
                "stage": "baseline", "output": f"{args.output}/runs",
                "data": {"dataset": f"mlearn/{args.element}", "dft_fraction": 1.0},
                "model": {**BACKBONES[bb], "cutoff": 5.0},
                "train": {"epochs": args.epochs, "seed": seed, "patience": 60},
                "tracking": {"experiment": "benchmarks", "run_name": f"accuracy-{args.element}-{bb}-s{seed}"}},
                args.overrides))
            t0 = time.perf_counter()
            r = run_stage(cfg)
            m = r.metrics["test"]
            rows.setdefault(bb, []).append({"seed": seed, "energy_mae": m.energy_mae, "force_mae": m.force_mae,
                                            "epochs": len(r.fit.history), "seconds": time.perf_counter() - t0,
                                            "run_id": r.run_id})
            print(f"{bb} seed {seed}: test E MAE {m.energy_mae:.2f} meV/atom, F MAE {m.force_mae:.3f} eV/Å", flush=True)
    gap_e, mtp_e, gap_f, mtp_f = PUBLISHED[args.element]
    print(f"\nmlearn/{args.element} test set ({len(args.seeds)} seeds, mean ± std; full DFT training set)\n")
    print("| model | E MAE (meV/atom) | F MAE (eV/Å) | epochs run | wall s/seed |")
    print("|---|---|---|---|---|")
    recipe = f" ({args.label})" if args.label else (f" ({' '.join(args.overrides)})" if args.overrides else "")
    for bb, rs in rows.items():
        print(f"| eip2nn {bb}{recipe} | {mean_spread([r['energy_mae'] for r in rs])} | "
              f"{mean_spread([r['force_mae'] for r in rs], 3)} | {mean_spread([r['epochs'] for r in rs], 0)} | "
              f"{mean_spread([r['seconds'] for r in rs], 0)} |")
    print(f"| GAP (published) | {gap_e} | {gap_f} | | |")
    print(f"| MTP (published) | {mtp_e} | {mtp_f} | | |")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    name = f"nn_accuracy_{args.element}{'_' + args.label if args.label else ''}.json"
    (out / name).write_text(json.dumps({"overrides": args.overrides, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
