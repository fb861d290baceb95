"""The pipeline's domain check: adversarial validation of its test set and of its unlabelled pools.

Two questions, answered before any result is read: is the test set in the
training structures' domain (else the test errors measure extrapolation), and,
at each DFT fraction, is the unlabelled pool in the labelled structures' domain
(else weak labels and EIP pretraining carry the model where no DFT label is)?
Features are computed once per structure and reused for every pair.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from eip2nn.data.protocol import Split, make_split
from eip2nn.diagnostics import adversarial_validation_features
from eip2nn.labelling.hashing import structure_hashes
from eip2nn.weak.features import StructureFeatures

FOLDS, REPEATS = 5, 3


@dataclasses.dataclass
class DomainCheck:
    """One pair of sets and what adversarial validation said of it."""

    name: str  # e.g. "test vs training", "pool vs labelled, DFT fraction 0.1"
    metric_key: str  # its MLflow metric, e.g. "domain_auc_test_vs_training"
    n_a: int
    n_b: int
    auc_mean: float = float("nan")
    auc_std: float = float("nan")
    verdict: str = ""
    skipped: str = ""  # why it was not computed (too few structures)


def domain_checks(p, split: Split, log=print) -> list[DomainCheck]:
    """Test vs training structures, and for each DFT fraction < 1 (first seed) the unlabelled pool vs the
    labelled structures. ``p`` is the PipelineConfig, ``split`` its split at DFT fraction 1."""
    training = split.train + split.val
    features = StructureFeatures(split.species)
    everything = training + split.test
    x, names = features.structure_block(everything)
    row = dict(zip(structure_hashes(everything), x))

    def check(name: str, key: str, a, b) -> DomainCheck:
        result = DomainCheck(name, "domain_auc_" + key, len(a), len(b))
        if min(len(a), len(b)) < FOLDS:
            result.skipped = f"fewer than {FOLDS} structures in a set"
            return result
        xa = np.array([row[h] for h in structure_hashes(a)])
        xb = np.array([row[h] for h in structure_hashes(b)])
        r = adversarial_validation_features(xa, xb, names, FOLDS, REPEATS, seed=0)
        result.auc_mean, result.auc_std, result.verdict = r.auc_mean, r.auc_std, r.verdict
        log(f"domain check, {name}: ROC AUC {r.auc_mean:.2f} ± {r.auc_std:.2f} ({r.verdict})")
        return result

    out = [check("test vs training", "test_vs_training", training, split.test)]
    seed = p.study.seeds[0]
    for fraction in sorted(f for f in p.study.fractions if f < 1.0):
        at = make_split(dataclasses.replace(p.data, dft_fraction=fraction, split_seed=seed))
        pool = at.train + at.val
        out.append(check(f"pool vs labelled, DFT fraction {fraction:g}", f"pool_vs_labelled_f{fraction:g}",
                         Split.labelled(pool), Split.unlabelled(pool)))
    return out


def domain_markdown(checks: list[DomainCheck], seed: int) -> list[str]:
    """The report's section on the domain checks."""
    lines = ["## Domain check (adversarial validation)", "",
             f"Can a classifier tell set B from set A? ROC AUC over {FOLDS} folds x {REPEATS} repeats (a random "
             "forest on pooled symmetry functions and composition; `eip2nn diagnose adversarial`). About 0.5: B is "
             f"in A's domain. Pools are those of split seed {seed}.", "",
             "| B vs A | A | B | ROC AUC | verdict |", "|---|---|---|---|---|"]
    for c in checks:
        auc = f"{c.auc_mean:.2f} ± {c.auc_std:.2f}" if not c.skipped else "-"
        lines.append(f"| {c.name} | {c.n_a} | {c.n_b} | {auc} | {c.verdict or c.skipped} |")
    return lines
