"""Does `eip2nn suggest` pick better structures to label than chance?

For each element and seed: the pipeline's split at 5% DFT (seed = split
seed: ~10 labelled structures, the rest of the training part an unlabelled
pool). Add K pool structures (with their real DFT labels, as if computed)
chosen by :func:`eip2nn.diagnostics.suggest.suggest`, or K chosen at random
(seeded), or none; train the baseline network on the result (the full
pipeline's model and training settings, `pipelines/<element>.yaml`; 10% of
the file held out for validation) and score it on the dataset's own test
set. Prints test energy (meV/atom) and force (eV/Å) MAE, mean ± sample std
over seeds. Goal (issue): suggested beats random at equal K.

With ``--committee N`` a fourth strategy, ``suggested + committee``: a committee of N baseline networks
(``train.committee``) is first trained on the labelled structures and given to ``suggest`` as its model, which
adds the signals ``model_gap`` and ``model_spread`` (where the networks part ways).

Usage: python benchmarks/suggest_vs_random.py [--elements Si Mo] [--seeds 0 1 2] [--k 10] [--fraction 0.05]
    [--committee 3] [--weight SIGNAL=W] [--strategies suggested random] [--picks-only]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import yaml
from scipy.stats import wilcoxon
from stats import mean_spread

from eip2nn.calculator import EIP2NNCalculator
from eip2nn.data import load_dataset
from eip2nn.data.files import write_dft_extxyz
from eip2nn.data.protocol import DataConfig, Split, make_split
from eip2nn.diagnostics.suggest import suggest
from eip2nn.labelling.hashing import structure_hashes
from eip2nn.training.config import StageConfig
from eip2nn.training.stages import run_stage

ROOT = Path(__file__).resolve().parents[1]


def train(structures, test_file: Path, element: str, seed: int, folder: Path, labels: str,
          model_overrides: dict, committee: int = 1):
    """The finished baseline stage (a committee of ``committee`` networks) on ``structures``."""
    pipeline = yaml.safe_load((ROOT / "pipelines" / f"{element.lower()}.yaml").read_text())
    pipeline["model"].update(model_overrides)
    train_file = write_dft_extxyz(structures, folder / f"train-{len(structures)}-{seed}.extxyz")
    cfg = StageConfig.from_dict({
        "stage": "baseline", "output": str(folder / "runs"),
        "data": {"train": str(train_file), "test": str(test_file), "split_seed": seed, "labels": labels},
        "model": pipeline["model"], "train": {**pipeline["train"], "seed": seed, "committee": committee},
        "tracking": {"experiment": "benchmarks", "run_name": f"suggest-{element}-s{seed}-{train_file.stem}"}})
    return run_stage(cfg, log=lambda s: None)


def train_and_score(*args) -> tuple[float, float]:
    m = train(*args).metrics["test"]
    return m.energy_mae, m.force_mae


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elements", nargs="+", default=["Si", "Mo"])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--fraction", type=float, default=0.05)
    p.add_argument("--labels", default="outputs/labels.sqlite")
    p.add_argument("--output", default="outputs/benchmarks/suggest_vs_random.json")
    p.add_argument("--model", action="append", default=[], metavar="ELEMENT:KEY=VALUE",
                   help="change the pipeline's model setting for one element, e.g. Si:cutoff=4.8")
    p.add_argument("--committee", type=int, default=0, metavar="N",
                   help="also suggest with a committee of N networks trained on the labelled structures")
    p.add_argument("--weight", action="append", default=[], metavar="SIGNAL=W",
                   help="weight of an acquisition signal (eip2nn suggest --weight), e.g. energy_novelty=0")
    p.add_argument("--picks-only", action="store_true",
                   help="train nothing: count the added structures' groups (mlearn's `group`) per strategy")
    p.add_argument("--strategies", nargs="+", metavar="NAME",
                   help="train only these strategies (default: all): suggested, 'suggested + committee', random, none")
    args = p.parse_args()
    weights = {key: float(value) for key, _, value in (w.partition("=") for w in args.weight)}
    overrides: dict[str, dict] = {}
    for item in args.model:
        element, _, setting = item.partition(":")
        key, _, value = setting.partition("=")
        overrides.setdefault(element, {})[key] = yaml.safe_load(value)
    rows, groups = {}, {}
    with tempfile.TemporaryDirectory(prefix="eip2nn-suggest-") as tmp:
        folder = Path(tmp)
        for element in args.elements:
            test_file = write_dft_extxyz(load_dataset(f"mlearn/{element}/test"), folder / f"{element}-test.extxyz")
            for seed in args.seeds:
                low = make_split(DataConfig(dataset=f"mlearn/{element}", dft_fraction=args.fraction, split_seed=seed))
                full = make_split(DataConfig(dataset=f"mlearn/{element}", dft_fraction=1.0, split_seed=seed))
                truth = dict(zip(structure_hashes(full.train), full.train))
                labelled, pool = Split.labelled(low.train), Split.unlabelled(low.train)
                pool_hashes = structure_hashes(pool)
                picked = suggest(labelled, pool, low.species, args.labels, source_tag=low.source_tag,
                                 seed=seed, weights=weights).picked[:args.k]
                chosen = {"suggested": picked}
                if args.committee > 1:
                    committee = train(labelled, test_file, element, seed, folder, args.labels,
                                      overrides.get(element, {}), args.committee)
                    chosen["suggested + committee"] = suggest(
                        labelled, pool, low.species, args.labels, source_tag=low.source_tag, seed=seed, weights=weights,
                        model=EIP2NNCalculator.load(str(committee.model_path))).picked[:args.k]
                chosen |= {
                          "random": np.random.default_rng(seed).choice(len(pool), args.k, replace=False).tolist(),
                          "none": []}
                for strategy, indices in chosen.items():
                    if args.strategies and strategy not in args.strategies:
                        continue
                    added = [truth[pool_hashes[i]] for i in indices]
                    tally = groups.setdefault((element, strategy), Counter())
                    tally.update(a.info.get("group", "?") for a in added)
                    if args.picks_only:
                        continue
                    e, f = train_and_score(labelled + added, test_file, element, seed, folder, args.labels,
                                           overrides.get(element, {}))
                    rows.setdefault((element, strategy), []).append((e, f))
                    print(f"{element} seed {seed} {strategy}: {len(labelled)} + {len(added)} labels, "
                          f"test E MAE {e:.2f} meV/atom, F MAE {f:.3f} eV/Å", flush=True)
    print(f"\nthe added structures' groups, summed over seeds {args.seeds}:")
    for (element, strategy), tally in groups.items():
        if strategy != "none":
            print(f"  {element} {strategy}: " + ", ".join(f"{g} {n}" for g, n in sorted(tally.items())))
    if args.picks_only:
        return
    print(f"\n{args.fraction:.0%} DFT labels + K = {args.k} more; seeds {args.seeds}; test MAE mean ± std over seeds\n")
    print("| element | added structures | E MAE (meV/atom) | F MAE (eV/Å) |")
    print("|---|---|---|---|")
    for (element, strategy), values in rows.items():
        print(f"| {element} | {strategy if strategy != 'none' else 'none (5% only)'} | "
              f"{mean_spread([v[0] for v in values])} | {mean_spread([v[1] for v in values], 3)} |")
    # paired by split: each split's suggested and random picks start from the same labelled structures
    for element in args.elements:
        ours, theirs = rows.get((element, "suggested")), rows.get((element, "random"))
        if not ours or not theirs or len(ours) < 2:
            continue
        for j, (what, unit) in enumerate((("energy", "meV/atom"), ("forces", "eV/Å"))):
            d = np.array([a[j] - b[j] for a, b in zip(ours, theirs)])
            p_value = wilcoxon(d).pvalue if np.any(d != 0) else 1.0
            print(f"{element} {what}, suggested − random, paired by split: {d.mean():+.4g} ± "
                  f"{d.std(ddof=1) / np.sqrt(len(d)):.2g} {unit} (mean ± standard error), suggested lower in "
                  f"{int((d < 0).sum())} of {len(d)} splits, Wilcoxon signed-rank p = {p_value:.2f}")
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps({f"{e}/{s}": v for (e, s), v in rows.items()}, indent=2))


if __name__ == "__main__":
    main()
