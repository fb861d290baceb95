"""Would `auto` do better by averaging its best few arms than by choosing one?

For a finished pipeline whose stage folders are on this machine: every eip2nn arm's saved model (the cells in
``outputs/pipelines/<name>/cells.json``) predicts the validation and test structures of its cell. A blend of
arms predicts the mean of their energies and forces (a mean of potentials is a potential: its forces are still
the gradient of its energy). Per DFT fraction, as ``auto`` does (``mean_over_seeds``), the arms are ranked by
their validation score averaged over the seeds, and the blend of the top k is scored on validation the same way
(w_E·RMSE(ΔE/n)² + w_F·RMSE(ΔF)², the pipeline's weights); k = 1 is `auto` itself. ``blend`` takes the k with
the lowest mean validation score; the test set only scores the choice.

A Δ model is compared in its own terms: its network's error against DFT − EIP on a structure is the error of
EIP + network against DFT, so every arm's errors (prediction − DFT) are on one footing and average.

First it checks that each model, re-evaluated here, gives the test errors and validation score its cell recorded.

Prints per fraction the test energy MAE (meV/atom) and force MAE (eV/Å), mean ± sample std over the seeds, of
`auto`, `blend` (and its k), fixed top-2 and top-3 blends, the baseline and the SNAP reference.

    python benchmarks/blend_arms.py --pipeline pipelines/ni.yaml
    python benchmarks/blend_arms.py --pipeline pipelines/mo.yaml
    python benchmarks/blend_arms.py --pipeline pipelines/trials/mo_committee_blend.yaml   # after running it

It reads the cells of the last run written to the pipeline's output folder (a trial shares its pipeline's).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from pathlib import Path

from stats import mean_spread

from eip2nn.data.protocol import Split, make_split
from eip2nn.nn.checkpoint import load_model
from eip2nn.pipeline.blend import blend_scores, blended
from eip2nn.pipeline.config import load_pipeline
from eip2nn.training.config import load_stage_config
from eip2nn.training.errors import StructureErrors
from eip2nn.training.errors import model_errors as _model_errors


def maes(e: StructureErrors) -> tuple[float, float]:
    m = e.metrics()
    return m.energy_mae, m.force_mae


def model_errors(model_path: str, structures, labels: str, where: str) -> StructureErrors:
    return _model_errors(load_model(model_path), structures, labels, where=where)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", default="pipelines/ni.yaml")
    ap.add_argument("--max-k", type=int, default=0, help="blend at most this many arms (0: all, as study.blend_arms)")
    args = ap.parse_args()
    p = load_pipeline(args.pipeline)
    weights = (p.train.energy_weight, p.train.force_weight)
    cells = json.loads((p.output_dir / "cells.json").read_text())
    candidates = set(p.candidates_of_auto)
    missing = [f"{c['arm']} f={c['fraction']:g} seed={c['seed']}" for c in cells
               if c["arm"] in candidates and c["status"] != "failed" and not Path(c["model_path"]).is_file()]
    if missing:
        print(f"left out, model not on this machine: {', '.join(missing)}")
    totals: dict[str, list[tuple[float, float]]] = {}
    worse: dict[str, list[int]] = {}
    for fraction in p.study.fractions:
        mine = [c for c in cells if c["fraction"] == fraction and c["arm"] in candidates and c["status"] != "failed"
                and Path(c["model_path"]).is_file()]
        seeds = sorted({c["seed"] for c in mine})
        val, test = {}, {}
        for c in mine:
            cfg = load_stage_config(Path(c["model_path"]).with_name("config.yaml"))
            split = make_split(cfg.data)
            key = (c["arm"], c["seed"])
            val[key] = model_errors(c["model_path"], Split.labelled(split.val), cfg.data.labels, "validation")
            test[key] = model_errors(c["model_path"], split.test, cfg.data.labels, "test")
            recorded = (c["test_energy_mae"], c["test_force_mae"], c["val_score"])
            again = (*maes(test[key]), val[key].score(*weights))
            if not all(math.isclose(a, b, rel_tol=1e-5) for a, b in zip(again, recorded)):
                raise SystemExit(f"{c['model_path']}: re-evaluated, test MAEs and validation score "
                                 f"{'/'.join(f'{x:.6g}' for x in again)} differ from its cell's "
                                 f"{'/'.join(f'{x:.6g}' for x in recorded)}")
        arms = [a for a in dict.fromkeys(c["arm"] for c in mine) if all((a, s) in val for s in seeds)]
        ranked = sorted(arms, key=lambda a: statistics.mean(val[a, s].score(*weights) for s in seeds))

        def blend(k: int, where: dict) -> list[StructureErrors]:
            return [blended(where, ranked[:k], s) for s in seeds]

        val_score = blend_scores(val, ranked[:args.max_k or len(ranked)], seeds, weights)  # as the pipeline does
        best_k = min(val_score, key=val_score.get)
        rows = {"auto": blend(1, test), "blend": blend(best_k, test), "top-2": blend(2, test), "top-3": blend(3, test)}
        rows.update({arm: [test[arm, s] for s in seeds] for arm in ("baseline", "delta") if arm in arms})
        base = [maes(e) for e in rows.get("baseline", [])]
        print(f"\n{fraction:g} of the DFT labels: arms by mean validation score {ranked}; blend validation score "
              + ", ".join(f"k={k} {v:.3g}" for k, v in val_score.items()) + f" -> k={best_k}")
        for name, errs in rows.items():
            m = [maes(e) for e in errs]
            totals.setdefault(name, []).append((statistics.mean(x[0] for x in m), statistics.mean(x[1] for x in m)))
            if len(base) > 1:
                spread = [statistics.stdev(b[i] for b in base) for i in (0, 1)]
                counts = worse.setdefault(name, [0, 0, 0])
                for x, b in zip(m, base):
                    counts[0] += x[0] > b[0] + spread[0]
                    counts[1] += x[1] > b[1] + spread[1]
                    counts[2] += 1
            print(f"  {name:9s} {mean_spread([x[0] for x in m])} meV/atom  {mean_spread([x[1] for x in m], 4)} eV/Å")
        snap = [c for c in cells if c["fraction"] == fraction and c["arm"] == "snap" and c["status"] != "failed"]
        if snap:
            print(f"  {'snap':9s} {mean_spread([c['test_energy_mae'] for c in snap])} meV/atom  "
                  f"{mean_spread([c['test_force_mae'] for c in snap], 4)} eV/Å")
            totals.setdefault("snap", []).append((statistics.mean(c["test_energy_mae"] for c in snap),
                                                  statistics.mean(c["test_force_mae"] for c in snap)))
    print("\nmean over the fractions, energy meV/atom / forces eV/Å; cells worse than the baseline's by more than "
          "its seed spread (energy / forces):")
    for name, values in totals.items():
        w = worse.get(name)
        print(f"  {name:9s} {statistics.mean(v[0] for v in values):.2f} / {statistics.mean(v[1] for v in values):.4f}"
              + (f"   {w[0]} / {w[1]} of {w[2]}" if w else ""))


if __name__ == "__main__":
    main()
