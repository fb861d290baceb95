"""What to compute next with DFT: rank unlabelled structures by how much a label would teach.

The acquisition of a pool structure is a weighted mean of the percentile
ranks (0 = least, 1 = most, within the pool) of up to seven signals (weight 1
each by default, ``energy_novelty`` and ``pool_density`` 0):

- ``committee_energy``: spread (standard deviation) of the EIP committee's
  aligned energies, meV/atom — the EIPs disagree where physics is uncertain;
- ``committee_force``: mean over atoms of the committee's RMS deviation from
  its mean force, eV/Å;
- ``energy_novelty``: how far the committee's mean aligned energy lies from
  every labelled structure's DFT energy, meV/atom (both less a per-element
  reference fitted to the labelled energies) — the labels' energy range
  would have to be extrapolated; the EIPs agree on strained bulk, say, yet a
  network trained on a few labels has not seen that energy (weight 0 unless
  given: it did not help on Si);
- ``pool_density``: how typical of the pool a structure is: minus its mean
  distance (standardised structure features) to its ``DENSITY_NEIGHBOURS``
  nearest pool structures — not a doubt but a weight towards structures like
  many others, so that a label teaches about many (weight 0 unless given);
- ``out_of_domain``: the adversarial classifier's out-of-fold probability
  that the structure belongs to the pool rather than the labelled set
  (:mod:`eip2nn.diagnostics.adversarial`) — unlike anything labelled;
- ``model_gap`` (with a trained model): |model energy − committee mean|,
  meV/atom — where the network has left the EIPs' physics;
- ``model_spread`` (with a trained committee, ``train.committee``): the
  sample std of its networks' energies, meV/atom — where networks trained on
  the same labels part ways, the labels did not pin the energy down.

Ranks make the signals' units irrelevant. A signal that cannot be computed
for a structure (fewer than two EIPs labelled it) counts as the pool's most
uncertain (percentile 1). Structures are then picked greedily, each time the
one maximising ``acquisition × d / (d + d₀)``, where ``d`` is its distance
(standardised structure features) to the labelled set and the structures
already picked, and ``d₀`` the pool's median distance to the labelled set:
near-duplicates of a pick (consecutive MD frames) fall back. The order does
not depend on K, so the first K of a longer list are the K list.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from scipy.spatial import cKDTree
from scipy.stats import rankdata

from eip2nn.alignment import per_element_offsets
from eip2nn.diagnostics.adversarial import adversarial_validation_features
from eip2nn.keys import ENERGY, FORCES, REF_ENERGY, eip_key, structure_name
from eip2nn.labelling.choice import label_with, select_eips
from eip2nn.potentials.db import PotentialsDB
from eip2nn.tables import format_table
from eip2nn.weak.features import StructureFeatures
from eip2nn.weak.targets import Alignment, element_counts, fit_alignments

SIGNALS = ("committee_energy", "committee_force", "energy_novelty", "pool_density", "out_of_domain", "model_gap",
           "model_spread")
# energy_novelty and pool_density are off by default: on Si (5 seeds, docs/diagnostics.md) each made the picks'
# energies worse
DEFAULT_WEIGHTS = {"committee_energy": 1.0, "committee_force": 1.0, "energy_novelty": 0.0, "pool_density": 0.0,
                   "out_of_domain": 1.0, "model_gap": 1.0, "model_spread": 1.0}
MAX_FOLDS = 5  # adversarial validation folds (fewer when a set is smaller)
DENSITY_NEIGHBOURS = 5  # pool_density: nearest pool structures averaged over


@dataclass
class Suggestion:
    """The ranking of a pool. Arrays have one entry per pool structure, in the pool's order."""

    picked: list[int]  # pool indices, in the order picked (the first K are the top K)
    acquisition: np.ndarray  # (P,) weighted mean percentile rank, in [0, 1]
    signals: dict[str, np.ndarray]  # name -> (P,) raw values (units in the module docstring); NaN: not computed
    eips: list[str]  # the committee
    names: list[str]  # structure names of the pool
    notes: list[str] = field(default_factory=list)

    def table(self, k: int | None = None) -> str:
        """The picked structures (the first ``k``) with their signals."""
        used = [s for s in SIGNALS if s in self.signals]
        rows = [("rank", "structure", "acquisition", *used)]
        for rank, i in enumerate(self.picked[:k], start=1):
            rows.append((str(rank), self.names[i], f"{self.acquisition[i]:.3f}",
                         *(_fmt(self.signals[s][i]) for s in used)))
        return format_table(rows)


def _fmt(x: float) -> str:
    return "-" if math.isnan(x) else f"{x:.3g}"


def committee_signals(pool: list[Atoms], alignments: dict[str, Alignment], species: list[str]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(spread meV/atom, force disagreement eV/Å, mean aligned energy eV) per pool structure over the EIPs
    that labelled it; NaN where fewer than two did (mean: where none did)."""
    counts = element_counts(pool, species)
    spread, force, mean = (np.full(len(pool), np.nan) for _ in range(3))
    for i, atoms in enumerate(pool):
        have = [e for e in alignments if eip_key(e, ENERGY) in atoms.info and eip_key(e, FORCES) in atoms.arrays]
        if not have:
            continue
        energies = np.array([alignments[e].aligned_energy(atoms, counts[i]) for e in have])
        mean[i] = energies.mean()
        if len(have) < 2:
            continue
        spread[i] = energies.std() / len(atoms) * 1000.0
        forces = np.stack([atoms.arrays[eip_key(e, FORCES)] for e in have])  # (K, n, 3)
        force[i] = np.sqrt(((forces - forces.mean(axis=0)) ** 2).sum(axis=2).mean(axis=0)).mean()
    return spread, force, mean


def energy_novelty(labelled: list[Atoms], pool: list[Atoms], committee_mean: np.ndarray, species: list[str]
                   ) -> np.ndarray:
    """(P,) meV/atom: the distance of each pool structure's committee-mean energy (eV, aligned to DFT) to the
    nearest labelled DFT energy, both per atom after a per-element reference fitted to the labelled DFT
    energies; NaN where the committee has no mean."""
    lab_counts, pool_counts = element_counts(labelled, species), element_counts(pool, species)
    dft = np.array([a.info[REF_ENERGY] for a in labelled])
    mu = per_element_offsets(lab_counts, dft)
    lab_e = (dft - lab_counts @ mu) / lab_counts.sum(axis=1)
    pool_e = (committee_mean - pool_counts @ mu) / pool_counts.sum(axis=1)
    return np.abs(pool_e[:, None] - lab_e[None, :]).min(axis=1) * 1000.0


def model_signals(pool: list[Atoms], model, committee_mean: np.ndarray) -> dict[str, np.ndarray]:
    """``model_gap`` (meV/atom, NaN where the EIP committee has no mean) and, for a model that gives
    ``results["energy_std"]``, ``model_spread`` (meV/atom)."""
    gap, spread = np.full(len(pool), np.nan), np.full(len(pool), np.nan)
    for i, atoms in enumerate(pool):
        copy = atoms.copy()
        copy.calc = model
        energy = copy.get_potential_energy()
        if np.isfinite(committee_mean[i]):
            gap[i] = abs(energy - committee_mean[i]) / len(atoms) * 1000.0
        if "energy_std" in model.results:
            spread[i] = model.results["energy_std"] / len(atoms) * 1000.0
    return {"model_gap": gap} | ({"model_spread": spread} if np.isfinite(spread).any() else {})


def _percentiles(values: np.ndarray) -> np.ndarray:
    """Percentile rank in [0, 1] (ties share the mean rank); NaN counts as the most uncertain (1)."""
    out = np.ones(len(values))
    finite = np.isfinite(values)
    if finite.sum() > 1:
        out[finite] = (rankdata(values[finite]) - 1) / (finite.sum() - 1)
    elif finite.sum() == 1:
        out[finite] = 0.5
    return out


def _standardised(labelled_x: np.ndarray, pool_x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both feature blocks divided by the per-feature std over labelled + pool (1 where constant)."""
    scale = np.vstack([labelled_x, pool_x]).std(axis=0)
    scale[scale == 0] = 1.0
    return labelled_x / scale, pool_x / scale


def pool_density(pool_x: np.ndarray) -> np.ndarray:
    """(P,) minus the mean distance of each pool structure to its ``DENSITY_NEIGHBOURS`` nearest others, in
    standardised features (higher: more typical of the pool); 0 for a pool of one."""
    if len(pool_x) < 2:
        return np.zeros(len(pool_x))
    k = min(DENSITY_NEIGHBOURS, len(pool_x) - 1)
    # a k-d tree, not the (P, P, features) difference array: a pool of MD frames may hold tens of thousands
    d, _ = cKDTree(pool_x).query(pool_x, k=k + 1)  # (P, k + 1), sorted; the first is the structure itself
    return -d[:, 1:].mean(axis=1)


def _pick(acquisition: np.ndarray, p: np.ndarray, lab: np.ndarray) -> list[int]:
    """Greedy order of the whole pool by acquisition × d / (d + d₀) (see the module docstring); ``p`` and ``lab``:
    the pool's and the labelled structures' standardised features (:func:`_standardised`)."""

    def distances(points: np.ndarray) -> np.ndarray:
        return np.sqrt(((p[:, None, :] - points[None, :, :]) ** 2).sum(axis=2)).min(axis=1)

    d = distances(lab) if len(lab) else np.full(len(p), np.inf)
    d0 = float(np.median(d)) if np.isfinite(d).all() and np.median(d) > 0 else 1.0
    order, left = [], np.ones(len(p), dtype=bool)
    while left.any():
        diversity = np.where(np.isinf(d), 1.0, d / (d + d0))
        score = np.where(left, acquisition * diversity, -np.inf)
        best = int(np.argmax(score))  # ties: the lowest index
        order.append(best)
        left[best] = False
        d = np.minimum(d, distances(p[best:best + 1]))
    return order


def suggest(labelled: list[Atoms], pool: list[Atoms], species: list[str], labels: str, *, source_tag: str = "",
            eips: list[str] | None = None, n_eips: int = 4, model=None, weights: dict[str, float] | None = None,
            seed: int = 0, workers: int | None = None) -> Suggestion:
    """Rank ``pool`` (unlabelled structures) for DFT labelling, given ``labelled`` (DFT-labelled structures).

    eips: the committee (default: the ``n_eips`` eligible EIPs closest to DFT on ``labelled``, twins
    skipped); labels: the EIP label store (missing labels are computed). model: an ASE calculator of a
    trained model (e.g. EIP2NNCalculator) for the ``model_gap`` signal, and ``model_spread`` when it gives
    ``results["energy_std"]`` (a committee). weights: per signal (default ``DEFAULT_WEIGHTS``);
    seed: of the adversarial folds and forest.
    """
    if not labelled:
        raise ValueError("suggest needs DFT-labelled structures to align the EIPs and to compare the pool with")
    if not pool:
        raise ValueError("the pool of unlabelled structures is empty")
    weights = {**DEFAULT_WEIGHTS, **(weights or {})}
    unknown = sorted(set(weights) - set(SIGNALS))
    if unknown:
        raise ValueError(f"unknown signal(s) {unknown}; signals: {list(SIGNALS)}")
    specs, notes = select_eips(PotentialsDB(), eips or [], n_eips, labelled, species, source_tag, labels, workers,
                               "committee EIP", "not in the committee", compare_on=labelled + pool)
    committee = [s.id for s in specs]
    with_labels = label_with(labelled + pool, specs, labels, workers)
    labelled_eip, pool_eip = with_labels[:len(labelled)], with_labels[len(labelled):]
    alignments = fit_alignments(labelled_eip, committee, species)
    spread, force, committee_mean = committee_signals(pool_eip, alignments, species)
    signals = {"committee_energy": spread, "committee_force": force,
               "energy_novelty": energy_novelty(labelled, pool, committee_mean, species)}

    featuriser = StructureFeatures(species)
    labelled_x, feature_names = featuriser.structure_block(labelled)
    pool_x, _ = featuriser.structure_block(pool)
    labelled_scaled, pool_scaled = _standardised(labelled_x, pool_x)
    signals["pool_density"] = pool_density(pool_scaled)
    folds = min(MAX_FOLDS, len(labelled), len(pool))
    if folds >= 2:
        adversarial = adversarial_validation_features(labelled_x, pool_x, feature_names, folds=folds, seed=seed)
        signals["out_of_domain"] = adversarial.prob_b_of_b
        notes.append(f"labelled vs pool: ROC AUC {adversarial.auc_mean:.2f} ± {adversarial.auc_std:.2f} "
                     f"({adversarial.verdict})")
    else:
        notes.append("out_of_domain left out: fewer than 2 structures in a set for the adversarial folds")
    if model is not None:
        signals.update(model_signals(pool, model, committee_mean))
    used = [s for s in SIGNALS if s in signals and weights[s] > 0]
    if not used:
        raise ValueError(f"every signal has weight 0 or could not be computed ({weights})")
    total = sum(weights[s] for s in used)
    acquisition = sum(weights[s] * _percentiles(signals[s]) for s in used) / total
    notes.append("acquisition: weighted mean percentile of " + ", ".join(f"{s} (weight {weights[s]:g})" for s in used))
    order = _pick(acquisition, pool_scaled, labelled_scaled)
    return Suggestion(order, acquisition, signals, committee, [structure_name(a, i) for i, a in enumerate(pool)],
                      notes)
