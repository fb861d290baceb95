"""The ``auto`` arm: per cell (DFT fraction × seed), the eip2nn arm with the lowest validation score.

Only the validation part decides — the DFT-labelled validation structures every
arm of the cell shares — never the test set. The score is the training loss's
own measure on those labels, w_E·RMSE(ΔE/n)² + w_F·RMSE(ΔF)², so the choice
weighs energies and forces as training does. The SNAP reference is not a
candidate: auto is eip2nn's answer, to be compared with it.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

from eip2nn.pipeline.config import NN_ARMS
from eip2nn.pipeline.report import CellResult


def validation_score(energy_rmse_mev: float, force_rmse: float, energy_weight: float, force_weight: float) -> float:
    """w_E·(E RMSE in eV/atom)² + w_F·(F RMSE in eV/Å)²; NaN parts count as 0 unless both are NaN."""
    parts = [(energy_weight, energy_rmse_mev / 1000.0), (force_weight, force_rmse)]
    if all(math.isnan(x) for _, x in parts):
        return math.nan
    return sum(w * x * x for w, x in parts if not math.isnan(x) and w > 0)


def choose(cells: list[CellResult], candidates: tuple[str, ...] = NN_ARMS) -> CellResult:
    """The auto cell of one fraction and seed: a copy of the finished cell among ``candidates`` (eip2nn arms and
    their variants) with the lowest ``val_score``."""
    if not cells:
        raise ValueError("auto: no cells to choose from")
    fraction, seed = cells[0].fraction, cells[0].seed
    candidates = [c for c in cells if c.ok and c.arm in candidates and not math.isnan(c.val_score)]
    if not candidates:
        why = "; ".join(f"{c.arm}: {c.error or 'no validation score'}" for c in cells) or "no arm ran"
        return CellResult("auto", fraction, seed, "failed", error=f"nothing to choose from ({why})")
    best = min(candidates, key=lambda c: c.val_score)
    return dataclasses.replace(best, arm="auto", chose=best.arm)


def choice_counts(cells: list[CellResult], fraction: float) -> str:
    """'transfer 2, baseline 1': how often auto chose each arm at ``fraction``."""
    counts = Counter(c.chose for c in cells if c.arm == "auto" and c.fraction == fraction and c.ok)
    return ", ".join(f"{arm} {n}" for arm, n in counts.most_common())
