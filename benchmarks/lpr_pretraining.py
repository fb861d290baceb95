"""Does EIP pretraining make the DFT head's local energies more rigid? LPR of baseline vs transfer cells.

For a finished pipeline (default pipelines/si.yaml) and each low DFT fraction and seed: the
baseline and transfer cells' DFT heads, the cell's DFT-labelled training structures (the split
the cell trained on), and the local prediction rigidity (eip2nn.diagnostics.lpr, last-layer
approximation, the pipeline's loss weights) of every atom of the test set. Prints, per arm and
fraction, the median LPR over test atoms (mean ± std over seeds, 1/eV²), its 10th percentile,
and the median per test group (the pipeline's `lpr: true` step, eip2nn.pipeline.rigidity, whose
per-stage lpr.json it reads or writes). Only finished cells are used; a missing one is reported.

Usage: python benchmarks/lpr_pretraining.py [--pipeline pipelines/si.yaml] [--fractions 0.05 0.1]
                                            [--set model.cutoff=4.8 ...]  (pipeline overrides)
"""

from __future__ import annotations

import argparse

from eip2nn.pipeline.config import load_pipeline
from eip2nn.pipeline.report import CellResult
from eip2nn.pipeline.rigidity import cell_rigidity, rigidity_markdown
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
    rows, splits = [], {}
    for fraction in args.fractions:
        for seed in pipe.study.seeds:
            for arm in args.arms:
                pretrained = ""
                if arm in ("transfer", "both"):
                    pre = finished_stage(pretrain_config(pipe, seed))
                    pretrained = str(pre.model_path) if pre else ""
                done = finished_stage(cell_config(pipe, arm, fraction, seed, pretrained))
                if done is None:
                    print(f"{arm} f={fraction:g} seed={seed}: not finished, left out")
                    continue
                # the pipeline's own LPR step (pipeline.rigidity), kept in the stage folder as `lpr: true` keeps it
                cell = CellResult(arm, fraction, seed, "finished", model_path=str(done.model_path))
                rows.append(cell_rigidity(pipe, cell, splits=splits))
                print(f"{arm} f={fraction:g} seed={seed}: median LPR {rows[-1].median:.3g} 1/eV² over the test atoms",
                      flush=True)
    print(f"\n{args.pipeline}: LPR of the DFT head on the test atoms, 1/eV², mean ± std over seeds\n")
    print(rigidity_markdown(rows, args.arms))


if __name__ == "__main__":
    main()
