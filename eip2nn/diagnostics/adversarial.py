"""Adversarial validation: can a classifier tell structure set B from set A?

If a cross-validated classifier cannot separate B (a test set, an unlabelled
pool) from A (the training set) on structure features, B lies in A's domain;
if it can, the structures it finds most B-like are where a model trained on
A will extrapolate (Kjeldal & Eriksen, "Transferability of atom-based neural
networks"). The features are the selector's structure block
(:meth:`eip2nn.weak.features.StructureFeatures.structure_block`): pooled
symmetry functions (mean and standard deviation over atoms), composition
fractions, volume per atom, periodicity and log(number of atoms).

The classifier is a random forest (in a StandardScaler pipeline, which
changes nothing for the trees but keeps the features on one scale for any
model swapped in). Why a forest: it needs no tuning on a few hundred
structures with ~70 strongly correlated features, finds non-linear
differences (B in a pocket inside A's range), and does not show the
below-chance bias of a linear model under cross-validation with a small
class (logistic regression gave ROC AUC 0.30 ± 0.10 on mlearn Si train vs
test, where the forest gives 0.54 ± 0.13 and gradient boosting 0.63 ± 0.11).
It is seeded, so a result is reproducible for a seed.

Class imbalance: folds are stratified, so every fold keeps the A:B ratio;
ROC AUC is a ranking measure and does not depend on that ratio; the forest
weighs classes inversely to their size ("balanced"), so it does not learn
the prior instead of the structures. The out-of-fold probabilities of B
rank structures; they are not calibrated: a forest's nearly pure leaves
still lean them towards the larger set (on mlearn Si, 21 structures vs the
other 193, the mean probability of B was 0.74 on both sides).

The AUC of two sets drawn from one distribution scatters around 0.5 with
the draw: over 20 random halves (100 vs 100 rattled, strained Si cells)
the mean AUC ranged 0.43-0.64 (standard deviation 0.05), more for smaller
sets. Read a verdict near a threshold together with ``auc_std``. A mean AUC
well below 0.5 is a cross-validation artefact of small sets, not a finding.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from eip2nn.keys import structure_name
from eip2nn.tables import format_table
from eip2nn.weak.features import StructureFeatures

AUC_INDISTINGUISHABLE = 0.6  # mean ROC AUC below this: B looks like A
AUC_OUT_OF_DOMAIN = 0.8  # mean ROC AUC above this: B is out of A's domain; in between: partly
N_TREES = 200  # trees in the forest
N_TOP_FEATURES = 5  # features listed in AdversarialResult.top_features


@dataclass
class AdversarialResult:
    """Out-of-fold results of a classifier separating set A (class 0) from set B (class 1)."""

    auc_mean: float  # ROC AUC, mean over all folds and repeats
    auc_std: float  # its standard deviation over folds and repeats: the spread, not a standard error
    auc_per_fold: np.ndarray  # (folds * repeats,), repeat after repeat
    prob_b_of_a: np.ndarray  # (len(A),) out-of-fold probability of B, mean over repeats (balanced scale)
    prob_b_of_b: np.ndarray  # (len(B),) the same for B's structures
    feature_names: list[str]
    # the features that separate the sets most: (name, mean decrease in Gini impurity averaged over every
    # fold's forest, summing to 1 over all features); correlated features share their importance
    top_features: list[tuple[str, float]]
    folds: int
    repeats: int

    @property
    def verdict(self) -> str:
        """The mean AUC in words, by :data:`AUC_INDISTINGUISHABLE` and :data:`AUC_OUT_OF_DOMAIN`."""
        if self.auc_mean < AUC_INDISTINGUISHABLE:
            return "indistinguishable: B looks like A"
        if self.auc_mean <= AUC_OUT_OF_DOMAIN:
            return "partly out of domain: some of B differs from A"
        return "B is out of A's domain"

    def most_b_like(self, structures_a: list[Atoms], k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` structures of A the classifier takes most for B: (index in A, name, probability of B)."""
        return _ranked(structures_a, self.prob_b_of_a, k, "A")

    def most_out_of_domain(self, structures_b: list[Atoms], k: int = 5) -> list[tuple[int, str, float]]:
        """The ``k`` structures of B least like A (e.g. the pool structures to label first):
        (index in B, name, probability of B)."""
        return _ranked(structures_b, self.prob_b_of_b, k, "B")

    def table(self) -> str:
        """A plain-text summary: AUC, verdict, set sizes, mean probabilities and the top features."""
        summary = format_table([
            ("quantity", "value"),
            ("ROC AUC", f"{self.auc_mean:.3f} ± {self.auc_std:.3f} ({self.folds} folds x {self.repeats} repeats)"),
            ("verdict", self.verdict),
            ("structures", f"A: {len(self.prob_b_of_a)}, B: {len(self.prob_b_of_b)}"),
            ("mean P(B) of A", f"{self.prob_b_of_a.mean():.3f}"),
            ("mean P(B) of B", f"{self.prob_b_of_b.mean():.3f}"),
        ])
        features = format_table([("feature", "importance")] + [(n, f"{v:.3f}") for n, v in self.top_features])
        return summary + "\n\n" + features


def _ranked(structures: list[Atoms], prob: np.ndarray, k: int, which: str) -> list[tuple[int, str, float]]:
    if len(structures) != len(prob):
        raise ValueError(f"got {len(structures)} structures, but set {which} had {len(prob)}: "
                         f"pass set {which} as it was validated")
    order = np.argsort(-prob, kind="stable")[:k]
    return [(int(i), structure_name(structures[i], int(i)), float(prob[i])) for i in order]


def adversarial_validation(a: list[Atoms], b: list[Atoms], species: list[str] | None = None, folds: int = 5,
                           repeats: int = 3, seed: int = 0, descriptor: str = "set30",
                           cutoff: float = 5.0) -> AdversarialResult:
    """Cross-validated classifier separating structures ``a`` from ``b``.

    species: the elements of the descriptor (default: every element in A or
    B, sorted); a structure with another element is refused. folds: k of the
    stratified k-fold, repeated ``repeats`` times with different splits;
    seed: of the splits and the forest. descriptor: a KLIFF symmetry-function
    set name; cutoff: its cut-off, Å.
    """
    _check_sizes(len(a), len(b), folds, repeats)
    if species is None:
        species = sorted({s for atoms in [*a, *b] for s in atoms.get_chemical_symbols()})
    for which, structures in (("A", a), ("B", b)):
        for i, atoms in enumerate(structures):
            unknown = sorted(set(atoms.get_chemical_symbols()) - set(species))
            if unknown:
                raise ValueError(f"set {which}, {structure_name(atoms, i)}: contains {unknown}, "
                                 f"not in species {list(species)}")
    featuriser = StructureFeatures(list(species), descriptor, cutoff)
    xa, names = featuriser.structure_block(a)
    xb, _ = featuriser.structure_block(b)
    return adversarial_validation_features(xa, xb, names, folds, repeats, seed)


def adversarial_validation_features(xa: np.ndarray, xb: np.ndarray, feature_names: list[str], folds: int = 5,
                                    repeats: int = 3, seed: int = 0) -> AdversarialResult:
    """:func:`adversarial_validation` on features already computed: xa (len(A), F), xb (len(B), F)."""
    xa, xb = np.asarray(xa, dtype=float), np.asarray(xb, dtype=float)
    _check_sizes(len(xa), len(xb), folds, repeats)
    if xa.ndim != 2 or xb.ndim != 2 or xa.shape[1] != xb.shape[1] or xa.shape[1] != len(feature_names):
        raise ValueError(f"features of A {xa.shape} and B {xb.shape} must both be (structures, "
                         f"{len(feature_names)}) for {len(feature_names)} feature names")
    for which, x in (("A", xa), ("B", xb)):
        if not np.isfinite(x).all():
            rows = np.flatnonzero(~np.isfinite(x).all(axis=1))
            raise ValueError(f"set {which}: non-finite features in structures {rows[:10].tolist()}")
    x = np.vstack([xa, xb])
    y = np.r_[np.zeros(len(xa), dtype=int), np.ones(len(xb), dtype=int)]
    prob = np.zeros((repeats, len(y)))
    aucs, importance = [], np.zeros(x.shape[1])
    splits = RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed).split(x, y)
    for k, (train, test) in enumerate(splits):
        model = make_pipeline(StandardScaler(), RandomForestClassifier(
            n_estimators=N_TREES, min_samples_leaf=2, class_weight="balanced", random_state=seed + k, n_jobs=1))
        model.fit(x[train], y[train])
        prob[k // folds, test] = model.predict_proba(x[test])[:, 1]
        aucs.append(roc_auc_score(y[test], prob[k // folds, test]))
        importance += model[-1].feature_importances_
    importance /= len(aucs)
    aucs = np.array(aucs)
    top = np.argsort(-importance, kind="stable")[:N_TOP_FEATURES]
    mean = prob.mean(axis=0)
    return AdversarialResult(float(aucs.mean()), float(aucs.std(ddof=1)) if len(aucs) > 1 else 0.0, aucs,
                             mean[:len(xa)], mean[len(xa):], list(feature_names),
                             [(feature_names[i], float(importance[i])) for i in top], folds, repeats)


def _check_sizes(n_a: int, n_b: int, folds: int, repeats: int) -> None:
    if folds < 2:
        raise ValueError(f"folds: {folds}; cross-validation needs at least 2 folds")
    if repeats < 1:
        raise ValueError(f"repeats: {repeats}; needs at least 1")
    for which, n in (("A", n_a), ("B", n_b)):
        if n == 0:
            raise ValueError(f"set {which} is empty")
        if n < folds:
            raise ValueError(f"set {which} has {n} structures; {folds}-fold cross-validation needs at least "
                             f"{folds} in each set (add structures or lower folds)")
