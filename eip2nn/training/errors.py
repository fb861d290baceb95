"""Signed errors (prediction − DFT) of a trained model, structure by structure: what a blend of models averages.

A Δ-learning model's network is scored against DFT − EIP; its error there is the error of EIP + network against
DFT, so every model's errors stand on one footing and the errors of a weighted mean of models are the weighted
mean of their errors (each model's forces are its energy's gradient, and so are the mean's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from eip2nn.keys import REF_ENERGY
from eip2nn.labelling.choice import minus_eip
from eip2nn.nn.model import DFT_HEAD
from eip2nn.potentials.db import PotentialsDB
from eip2nn.training.metrics import Metrics, Parity, metrics_of, predict_rows
from eip2nn.training.samples import make_samples


@dataclass
class StructureErrors:
    """Prediction − DFT on S structures, in the order they were given."""

    energy: np.ndarray  # (S,) eV/atom
    forces: list[np.ndarray]  # S arrays (n_atoms, 3) eV/Å; (0, 3) where the structure has no force label
    stress: list[np.ndarray | None]  # S Voigt (6,) eV/Å³, None where the structure has no stress label
    groups: list[str]  # S group names (atoms.info[GROUP]), for per-group metrics

    def metrics(self, keep: list[bool] | None = None) -> Metrics:
        """MAE and RMSE of the errors (of the structures where ``keep``), as :func:`metrics_of` gives them."""
        keep = keep or [True] * len(self.energy)
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
        energy = self.energy[np.asarray(keep, bool)]
        forces = cat([f.ravel() for f, k in zip(self.forces, keep) if k])
        stress = cat([s for s, k in zip(self.stress, keep) if k and s is not None])
        zero = np.zeros_like
        return metrics_of(Parity(zero(energy), energy, zero(forces), forces, zero(stress), stress))

    def by_group(self) -> dict[str, Metrics]:
        """{group: metrics of its structures}, sorted by group name."""
        return {g: self.metrics([x == g for x in self.groups]) for g in sorted(set(self.groups))}

    def score(self, energy_weight: float, force_weight: float) -> float:
        """w_E·RMSE(ΔE/n)² + w_F·RMSE(ΔF)² (eV/atom, eV/Å): the training loss's measure (pipeline.auto)."""
        forces = np.concatenate([f.ravel() for f in self.forces]) if self.forces else np.zeros(0)
        return (energy_weight * float(np.mean(self.energy ** 2))
                + (force_weight * float(np.mean(forces ** 2)) if forces.size else 0.0))


def weighted_mean(members: list[StructureErrors], weights: list[float]) -> StructureErrors:
    """The errors of Σ w_k model_k (weights summing to 1) from each model's errors on the same structures.

    A stress appears where every member has one (a Δ model whose EIP gives no stress has none)."""
    if not members or len(members) != len(weights):
        raise ValueError(f"weighted_mean: {len(members)} members and {len(weights)} weights")
    if not np.isclose(sum(weights), 1.0):
        raise ValueError(f"weighted_mean: the weights sum to {sum(weights):g}, not 1")
    first = members[0]
    for k, m in enumerate(members[1:], start=1):
        if m.groups != first.groups or [f.shape for f in m.forces] != [f.shape for f in first.forces]:
            raise ValueError(f"weighted_mean: member {k} was scored on other structures than member 0")
    energy = sum(w * m.energy for w, m in zip(weights, members))
    forces = [sum(w * m.forces[i] for w, m in zip(weights, members)) for i in range(len(first.forces))]
    stress = [None if any(m.stress[i] is None for m in members) else sum(w * m.stress[i] for w, m in
                                                                        zip(weights, members))
              for i in range(len(first.stress))]
    return StructureErrors(np.asarray(energy, float), forces, stress, list(first.groups))


def model_errors(model, structures: list[Atoms], labels: str, workers: int | None = None, scheduler: str = "",
                 where: str = "structures") -> StructureErrors:
    """The DFT head's errors on ``structures`` (each must carry DFT labels). A Δ-learning model's EIP labels
    them first (into the label store ``labels``, reused when there)."""
    missing = [k for k, a in enumerate(structures) if REF_ENERGY not in a.info]
    if missing:
        raise ValueError(f"{where}: structure(s) {missing[:10]} carry no DFT label")
    if model.reference_eip:
        structures = minus_eip(structures, PotentialsDB().get(model.reference_eip), labels, workers, scheduler, where)
    rows = predict_rows(model, make_samples(model, structures, [DFT_HEAD]), DFT_HEAD, batch_size=16)
    energy = np.array([r.energy - r.sample.targets[DFT_HEAD].energy / r.sample.n_atoms for r in rows])
    forces = [r.forces - r.sample.targets[DFT_HEAD].forces.numpy() if r.forces is not None else np.zeros((0, 3))
              for r in rows]
    stress = [r.stress - r.sample.targets[DFT_HEAD].stress.numpy() if r.stress is not None else None for r in rows]
    return StructureErrors(energy, forces, stress, [r.sample.group for r in rows])
