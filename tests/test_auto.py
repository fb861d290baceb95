"""The auto arm's choice: validation only, eip2nn arms only, failures said."""

import math

import pytest

from eip2nn.pipeline.auto import choice_counts, choose, choose_for_fraction, validation_score
from eip2nn.pipeline.report import CellResult


def cell(arm, val_score, test_e, status="finished", seed=0):
    return CellResult(arm, 0.1, seed, status, 20, test_e, 0.1, 5.0, 1.0, f"run-{arm}", val_score=val_score)


def test_score_is_the_training_loss_on_validation():
    # w_E (E RMSE / 1000)² + w_F F RMSE², E in meV/atom, F in eV/Å
    assert validation_score(10.0, 0.2, 1.0, 0.1) == pytest.approx(1e-4 + 0.1 * 0.04)
    assert validation_score(10.0, math.nan, 1.0, 0.1) == pytest.approx(1e-4)  # no force labels: energies alone
    assert math.isnan(validation_score(math.nan, math.nan, 1.0, 0.1))


def test_auto_takes_the_lowest_validation_score_never_the_reference_nor_the_test_set():
    cells = [cell("baseline", 3.0, 9.0), cell("transfer", 2.0, 12.0), cell("snap", 0.5, 1.0),
             cell("weak", 1.0, 5.0, status="failed"), cell("delta", math.nan, 0.1)]
    auto = choose(cells)
    assert (auto.arm, auto.chose, auto.run_id, auto.test_energy_mae) == ("auto", "transfer", "run-transfer", 12.0)
    assert choice_counts([auto, cell("baseline", 1, 1)], 0.1) == "transfer 1"


def test_auto_with_nothing_to_choose_is_a_failed_cell_that_says_why():
    auto = choose([CellResult("baseline", 0.1, 0, "failed", error="ValueError: boom"), cell("snap", 0.5, 1.0)])
    assert auto.status == "failed" and "baseline: ValueError: boom" in auto.error


def test_mean_over_seeds_takes_one_arm_per_fraction_by_the_mean_validation_score():
    # transfer wins seed 0 by a little, baseline wins seed 1 by a lot: the mean picks baseline for both seeds
    cells = [cell("baseline", 3.0, 9.0, seed=0), cell("transfer", 2.9, 12.0, seed=0),
             cell("baseline", 1.0, 8.0, seed=1), cell("transfer", 4.0, 7.0, seed=1), cell("snap", 0.1, 1.0, seed=1)]
    autos, why = choose_for_fraction(cells)
    assert [(a.seed, a.chose, a.test_energy_mae) for a in autos] == [(0, "baseline", 9.0), (1, "baseline", 8.0)]
    assert "chose baseline for every seed" in why and "baseline 2, transfer 3.45" in why
    per_seed, why = choose_for_fraction(cells, how="per_seed")
    assert [a.chose for a in per_seed] == ["transfer", "baseline"] and "each seed by its own" in why


def test_mean_over_seeds_ranks_only_arms_scored_in_every_seed_and_falls_back_per_seed():
    cells = [cell("baseline", 3.0, 9.0, seed=0), cell("delta", 0.5, 2.0, seed=0),
             cell("baseline", 1.0, 8.0, seed=1), cell("delta", 0.5, 2.0, seed=1, status="failed")]
    autos, _ = choose_for_fraction(cells)  # delta failed in seed 1: not a candidate, however good in seed 0
    assert [a.chose for a in autos] == ["baseline", "baseline"]
    cells = [cell("baseline", 3.0, 9.0, seed=0), cell("delta", 1.0, 2.0, seed=1)]
    autos, why = choose_for_fraction(cells)
    assert [a.chose for a in autos] == ["baseline", "delta"] and "no arm has a validation score in every seed" in why
    with pytest.raises(ValueError, match="auto choice 'best'"):
        choose_for_fraction(cells, how="best")


def test_mean_over_seeds_leaves_a_seed_without_scores_to_say_why():
    cells = [cell("baseline", 3.0, 9.0, seed=0), cell("delta", 1.0, 2.0, seed=0),
             cell("baseline", 1.0, 8.0, seed=1), cell("delta", 1.5, 2.0, seed=1),
             CellResult("baseline", 0.1, 2, "failed", error="ValueError: boom")]
    autos, why = choose_for_fraction(cells)
    assert [(a.seed, a.chose) for a in autos[:2]] == [(0, "delta"), (1, "delta")] and "over 2 seeds" in why
    assert autos[2].seed == 2 and autos[2].status == "failed" and "baseline: ValueError: boom" in autos[2].error
