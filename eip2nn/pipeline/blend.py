"""``study.auto_choice: blend`` — `auto` as the mean of the best few eip2nn arms of a fraction, not one of them.

As ``mean_over_seeds`` does, the candidates are ranked by their validation score averaged over the seeds. The
blend of the top k (equal weights; k = 1 … ``study.blend_arms``, 0: all) is scored on the same validation parts — its
errors are the mean of its members' errors, structure by structure (:mod:`eip2nn.training.errors`) — and the k
with the lowest mean score wins (k = 1: the best single arm, as ``mean_over_seeds`` chooses). Only validation
parts decide; the test set only scores the choice. Each seed's blend is written as a blend file
(:mod:`eip2nn.nn.blend`) under ``<pipeline output>/auto/``: the ASE calculator, ``eip2nn evaluate`` and
``eip2nn md`` take it as a model.
"""

from __future__ import annotations

import dataclasses
import statistics
from pathlib import Path

from eip2nn.data.protocol import Split, make_split
from eip2nn.nn.blend import BLEND_SUFFIX, BlendMember, write_blend
from eip2nn.nn.checkpoint import load_model
from eip2nn.pipeline.auto import choose_for_fraction
from eip2nn.pipeline.report import CellResult
from eip2nn.training.errors import StructureErrors, model_errors, weighted_mean

JOIN = " + "  # between the arms of a blend in a cell's `chose`: "delta + snap+nn"


def blend_file(out: Path, fraction: float, seed: int) -> Path:
    return out / "auto" / f"f={fraction:g}-seed={seed}{BLEND_SUFFIX}"


def blended(errors: dict[tuple[str, int], StructureErrors], arms: list[str], seed: int) -> StructureErrors:
    """The errors of the equal-weight mean of ``arms`` in ``seed``, from ``errors[arm, seed]``."""
    return weighted_mean([errors[a, seed] for a in arms], [1.0 / len(arms)] * len(arms))


def blend_scores(val: dict[tuple[str, int], StructureErrors], ranked: list[str], seeds: list[int],
                 weights: tuple[float, float]) -> dict[int, float]:
    """{k: the validation score of the mean of the first k of ``ranked``, averaged over ``seeds``}, k = 1, 2, …;
    ``weights``: (w_E, w_F) of the score."""
    return {k: statistics.mean(blended(val, ranked[:k], s).score(*weights) for s in seeds)
            for k in range(1, len(ranked) + 1)}


def blend_for_fraction(p, cells: list[CellResult], candidates: tuple[str, ...], log=print) -> tuple[list[CellResult], str]:
    """(the auto cells of one DFT fraction, one per seed; a sentence on the choice) for pipeline ``p``.

    ``cells``: every seed's cells of that fraction. Falls back to ``mean_over_seeds`` (and says so) when fewer
    than two candidates have a validation score and a saved model in every seed."""
    single, why_single = choose_for_fraction(cells, candidates, "mean_over_seeds")
    seeds = list(dict.fromkeys(c.seed for c in cells))
    usable = {(c.arm, c.seed): c for c in cells if c.ok and c.arm in candidates and c.model_path
              and c.val_score == c.val_score}
    arms = [a for a in dict.fromkeys(c.arm for c in cells) if all((a, s) in usable for s in seeds)]
    if p.study.blend_arms == 1:
        return single, f"{why_single} (study.blend_arms: 1, no blend)"
    if len(arms) < 2:
        return single, f"{why_single} (no blend: fewer than 2 arms with a validation score and a model in every seed)"
    ranked = sorted(arms, key=lambda a: statistics.mean(usable[a, s].val_score for s in seeds))
    top = ranked[:p.study.blend_arms or len(ranked)]
    weights = (p.train.energy_weight, p.train.force_weight)
    val: dict[tuple[str, int], StructureErrors] = {}
    test: dict[tuple[str, int], StructureErrors] = {}
    for seed in seeds:
        fraction = usable[top[0], seed].fraction
        split = make_split(dataclasses.replace(p.data, dft_fraction=fraction, split_seed=seed))
        for arm in top:
            model = load_model(usable[arm, seed].model_path)
            where = f"{arm} f={fraction:g} seed={seed}"
            val[arm, seed] = model_errors(model, Split.labelled(split.val), p.data.labels, p.data.workers or None,
                                          p.data.scheduler, f"{where} validation")
            test[arm, seed] = model_errors(model, split.test, p.data.labels, p.data.workers or None,
                                           p.data.scheduler, f"{where} test")

    scores = blend_scores(val, top, seeds, weights)
    best = min(scores, key=scores.get)
    how = ", ".join(f"top {k} {v:.3g}" for k, v in scores.items())
    if best == 1:
        return single, f"{why_single}; no blend of the best arms scores lower on validation ({how})"
    autos = []
    for seed in seeds:
        members = [usable[a, seed] for a in top[:best]]
        path = write_blend(blend_file(p.output_dir, members[0].fraction, seed),
                           [BlendMember(c.arm, Path(c.model_path), 1.0 / best) for c in members])
        v, t = blended(val, top[:best], seed), blended(test, top[:best], seed)
        vm, tm = v.metrics(), t.metrics()
        autos.append(CellResult(
            "auto", members[0].fraction, seed, "finished", members[0].n_dft_labels, tm.energy_mae, tm.force_mae,
            vm.energy_mae, sum(c.seconds for c in members), None, test_stress_mae=tm.stress_mae,
            groups={g: (m.energy_mae, m.force_mae) for g, m in t.by_group().items()}, val_force_mae=vm.force_mae,
            val_score=v.score(*weights), chose=JOIN.join(top[:best]), model_path=str(path)))
    log(f"  blend files: {', '.join(a.model_path for a in autos)}")
    return autos, (f"the mean of {JOIN.join(top[:best])} for every seed (mean validation score of the top k "
                   f"arms' blend over {len(seeds)} seeds: {how})")
