"""The auto arm's choice: validation only, eip2nn arms only, failures said."""

import math

import pytest

from eip2nn.pipeline.auto import choice_counts, choose, validation_score
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
