"""Optuna sweeps over a pipeline's knobs: one objective cell, pruning, MLflow child runs, the best config out."""
