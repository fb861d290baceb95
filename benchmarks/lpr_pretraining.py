"""Does EIP pretraining make the DFT head's local energies more rigid? LPR of baseline vs transfer cells.

For a finished pipeline (default pipelines/si.yaml) and each low DFT fraction and seed: the
baseline and transfer cells' DFT heads, the cell's DFT-labelled training structures (the split
the cell trained on), and the local prediction rigidity (eip2nn.diagnostics.lpr, last-layer
approximation, the pipeline's loss weights) of every atom of the test set. Prints, per arm and
fraction, the median LPR over test atoms (mean ± std over seeds, 1/eV²), its 10th percentile,
and the median per test group. Only finished cells are used; a missing one is reported.

Usage: python benchmarks/lpr_pretraining.py [--pipeline pipelines/si.yaml] [--fractions 0.05 0.1]
                                            [--set model.cutoff=4.8 ...]  (pipeline overrides)
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
from collections import defaultdict

import numpy as np

from eip2nn.data.protocol import Split, make_split
from eip2nn.diagnostics.lpr import local_prediction_rigidity
from eip2nn.keys import GROUP
from eip2nn.nn.checkpoint import load_model
from eip2nn.pipeline.config import load_pipeline
from eip2nn.pipeline.runner import cell_config, pretrain_config
from eip2nn.training.stages import finished_stage


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", default="pipelines/si.yaml")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--arms", nargs="+", default=["baseline", "transfer"])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a pipeline value, to find the cells of an earlier setting")
    args = p.parse_args()
    pipe = load_pipeline(args.pipeline, args.overrides)
    medians, lows, by_group = defaultdict(list), defaultdict(list), defaultdict(lambda: defaultdict(list))
    for fraction in args.fractions:
        for seed in pipe.study.seeds:
            split = make_split(dataclasses.replace(pipe.data, dft_fraction=fraction, split_seed=seed))
            train = Split.labelled(split.train)
            groups = np.concatenate([[str(a.info.get(GROUP, "-"))] * len(a) for a in split.test])
            for arm in args.arms:
                pretrained = ""
                if arm in ("transfer", "both"):
                    pre = finished_stage(pretrain_config(pipe, seed))
                    pretrained = str(pre.model_path) if pre else ""
                done = finished_stage(cell_config(pipe, arm, fraction, seed, pretrained))
                if done is None:
                    print(f"{arm} f={fraction:g} seed={seed}: not finished, left out")
                    continue
                model = load_model(done.model_path)
                lpr = local_prediction_rigidity(model, train, split.test, energy_weight=pipe.train.energy_weight,
                                                force_weight=pipe.train.force_weight).all_atoms
                medians[(arm, fraction)].append(float(np.median(lpr)))
                lows[(arm, fraction)].append(float(np.percentile(lpr, 10)))
                for g in sorted(set(groups)):
                    by_group[(arm, fraction)][g].append(float(np.median(lpr[groups == g])))
                print(f"{arm} f={fraction:g} seed={seed}: {len(train)} training structures, median LPR "
                      f"{medians[(arm, fraction)][-1]:.3g} 1/eV² over {len(lpr)} test atoms", flush=True)

    def ms(values: list[float]) -> str:
        return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}" if len(values) > 1 else f"{values[0]:.3g}"

    groups = sorted({g for d in by_group.values() for g in d})
    print(f"\n{args.pipeline}: LPR of the DFT head on the test atoms, 1/eV², mean ± std over seeds\n")
    print("| DFT fraction | arm | median LPR | 10th percentile | " + " | ".join(f"median, {g}" for g in groups) + " |")
    print("|---|---|---|---|" + "---|" * len(groups))
    for key in sorted(medians, key=lambda k: (k[1], args.arms.index(k[0]))):
        arm, fraction = key
        print(f"| {fraction:g} | {arm} | {ms(medians[key])} | {ms(lows[key])} | "
              + " | ".join(ms(by_group[key][g]) if by_group[key][g] else "-" for g in groups) + " |")


if __name__ == "__main__":
    main()
