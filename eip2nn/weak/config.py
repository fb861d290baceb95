"""The weak section of a config: weak supervision's settings, cheap to import (no scikit-learn)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class WeakConfig:
    enabled: bool = False  # finetune: also train on weak labels (the "both" arm); stage "weak" always does
    eips: list[str] = field(default_factory=list)  # candidate EIPs; empty = the n_eips closest to DFT
    n_eips: int = 4
    threshold: float = 50.0  # meV/atom: class "none" when even the best EIP's aligned error is larger
    force_weight: float = 0.0  # selection error = |ΔE| meV/atom + force_weight × force RMSE meV/Å
    alpha: float = 1.0  # weight of the weak-label loss relative to the DFT loss
    tukey_c: float = 0.0  # Tukey biweight c on ΔE/atom, meV/atom; 0 = 4.685 σ from the held-out pseudo-label MAE
    forces: bool = False  # also train on the chosen EIP's forces
    tukey_c_forces: float = 0.0  # eV/Å per component; 0 = 4.685 σ from the chosen EIPs' force MAE
    classifier: str = "random_forest"  # see eip2nn.weak.selector.CLASSIFIERS
    n_estimators: int = 300
    max_depth: int = 0  # 0 = unlimited
    min_samples_leaf: int = 1
    cv_folds: int = 5  # folds of the held-out selector report
    descriptor: str = "set30"  # KLIFF symmetry-function set pooled into selector features
    descriptor_cutoff: float = 5.0  # Å
    extra_structures: list[str] = field(default_factory=list)  # extxyz files of more unlabelled structures

    def __post_init__(self):
        if self.threshold <= 0 or self.alpha < 0 or self.cv_folds < 2:
            raise ValueError("weak: threshold > 0, alpha >= 0 and cv_folds >= 2 are required")

    def selector(self, seed: int):
        """An unfitted :class:`~eip2nn.weak.selector.EIPSelector` of these settings (imports scikit-learn)."""
        from eip2nn.weak.selector import EIPSelector

        return EIPSelector(self.classifier, self.n_estimators, self.max_depth or None, self.min_samples_leaf,
                           random_state=seed)
