"""The committed result tables (docs/results/<pipeline>_results.csv) follow from their cells (``_cells.csv``).

Every mean and spread is recomputed from the per-seed cells, every `auto` cell must
equal the cell of the arm it chose (same run, same numbers), and that arm must have
the lowest validation score of its fraction and seed (or, where the report says auto
averaged over the seeds, of its fraction) — so the published tables can be checked,
not just read.
"""

import csv
import math
import statistics
from pathlib import Path

import pytest

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
PIPELINES = sorted(p.name[: -len("_cells.csv")] for p in RESULTS.glob("*_cells.csv"))


def read(path: Path) -> list[dict]:
    with open(path) as fh:
        return list(csv.DictReader(fh))


def number(text: str) -> float:
    return float(text) if text not in ("", "nan") else math.nan


@pytest.mark.parametrize("name", PIPELINES)
def test_table_means_and_spreads_follow_from_the_cells(name):
    cells = [c for c in read(RESULTS / f"{name}_cells.csv") if c["status"] != "failed"]
    rows = read(RESULTS / f"{name}_results.csv")
    assert rows
    for r in rows:
        mine = [number(c["test_energy_mae_meV_atom"]) for c in cells
                if c["arm"] == r["arm"] and float(c["dft_fraction"]) == float(r["dft_fraction"])]
        assert len(mine) == int(r["n_seeds"])
        assert float(r["test_energy_mae_meV_atom_mean"]) == pytest.approx(statistics.mean(mine))
        assert float(r["test_energy_mae_meV_atom_spread"]) == pytest.approx(
            statistics.stdev(mine) if len(mine) > 1 else 0.0)


def auto_rule(name: str) -> str:
    """How the pipeline's auto chose, as its report says: "per_seed" (older reports), "mean_over_seeds" or
    "blend"."""
    heading = next((line for line in (RESULTS / f"{name}_results.md").read_text().splitlines()
                    if line.startswith("## What auto chose")), "")
    if "the mean of the top k arms" in heading:
        return "blend"
    return "mean_over_seeds" if "averaged over the seeds" in heading else "per_seed"


def mean_scores(fraction: list[dict]) -> dict[str, float]:
    """{arm: its validation score averaged over the seeds} for the arms scored in every seed of ``fraction``."""
    seeds = {c["seed"] for c in fraction}
    return {arm: statistics.mean(float(c["val_score"]) for c in fraction if c["arm"] == arm)
            for arm in {c["arm"] for c in fraction} if {c["seed"] for c in fraction if c["arm"] == arm} == seeds}


@pytest.mark.parametrize("name", [n for n in PIPELINES if any(
    c["arm"] == "auto" for c in read(RESULTS / f"{n}_cells.csv"))])
def test_auto_cells_are_the_arm_with_the_lowest_validation_score(name):
    cells = read(RESULTS / f"{name}_cells.csv")
    scored = [c for c in cells if c["arm"] not in ("auto", "snap") and c["status"] != "failed"
              and c["val_score"] not in ("", "nan")]
    rule = auto_rule(name)
    for auto in (c for c in cells if c["arm"] == "auto" and c["status"] != "failed"):
        fraction = [c for c in scored if c["dft_fraction"] == auto["dft_fraction"]]
        if rule == "blend" and " + " in auto["auto_chose"]:
            continue  # a blend: test_a_blended_auto_is_the_top_arms_and_no_worse_than_their_mean
        if rule != "per_seed":  # one arm per fraction: the lowest mean score among arms scored in every seed
            mean = mean_scores(fraction)
            arm = min(mean, key=mean.get)
            best = next(c for c in fraction if c["arm"] == arm and c["seed"] == auto["seed"])
        else:
            best = min((c for c in fraction if c["seed"] == auto["seed"]), key=lambda c: float(c["val_score"]))
        assert auto["auto_chose"] == best["arm"]
        assert auto["mlflow_run_id"] == best["mlflow_run_id"]
        assert auto["test_energy_mae_meV_atom"] == best["test_energy_mae_meV_atom"]


@pytest.mark.parametrize("name", [n for n in PIPELINES if auto_rule(n) == "blend"])
def test_a_blended_auto_is_the_top_arms_and_no_worse_than_their_mean(name):
    """A blend's members are the top k arms by mean validation score; its mean validation score is no higher
    than the best single arm's (k = 1 was a candidate); and, its errors being the mean of the members' errors
    structure by structure, its test MAEs are no higher than the mean of the members' MAEs."""
    cells = read(RESULTS / f"{name}_cells.csv")
    scored = [c for c in cells if c["arm"] not in ("auto", "snap") and c["status"] != "failed"
              and c["val_score"] not in ("", "nan")]
    blends = [c for c in cells if c["arm"] == "auto" and " + " in c["auto_chose"]]
    assert blends
    for fraction_key in {c["dft_fraction"] for c in blends}:
        fraction = [c for c in scored if c["dft_fraction"] == fraction_key]
        mine = [c for c in blends if c["dft_fraction"] == fraction_key]
        ranked = sorted(mean_scores(fraction).items(), key=lambda kv: kv[1])
        arms = mine[0]["auto_chose"].split(" + ")
        assert all(c["auto_chose"] == mine[0]["auto_chose"] for c in mine)
        assert arms == [arm for arm, _ in ranked[:len(arms)]]
        assert statistics.mean(float(c["val_score"]) for c in mine) <= ranked[0][1] * (1 + 1e-9)
        for auto in mine:
            members = [next(c for c in fraction if c["arm"] == arm and c["seed"] == auto["seed"]) for arm in arms]
            for key in ("test_energy_mae_meV_atom", "test_force_mae_eV_A"):
                assert float(auto[key]) <= statistics.mean(float(m[key]) for m in members) * (1 + 1e-9)


# trials run as a full pipeline with more variants: the cells they share with it must be the same runs' numbers
TRIALS = [(trial, full) for trial, full in [("si-committee", "si-full"), ("mo-delta-committee", "mo-full"),
                                             ("mo-cutoff", "mo-full"), ("mo-committee-blend", "mo-full"),
                                             ("ni-delta-committee", "ni-full"),
                                             ("cu-committee", "cu-full")]
          if (RESULTS / f"{trial}_cells.csv").is_file() and (RESULTS / f"{full}_cells.csv").is_file()]


@pytest.mark.parametrize(("trial", "full"), TRIALS)
def test_trials_reproduce_the_cells_they_share_with_their_pipeline(trial, full):
    key = ("arm", "dft_fraction", "seed")
    mine = {tuple(c[k] for k in key): c for c in read(RESULTS / f"{full}_cells.csv") if c["arm"] != "auto"}
    shared = [(c, mine[tuple(c[k] for k in key)]) for c in read(RESULTS / f"{trial}_cells.csv")
              if tuple(c[k] for k in key) in mine]
    assert shared
    for c, m in shared:
        for column in ("test_energy_mae_meV_atom", "test_force_mae_eV_A", "val_score"):
            assert number(c[column]) == pytest.approx(number(m[column]), rel=1e-9), (c["arm"], c["dft_fraction"], column)
