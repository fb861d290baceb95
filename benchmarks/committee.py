"""A committee of networks against its members: test errors of each member and of their average.

The members are finished cells of a pipeline, the same DFT fraction and seed (so the same split and labels), e.g.
variants that differ only in ``train.seed`` (the initial weights). The committee predicts the members' mean energy
and forces. No training here: run the pipeline first.

    eip2nn pipeline run pipelines/trials/si_committee.yaml --set "study.seeds=[0]"
    python benchmarks/committee.py pipelines/trials/si_committee.yaml --members init100 init200 init300 \\
        --fraction 1 --seeds 0

Prints per split (pipeline seed) the test energy MAE (meV/atom) and force MAE (eV/Å) of each member, of the
committee and of the pipeline's ``snap`` cell of the same fraction and seed when it has one (the reference); then
each one's mean ± sample std over the splits (the members' over every member of every split).
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


def one_split(pipe, members: list[str], fraction: float, seed: int, test) -> dict[str, tuple[float, float]]:
    """{model: (test energy MAE meV/atom, force MAE eV/Å)} for each member, "committee" and, when the pipeline
    has it, "snap"; the members' numbers are checked against the pipeline's own."""
    out, parities = {}, []
    for arm in members:
        done = finished_stage(cell_config(pipe, arm, fraction, seed))
        if done is None:
            raise SystemExit(f"{arm} f={fraction:g} seed={seed} has not finished: run the pipeline first")
        model = EIP2NNCalculator.load(str(done.model_path)).model
        if model.reference_eip:
            raise SystemExit(f"{arm}: a Δ model; this benchmark averages plain networks")
        parities.append(predict(model, make_samples(model, test, [DFT_HEAD]), DFT_HEAD))
        m = metrics_of(parities[-1])
        stored = done.metrics["test"]  # the pipeline's own numbers for this cell: the same predictions
        if abs(m.energy_mae - stored.energy_mae) > 1e-6 or abs(m.force_mae - stored.force_mae) > 1e-6:
            raise SystemExit(f"{arm}: scored {m.energy_mae:.6f} / {m.force_mae:.6f} here, "
                             f"{stored.energy_mae:.6f} / {stored.force_mae:.6f} in the pipeline")
        out[arm] = (m.energy_mae, m.force_mae)
    c = metrics_of(committee_parity(parities))
    out["committee"] = (c.energy_mae, c.force_mae)
    snap = finished_stage(cell_config(pipe, "snap", fraction, seed)) if "snap" in pipe.arms else None
    if snap is not None:
        out["snap"] = (snap.metrics["test"].energy_mae, snap.metrics["test"].force_mae)
    return out


def _ms(values: list[float], digits: int) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.{digits}f} ± {spread:.{digits}f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("pipeline", help="pipeline YAML whose cells are the members")
    p.add_argument("--members", nargs="+", required=True, help="arms or variants of that pipeline")
    p.add_argument("--fraction", type=float, required=True)
    p.add_argument("--seeds", type=int, nargs="+", required=True, help="the splits (pipeline seeds) to score")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="as for eip2nn pipeline run")
    args = p.parse_args()
    pipe = load_pipeline(args.pipeline, args.set)
    test = make_split(pipe.data).test
    splits = {}
    for seed in args.seeds:
        splits[seed] = scores = one_split(pipe, args.members, args.fraction, seed, test)
        print(f"{pipe.name}: {pipe.data.name}, DFT fraction {args.fraction:g}, seed {seed}, "
              f"{len(test)} test structures")
        print(f"{'model':28s} {'E MAE meV/atom':>15s} {'F MAE eV/Å':>11s}")
        for name, (e, f) in scores.items():
            print(f"{name + (' (reference)' if name == 'snap' else ''):28s} {e:15.3f} {f:11.4f}")
        print()
    columns = {"members (each)": [splits[s][a] for s in args.seeds for a in args.members],
               f"committee of {len(args.members)}": [splits[s]["committee"] for s in args.seeds]}
    if all("snap" in splits[s] for s in args.seeds):
        columns["snap (reference)"] = [splits[s]["snap"] for s in args.seeds]
    print(f"over seeds {args.seeds}: mean ± sample std")
    for name, values in columns.items():
        print(f"{name:28s} {_ms([v[0] for v in values], 3):>17s} meV/atom {_ms([v[1] for v in values], 4):>17s} eV/Å")


if __name__ == "__main__":
    main()
