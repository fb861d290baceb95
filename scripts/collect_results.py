"""Copy finished pipelines' reports into docs/results/ and print one compact results table per pipeline (for docs/results.md).

Usage: python scripts/collect_results.py si-full mo-full ...   (names under outputs/pipelines/)
       python scripts/collect_results.py --so-far ni-full     (a pipeline still running: its
       ``eip2nn pipeline report`` tables from outputs/pipelines/<name>/so_far/, as <name>-so-far_*)
       python scripts/collect_results.py si-force-trial --as si-committee   (one pipeline, under another name:
       trials that share an output folder)

For each pipeline it copies ``results.md``, ``results.csv``, ``cells.csv`` and ``learning_curve.png`` to
``docs/results/<name>_results.md`` / ``_results.csv`` / ``_cells.csv`` / ``_learning_curve.png``
(``tests/test_docs_results.py`` checks the tables against the cells) and prints two
markdown tables (test energy MAE in meV/atom, force MAE in eV/Å): one row per
DFT fraction, one column per arm, mean ± spread over seeds with the change
against the baseline in %. It reads only what ``eip2nn pipeline run`` wrote.
"""

from __future__ import annotations

import argparse
import csv
import math
import shutil
from pathlib import Path

from eip2nn.pipeline.config import ARMS

ROOT = Path(__file__).resolve().parent.parent


def _cell(row: dict | None, key: str, digits: int, gain_key: str) -> str:
    if row is None:
        return "–"
    mean, spread = float(row[f"{key}_mean"]), float(row[f"{key}_spread"])
    text = f"{mean:.{digits}f} ± {spread:.{digits}f}"
    gain = float(row[gain_key])
    return text if math.isnan(gain) else f"{text} ({gain:+.0f}%)"


def compact_table(results_csv: Path, quantity: str) -> str:
    """One row per DFT fraction, one column per arm; quantity "energy" (meV/atom) or "forces" (eV/Å)."""
    key, digits, gain_key, title = {
        "energy": ("test_energy_mae_meV_atom", 1, "energy_improvement_pct", "test energy MAE, meV/atom"),
        "forces": ("test_force_mae_eV_A", 3, "force_improvement_pct", "test force MAE, eV/Å")}[quantity]
    with open(results_csv) as fh:
        rows = {(r["arm"], float(r["dft_fraction"])): r for r in csv.DictReader(fh)}
    fractions = sorted({f for _, f in rows})
    present = {arm for arm, _ in rows}
    arms = [a for a in ARMS if a in present] + sorted(present - set(ARMS))  # then variants
    head = [f"DFT fraction (labels): {title}"] + arms
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for f in fractions:
        base = rows.get(("baseline", f))
        labels = f"{f:g} ({float(base['n_dft_labels']):.0f})" if base else f"{f:g}"
        lines.append("| " + " | ".join([labels] + [_cell(rows.get((a, f)), key, digits, gain_key) for a in arms]) + " |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("names", nargs="+", help="pipeline names (folders under outputs/pipelines/)")
    p.add_argument("--so-far", action="store_true",
                   help="the tables of the stages finished so far (eip2nn pipeline report), not a finished run's")
    p.add_argument("--as", dest="as_name", metavar="NAME",
                   help="with one pipeline: the name its files get in docs/results/ (default: its own)")
    args = p.parse_args()
    if args.as_name and len(args.names) != 1:
        raise SystemExit("--as names one pipeline's files: give one pipeline")
    target = ROOT / "docs" / "results"
    target.mkdir(parents=True, exist_ok=True)
    for name in args.names:
        src = ROOT / "outputs" / "pipelines" / name / ("so_far" if args.so_far else "")
        if not (src / "results.csv").is_file():
            raise SystemExit(f"{src}/results.csv not found: run " + (
                "eip2nn pipeline report" if args.so_far else "the pipeline") + " first")
        for file in ("results.md", "results.csv", "cells.csv", "learning_curve.png"):
            shutil.copyfile(src / file, target / f"{args.as_name or name}{'-so-far' if args.so_far else ''}_{file}")
        print(f"## {name}\n")
        for quantity in ("energy", "forces"):
            print(compact_table(src / "results.csv", quantity) + "\n")


if __name__ == "__main__":
    main()
