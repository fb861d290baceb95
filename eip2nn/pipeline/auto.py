"""The ``auto`` arm: per DFT fraction, the eip2nn arm with the lowest validation score.

Only validation parts decide — the DFT-labelled validation structures every
arm of a cell shares — never the test set. The score is the training loss's
own measure on those labels, w_E·RMSE(ΔE/n)² + w_F·RMSE(ΔF)², so the choice
weighs energies and forces as training does. The SNAP reference is not a
candidate: auto is eip2nn's answer, to be compared with it.

How (``study.auto_choice``):
- ``mean_over_seeds`` (default): one arm per fraction, the lowest score averaged
  over the seeds. Each seed draws its own validation structures, so this is
  repeated hold-out validation: with a few labels (2–26 validation structures in
  the mlearn pipelines) one seed's score is noisy and the mean is not.
- ``per_seed``: each seed's own lowest score (one split's validation part).
- ``blend``: the mean of the best few arms (:mod:`eip2nn.pipeline.blend`).
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

from eip2nn.pipeline.config import AUTO_CHOICES, NN_ARMS
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


def choose_for_fraction(cells: list[CellResult], candidates: tuple[str, ...] = NN_ARMS,
                        how: str = "mean_over_seeds") -> tuple[list[CellResult], str]:
    """(the auto cells of one DFT fraction, one per seed in the order first seen; a sentence on the choice).

    ``cells``: every seed's cells of that fraction. ``mean_over_seeds`` ranks the ``candidates`` that have a
    validation score in every seed where any has one by their mean score; when none has, each seed chooses for
    itself. A seed where no candidate has a score gets a failed auto cell that says why."""
    if how not in AUTO_CHOICES:
        raise ValueError(f"auto choice {how!r}: choose from {list(AUTO_CHOICES)}")
    if how == "blend":
        raise ValueError("auto choice 'blend' averages the arms' models: pipeline.blend.blend_for_fraction makes it")
    seeds = list(dict.fromkeys(c.seed for c in cells))
    by_seed = {s: [c for c in cells if c.seed == s] for s in seeds}
    scores: dict[str, dict[int, float]] = {}
    for c in cells:
        if c.ok and c.arm in candidates and not math.isnan(c.val_score):
            scores.setdefault(c.arm, {})[c.seed] = c.val_score
    scored = {s for v in scores.values() for s in v}
    complete = {arm: sum(v.values()) / len(v) for arm, v in scores.items() if set(v) == scored}
    if how == "per_seed" or len(scored) < 2 or not complete:
        autos = [choose(by_seed[s], candidates) for s in seeds]
        why = ("no arm has a validation score in every seed; each seed chose by its own"
               if how == "mean_over_seeds" and len(scored) > 1 else "each seed by its own validation score")
        return autos, f"{why}: " + ", ".join(f"seed {s} {a.chose or 'nothing'}" for s, a in zip(seeds, autos))
    best = min(complete, key=complete.get)
    autos = [dataclasses.replace(next(c for c in by_seed[s] if c.arm == best), arm="auto", chose=best)
             if s in scored else choose(by_seed[s], candidates) for s in seeds]
    ranked = ", ".join(f"{arm} {score:.3g}" for arm, score in sorted(complete.items(), key=lambda kv: kv[1]))
    return autos, f"chose {best} for every seed (mean validation score over {len(scored)} seeds: {ranked})"


def choice_counts(cells: list[CellResult], fraction: float) -> str:
    """'transfer 2, baseline 1': how often auto chose each arm at ``fraction``."""
    counts = Counter(c.chose for c in cells if c.arm == "auto" and c.fraction == fraction and c.ok)
    return ", ".join(f"{arm} {n}" for arm, n in counts.most_common())
