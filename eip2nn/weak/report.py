"""How good the selector is on labelled structures it did not see.

Classification figures (accuracy, balanced accuracy, confusion matrix) and
the figure that matters for training: the energy MAE of the pseudo-labels it
produces, against always using the single best EIP and against an oracle
that knows the best EIP per structure. Errors are aligned, meV/atom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import accuracy_score, balanced_accuracy_score, confusion_matrix

from eip2nn.tables import format_table
from eip2nn.weak.targets import NONE


@dataclass
class SelectorReport:
    classes: list[str]  # confusion-matrix order
    confusion: np.ndarray  # (C, C) counts, rows = true class, columns = predicted
    n_structures: int
    accuracy: float
    balanced_accuracy: float
    coverage: float  # share of structures the selector gives a label (not "none")
    mae_selector: float  # pseudo-label MAE over the covered structures, meV/atom
    mae_single_best_covered: float  # the single best EIP on the same structures
    mae_oracle_covered: float  # the per-structure best EIP on the same structures
    mae_single_best: float  # the single best EIP on all structures
    mae_oracle: float  # the per-structure best EIP on all structures

    @classmethod
    def from_predictions(cls, y_true: np.ndarray, y_pred: np.ndarray, errors: np.ndarray, eips: list[str],
                         single_best: np.ndarray) -> "SelectorReport":
        """y_true, y_pred: (S,) classes; errors: (S, K) held-out aligned errors, meV/atom;
        single_best: (S,) index of the EIP best on average on each structure's training folds."""
        y_true, y_pred = np.asarray(y_true).astype(str), np.asarray(y_pred).astype(str)
        classes = [e for e in eips if e in set(y_true) | set(y_pred)] + (
            [NONE] if NONE in set(y_true) | set(y_pred) else [])
        covered = y_pred != NONE
        rows = np.arange(len(errors))
        chosen = np.array([errors[i, eips.index(c)] if c != NONE else np.nan for i, c in enumerate(y_pred)])
        single = errors[rows, single_best]
        oracle = errors.min(axis=1)

        def mean(x):
            return float(np.mean(x)) if x.size else float("nan")

        return cls(classes, confusion_matrix(y_true, y_pred, labels=classes), len(y_true),
                   float(accuracy_score(y_true, y_pred)), float(balanced_accuracy_score(y_true, y_pred)),
                   float(covered.mean()), mean(chosen[covered]), mean(single[covered]), mean(oracle[covered]),
                   mean(single), mean(oracle))

    def as_metrics(self, prefix: str = "selector_") -> dict[str, float]:
        keys = ("accuracy", "balanced_accuracy", "coverage", "mae_selector", "mae_single_best_covered",
                "mae_oracle_covered", "mae_single_best", "mae_oracle")
        return {prefix + k: getattr(self, k) for k in keys if np.isfinite(getattr(self, k))}

    def table(self) -> str:
        rows = [("pseudo-labels", "structures", "energy MAE (meV/atom)")]
        n_cov = round(self.coverage * self.n_structures)
        rows += [("selector", f"{n_cov} (not 'none')", f"{self.mae_selector:.1f}"),
                 ("single best EIP, same structures", f"{n_cov}", f"{self.mae_single_best_covered:.1f}"),
                 ("oracle, same structures", f"{n_cov}", f"{self.mae_oracle_covered:.1f}"),
                 ("single best EIP, all", f"{self.n_structures}", f"{self.mae_single_best:.1f}"),
                 ("oracle, all", f"{self.n_structures}", f"{self.mae_oracle:.1f}")]
        head = (f"selector on {self.n_structures} held-out labelled structures: accuracy {self.accuracy:.2f}, "
                f"balanced accuracy {self.balanced_accuracy:.2f}, coverage {self.coverage:.2f}")
        conf = [("true \\ predicted", *self.classes)] + [(c, *map(str, r)) for c, r in zip(self.classes, self.confusion)]
        return "\n".join([head, format_table(rows), "confusion matrix:", format_table(conf)])
