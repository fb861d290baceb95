"""How `auto` should choose: each seed by its own validation part (``per_seed``) or one arm per fraction by the
validation score averaged over the seeds' splits (``mean_over_seeds``). Both choices, side by side, on the finished
full pipelines.

No training: `auto` is a function of the other arms' cells, so both choices are made afresh, with the library's own
``choose_for_fraction``, from the cells each pipeline wrote (``docs/results/<name>_cells.csv``; the auto rows in
them are ignored). Only validation scores choose; the test errors only score the choice.

Per pipeline it prints, for each choice: the mean test energy MAE (meV/atom) per DFT fraction, its mean over the
fractions and the force MAE (eV/Å) likewise (per fraction on the line below), how many of the cells are worse than
the baseline's by more than the baseline's seed spread (sample std; energy / forces), what was chosen, and, for
comparison, each arm's own mean.

    python benchmarks/auto_choice.py                  # si-full mo-full cu-full ni-full, those present
    python benchmarks/auto_choice.py cu-full
    python benchmarks/auto_choice.py --energy-weight 10   # rescore: w_E (E MAE)² + 0.1 (F MAE)², validation MAEs
    python benchmarks/auto_choice.py si-full --with si-committee   # a trial's variants among the candidates

``--with`` adds the cells of trial pipelines run on the same data, splits and seeds (a committee variant, say) to
each pipeline's candidates, as if the pipeline had run them; the cells the two share must agree (same test errors),
which shows the trial reproduced the pipeline.

``--energy-weight`` asks whether weighing energies more in the score would choose better. The cells keep the
validation MAEs but not the RMSEs the pipeline scores with, so the rescored choice uses the MAEs.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import math
import statistics
from collections import Counter
from pathlib import Path

from eip2nn.pipeline.auto import choose_for_fraction
from eip2nn.pipeline.config import AUTO_CHOICES
from eip2nn.pipeline.report import CellResult

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
NO_NETWORK = ("snap", "auto")


def _float(text: str) -> float:
    return float(text) if text not in ("", None) else math.nan


def read_cells(path: Path) -> list[CellResult]:
    """The finished cells of a pipeline's cells.csv, auto rows left out."""
    with open(path) as fh:
        return [CellResult(r["arm"], float(r["dft_fraction"]), int(r["seed"]), r["status"], int(r["n_dft_labels"] or 0),
                           _float(r["test_energy_mae_meV_atom"]), _float(r["test_force_mae_eV_A"]),
                           _float(r["val_energy_mae_meV_atom"]), val_force_mae=_float(r["val_force_mae_eV_A"]),
                           val_score=_float(r["val_score"]))
                for r in csv.DictReader(fh) if r["arm"] != "auto" and r["status"] != "failed"]


def _mean(values: list[float]) -> float:
    return statistics.mean(values) if values else math.nan


def rescored(cells: list[CellResult], energy_weight: float) -> list[CellResult]:
    """Cells whose validation score is energy_weight·(E MAE, eV/atom)² + 0.1·(F MAE, eV/Å)²."""
    return [dataclasses.replace(c, val_score=energy_weight * (c.val_energy_mae / 1000.0) ** 2
                                + 0.1 * c.val_force_mae ** 2) for c in cells]


def merged(cells: list[CellResult], extra: list[CellResult], source: str) -> list[CellResult]:
    """cells plus the cells of extra that cells lacks; a cell in both must have the same test errors."""
    mine = {(c.arm, c.fraction, c.seed): c for c in cells}
    added = []
    for c in extra:
        known = mine.get((c.arm, c.fraction, c.seed))
        if known is None:
            added.append(c)
        elif not (math.isclose(known.test_energy_mae, c.test_energy_mae, rel_tol=1e-6)
                  and math.isclose(known.test_force_mae, c.test_force_mae, rel_tol=1e-6)):
            raise SystemExit(f"{source}: cell {c.arm} f={c.fraction:g} seed={c.seed} differs from the pipeline's "
                             f"({c.test_energy_mae:.4f} vs {known.test_energy_mae:.4f} meV/atom): not the same run")
    return cells + added


def compare(name: str, energy_weight: float | None = None, extra: tuple[str, ...] = ()) -> str:
    cells = read_cells(RESULTS / f"{name}_cells.csv")
    for other in extra:
        cells = merged(cells, read_cells(RESULTS / f"{other}_cells.csv"), f"{other}_cells.csv")
    if energy_weight is not None:
        cells = rescored(cells, energy_weight)
    fractions = sorted({c.fraction for c in cells})
    candidates = tuple(sorted({c.arm for c in cells} - set(NO_NETWORK)))
    cell = {(c.arm, c.fraction, c.seed): c for c in cells}
    score = ("the pipeline's validation score" if energy_weight is None
             else f"rescored: {energy_weight:g}·(E MAE)² + 0.1·(F MAE)² on validation")
    with_ = f" + {', '.join(extra)}" if extra else ""
    lines = [f"== {name}{with_}: candidates {', '.join(candidates)}; fractions {fractions}; {score}",
             f"{'choice':21s} {'test E MAE per fraction, meV/atom':44s} {'mean E':>7s} {'mean F':>7s} "
             f"{'worse than baseline+spread (E/F)':>33s}  chosen"]
    for how in (h for h in AUTO_CHOICES if h != "blend"):  # blend needs the models: blend_arms.py
        per_fraction, forces_per_fraction, forces, worse_e, worse_f, chosen = [], [], [], 0, 0, Counter()
        for f in fractions:
            autos, _ = choose_for_fraction([c for c in cells if c.fraction == f], candidates, how)
            base = [c for c in cells if c.arm == "baseline" and c.fraction == f]
            spread_e = statistics.stdev([c.test_energy_mae for c in base])
            spread_f = statistics.stdev([c.test_force_mae for c in base])
            for a in autos:
                chosen[a.chose] += 1
                mine = cell[("baseline", f, a.seed)]
                worse_e += a.test_energy_mae > mine.test_energy_mae + spread_e
                worse_f += a.test_force_mae > mine.test_force_mae + spread_f
                forces.append(a.test_force_mae)
            per_fraction.append(_mean([a.test_energy_mae for a in autos]))
            forces_per_fraction.append(_mean([a.test_force_mae for a in autos]))
        text = " ".join(f"{x:6.2f}" for x in per_fraction)
        lines.append(f"{'auto ' + how:21s} {text:44s} {_mean(per_fraction):7.2f} {_mean(forces):7.4f} "
                     f"{f'{worse_e} / {worse_f} of {len(forces)}':>33s}  "
                     + ", ".join(f"{arm} {n}" for arm, n in chosen.most_common()))
        lines.append(f"{'  forces, eV/Å':21s} " + " ".join(f"{x:6.4f}" for x in forces_per_fraction))
    for arm in candidates + ("snap",):
        # weak and both are not run where every structure has its DFT label: there they are baseline and transfer
        stand_in = {"weak": "baseline", "both": "transfer"}.get(arm, arm)
        mine = {f: [c for c in cells if c.arm == arm and c.fraction == f]
                or [c for c in cells if c.arm == stand_in and c.fraction == f] for f in fractions}
        text = " ".join(f"{_mean([c.test_energy_mae for c in mine[f]]):6.2f}" for f in fractions)
        note = "" if all(c.arm == arm for f in fractions for c in mine[f]) else f"  (where not run: {stand_in}'s)"
        lines.append(f"{arm:21s} {text:44s} {_mean([_mean([c.test_energy_mae for c in mine[f]]) for f in fractions]):7.2f} "
                     f"{_mean([c.test_force_mae for f in fractions for c in mine[f]]):7.4f}{note}")
        lines.append(f"{'  forces, eV/Å':21s} " + " ".join(f"{_mean([c.test_force_mae for c in mine[f]]):6.4f}"
                                                          for f in fractions))
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="*", default=["si-full", "mo-full", "cu-full", "ni-full"],
                   help="pipelines with docs/results/<name>_cells.csv")
    p.add_argument("--energy-weight", type=float, default=None,
                   help="rescore with this energy weight on validation MAEs (default: the pipeline's own score)")
    p.add_argument("--with", dest="extra", nargs="+", default=(), metavar="TRIAL",
                   help="trial pipelines (docs/results/<trial>_cells.csv) whose cells join every pipeline's candidates")
    args = p.parse_args()
    for other in args.extra:
        if not (RESULTS / f"{other}_cells.csv").is_file():
            raise SystemExit(f"--with {other}: no {RESULTS / f'{other}_cells.csv'} (collect the trial first: "
                             f"python scripts/collect_results.py <its name> --as {other})")
    for name in args.names:
        if (RESULTS / f"{name}_cells.csv").is_file():
            print(compare(name, args.energy_weight, tuple(args.extra)), end="\n\n")
        else:
            print(f"== {name}: no {RESULTS / f'{name}_cells.csv'} (pipeline not collected)\n")


if __name__ == "__main__":
    main()
