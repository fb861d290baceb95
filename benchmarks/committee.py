"""A committee of networks against its members: test errors of each member and of their average.

The members are finished cells of a pipeline, the same DFT fraction and seed (so the same split and labels), e.g.
variants that differ only in ``train.seed`` (the initial weights). The committee predicts the members' mean energy
and forces. No training here: run the pipeline first.

    eip2nn pipeline run pipelines/trials/si_committee.yaml --set "study.seeds=[0]"
    python benchmarks/committee.py pipelines/trials/si_committee.yaml --members init100 init200 init300 \\
        --fraction 1 --seed 0

Prints per member and for the committee the test energy MAE (meV/atom) and force MAE (eV/Å), the members'
mean ± sample std, and the pipeline's ``snap`` cell of the same fraction and seed when it has one (the reference).
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

from eip2nn.calculator import EIP2NNCalculator
from eip2nn.data.protocol import make_split
from eip2nn.nn.model import DFT_HEAD
from eip2nn.pipeline.config import load_pipeline
from eip2nn.pipeline.runner import cell_config
from eip2nn.training.metrics import Parity, metrics_of, predict
from eip2nn.training.samples import make_samples
from eip2nn.training.stages import finished_stage


def committee_parity(parities: list[Parity]) -> Parity:
    """The members' mean prediction; every member predicted the same structures in the same order."""
    first = parities[0]
    return Parity(first.energy_ref, np.mean([p.energy_pred for p in parities], axis=0),
                  first.force_ref, np.mean([p.force_pred for p in parities], axis=0))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pipeline", help="pipeline YAML whose cells are the members")
    p.add_argument("--members", nargs="+", required=True, help="arms or variants of that pipeline")
    p.add_argument("--fraction", type=float, required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for eip2nn pipeline run")
    args = p.parse_args()
    pipe = load_pipeline(args.pipeline, args.set)
    test = make_split(pipe.data).test
    rows, parities = [], []
    for arm in args.members:
        done = finished_stage(cell_config(pipe, arm, args.fraction, args.seed))
        if done is None:
            raise SystemExit(f"{arm} f={args.fraction:g} seed={args.seed} has not finished: run the pipeline first")
        model = EIP2NNCalculator.load(str(done.model_path)).model
        if model.reference_eip:
            raise SystemExit(f"{arm}: a Δ model; this benchmark averages plain networks")
        parities.append(predict(model, make_samples(model, test, [DFT_HEAD]), DFT_HEAD))
        m = metrics_of(parities[-1])
        stored = done.metrics["test"]  # the pipeline's own numbers for this cell: the same predictions
        if abs(m.energy_mae - stored.energy_mae) > 1e-6 or abs(m.force_mae - stored.force_mae) > 1e-6:
            raise SystemExit(f"{arm}: scored {m.energy_mae:.6f} / {m.force_mae:.6f} here, "
                             f"{stored.energy_mae:.6f} / {stored.force_mae:.6f} in the pipeline")
        rows.append((arm, m.energy_mae, m.force_mae))
    print(f"{pipe.name}: {pipe.data.name}, DFT fraction {args.fraction:g}, seed {args.seed}, "
          f"{len(test)} test structures")
    print(f"{'model':28s} {'E MAE meV/atom':>15s} {'F MAE eV/Å':>11s}")
    for arm, e, f in rows:
        print(f"{arm:28s} {e:15.3f} {f:11.4f}")
    es, fs = [r[1] for r in rows], [r[2] for r in rows]
    print(f"{'members, mean ± std':28s} {statistics.mean(es):8.3f} ± {statistics.stdev(es):4.2f} "
          f"{statistics.mean(fs):7.4f} ± {statistics.stdev(fs):.4f}")
    c = metrics_of(committee_parity(parities))
    print(f"{f'committee of {len(rows)}':28s} {c.energy_mae:15.3f} {c.force_mae:11.4f}")
    if "snap" in pipe.arms:
        snap = finished_stage(cell_config(pipe, "snap", args.fraction, args.seed))
        if snap is not None:
            m = snap.metrics["test"]
            print(f"{'snap (reference)':28s} {m.energy_mae:15.3f} {m.force_mae:11.4f}")


if __name__ == "__main__":
    main()
