"""The selector: a scikit-learn classifier from structure features to "which EIP (or none)".

Hyperparameters are constructor arguments, so ``get_params``/``set_params``,
``sklearn.base.clone``, cross-validation, Optuna and MLflow ``log_params``
work on it unchanged.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.ensemble import ExtraTreesClassifier, HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.validation import check_is_fitted

CLASSIFIERS = ("random_forest", "extra_trees", "gradient_boosting", "logistic")


class EIPSelector(ClassifierMixin, BaseEstimator):
    """Predicts, per structure, the EIP closest to DFT or ``"none"``.

    classifier: one of :data:`CLASSIFIERS`; n_estimators, max_depth (None =
    unlimited), min_samples_leaf: tree ensembles; C: inverse regularisation of
    the logistic model; class_weight: "balanced" (default, so a rare EIP or
    "none" still counts) or None; random_state: seed.
    """

    def __init__(self, classifier: str = "random_forest", n_estimators: int = 300, max_depth: int | None = None,
                 min_samples_leaf: int = 1, C: float = 1.0, class_weight: str | None = "balanced",
                 random_state: int = 0):
        self.classifier = classifier
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.min_samples_leaf = min_samples_leaf
        self.C = C
        self.class_weight = class_weight
        self.random_state = random_state

    def _make(self):
        trees = dict(n_estimators=self.n_estimators, max_depth=self.max_depth,
                     min_samples_leaf=self.min_samples_leaf, class_weight=self.class_weight,
                     random_state=self.random_state)
        if self.classifier == "random_forest":
            return RandomForestClassifier(**trees)
        if self.classifier == "extra_trees":
            return ExtraTreesClassifier(**trees)
        if self.classifier == "gradient_boosting":
            return HistGradientBoostingClassifier(max_iter=self.n_estimators, max_depth=self.max_depth,
                                                  min_samples_leaf=self.min_samples_leaf,
                                                  class_weight=self.class_weight, random_state=self.random_state)
        if self.classifier == "logistic":
            return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, class_weight=self.class_weight,
                                                                      max_iter=5000))
        raise ValueError(f"classifier: {self.classifier!r} is not one of {CLASSIFIERS}")

    def fit(self, X, y) -> "EIPSelector":
        """X: (S, F) features; y: (S,) class names (EIP ids or "none")."""
        X, y = np.asarray(X, dtype=float), np.asarray(y).astype(str)
        if len(X) != len(y) or len(y) == 0:
            raise ValueError(f"selector needs as many labels as feature rows, got {len(X)} rows, {len(y)} labels")
        self.classes_ = np.unique(y)
        self.n_features_in_ = X.shape[1]
        # one class only: nothing to learn, the answer is that class
        self.model_ = self._make().fit(X, y) if len(self.classes_) > 1 else None
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(S, C) class probabilities, columns in ``classes_`` order."""
        check_is_fitted(self, "classes_")
        X = np.asarray(X, dtype=float)
        if self.model_ is None:
            return np.ones((len(X), 1))
        return self.model_.predict_proba(X)

    def predict(self, X) -> np.ndarray:
        """(S,) predicted class names."""
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
