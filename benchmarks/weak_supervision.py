"""Weak supervision against baseline on mlearn elements at small DFT fractions.

For each element, DFT fraction and seed (the seed sets both the split — which
structures keep their DFT labels — and the network's initialisation), runs a
baseline (DFT labels only) and the weak arm (DFT + α × Tukey loss on the
selector's pseudo-labels for the unlabelled rest) with the same backbone and
epoch budget. Prints test energy and force MAE, mean ± sample std over
seeds, the change against baseline, and the selector's report: held-out
accuracy and pseudo-label MAE on labelled structures (selector vs single
best EIP vs oracle), plus — for evaluation only, never seen in training —
the pseudo-labels' MAE against the hidden DFT labels of the unlabelled pool.

Usage: python benchmarks/weak_supervision.py [--elements Si Mo] [--fractions 0.1 0.25] [--seeds 0 1 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
from stats import mean_spread

from eip2nn.data import load_dataset
from eip2nn.keys import CONFIG_ID, REF_ENERGY, WEAK_ENERGY
from eip2nn.training.config import StageConfig
from eip2nn.training.stages import run_stage


def config(stage: str, args, element: str, fraction: float, seed: int) -> StageConfig:
    return StageConfig.from_dict({
        "stage": stage, "output": f"{args.output}/runs",
        "data": {"dataset": f"mlearn/{element}", "dft_fraction": fraction, "split_seed": seed,
                 "labels": f"{args.output}/labels.sqlite"},
        "model": {"backbone": args.backbone, "cutoff": 5.0, "width": 64, "depth": 3 if args.backbone == "schnet" else 2},
        "train": {"epochs": args.epochs, "seed": seed, "patience": 60},
        "weak": {"alpha": args.alpha, "n_eips": args.n_eips},
        "tracking": {"experiment": "benchmarks", "run_name": f"weak-{element}-f{fraction}-{stage}-s{seed}"}})


def hidden_label_mae(pseudo_labelled, element: str) -> float:
    """Pseudo-label energy MAE (meV/atom) against the DFT labels the protocol hid. Evaluation only."""
    truth = {a.info[CONFIG_ID]: a.info[REF_ENERGY] / len(a) for a in load_dataset(f"mlearn/{element}/train")}
    err = [abs(a.info[WEAK_ENERGY] / len(a) - truth[a.info[CONFIG_ID]]) for a in pseudo_labelled]
    return 1000.0 * float(np.mean(err)) if err else float("nan")


def run_case(args, element: str, fraction: float, seed: int) -> dict:
    row = {"element": element, "fraction": fraction, "seed": seed}
    for arm in ("baseline", "weak"):
        t = time.perf_counter()
        r = run_stage(config(arm, args, element, fraction, seed))
        m = r.metrics["test"]
        row[arm] = {"energy_mae": m.energy_mae, "force_mae": m.force_mae, "seconds": time.perf_counter() - t,
                    "run_id": r.run_id}
        if r.weak:
            rep = r.weak.report
            row["selector"] = {**rep.as_metrics(""), "eips": r.weak.eips, "sources": r.weak.pseudo.sources,
                               "n_weak_labels": len(r.weak.pseudo.labelled),
                               "pool_mae_hidden_dft": hidden_label_mae(r.weak.pseudo.labelled, element)}
        print(f"{element} f={fraction} seed {seed} {arm}: test E MAE {m.energy_mae:.2f} meV/atom, "
              f"F MAE {m.force_mae:.3f} eV/Å ({row[arm]['seconds']:.0f} s)", flush=True)
    return row


def summarise(rows: list[dict]) -> None:
    cases = sorted({(r["element"], r["fraction"]) for r in rows})
    print("\n| element | DFT fraction | arm | test E MAE (meV/atom) | vs baseline | test F MAE (eV/Å) | vs baseline |")
    print("|---|---|---|---|---|---|---|")
    for el, f in cases:
        rs = [r for r in rows if (r["element"], r["fraction"]) == (el, f)]
        base_e = statistics.mean(r["baseline"]["energy_mae"] for r in rs)
        base_f = statistics.mean(r["baseline"]["force_mae"] for r in rs)
        for arm in ("baseline", "weak"):
            e = [r[arm]["energy_mae"] for r in rs]
            fm = [r[arm]["force_mae"] for r in rs]
            print(f"| {el} | {f} | {arm} | {mean_spread(e)} | {100 * (base_e - statistics.mean(e)) / base_e:+.0f}% | "
                  f"{mean_spread(fm, 3)} | {100 * (base_f - statistics.mean(fm)) / base_f:+.0f}% |")
    print("\nSelector (held-out = 5-fold cross-validation on the DFT-labelled training structures; "
          "pseudo-label MAE in meV/atom):\n")
    print("| element | DFT fraction | accuracy | balanced acc. | coverage | selector | single best, same | "
          "oracle, same | weak labels | pool MAE vs hidden DFT |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for el, f in cases:
        s = [r["selector"] for r in rows if (r["element"], r["fraction"]) == (el, f)]

        def ms(key, digits=1):
            return mean_spread([x[key] for x in s if key in x], digits)

        print(f"| {el} | {f} | {ms('accuracy', 2)} | {ms('balanced_accuracy', 2)} | {ms('coverage', 2)} | "
              f"{ms('mae_selector')} | {ms('mae_single_best_covered')} | {ms('mae_oracle_covered')} | "
              f"{ms('n_weak_labels', 0)} | {ms('pool_mae_hidden_dft')} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elements", nargs="+", default=["Si", "Mo"])
    p.add_argument("--fractions", type=float, nargs="+", default=[0.1, 0.25])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--n-eips", type=int, default=4)
    p.add_argument("--backbone", default="symmetry_functions")
    p.add_argument("--output", default="outputs/benchmarks")
    args = p.parse_args()
    t0 = time.perf_counter()
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for element in args.elements:
        for fraction in args.fractions:
            for seed in args.seeds:
                rows.append(run_case(args, element, fraction, seed))
                (out / "weak_supervision.json").write_text(json.dumps(rows, indent=1))
    print(f"\nbackbone {args.backbone}, {args.epochs} epochs max, alpha {args.alpha}, "
          f"{len(args.seeds)} seeds (mean ± std); total {time.perf_counter() - t0:.0f} s")
    summarise(rows)


if __name__ == "__main__":
    main()
