"""Empirical interatomic potentials: the registry (potentials_db) and their backends."""

from eip2nn.potentials.backends import make_evaluator
from eip2nn.potentials.db import PotentialsDB
from eip2nn.potentials.evaluator import EIPResult, EvaluationError
from eip2nn.potentials.spec import PotentialSpec, PotentialSpecError, load_spec

__all__ = ["PotentialsDB", "EIPResult", "EvaluationError", "make_evaluator",
           "PotentialSpec", "PotentialSpecError", "load_spec"]
