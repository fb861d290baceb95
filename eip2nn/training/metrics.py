"""Energy, force and stress errors of one head on a set of samples, overall or per structure group.

Stress errors are reported in GPa (the unit stress is read in by people);
everything else, :class:`Parity` included, stays in the package's units.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from ase import units

from eip2nn.nn.graph import collate
from eip2nn.training.samples import Sample

EV_PER_A3_IN_GPA = 1.0 / units.GPa  # 1 eV/Å³ = 160.2 GPa
GROUP_PREFIX = "test/"  # metrics of one group of the test set: "test/<group>"


def group_metrics_key(group: str) -> str:
    """The metrics key of one test group, e.g. "test/AIMD-NVT" (characters MLflow refuses become "_")."""
    return GROUP_PREFIX + re.sub(r"[^A-Za-z0-9_.-]", "_", group)


@dataclass(frozen=True)
class Metrics:
    n_structures: int
    energy_mae: float  # meV/atom
    energy_rmse: float  # meV/atom
    force_mae: float  # eV/Å, per component
    force_rmse: float  # eV/Å, per component
    # stress fields default for metrics written before stress was scored (result.json, metrics.json)
    stress_mae: float = float("nan")  # GPa, per Voigt component; NaN when no structure has a stress label
    stress_rmse: float = float("nan")  # GPa, per Voigt component
    n_stress: int = 0  # structures with a stress label (periodic ones only)

    def as_dict(self, prefix: str) -> dict[str, float]:
        """Named metrics with units in the names; stress only when some structure had a stress label."""
        out = {f"{prefix}_energy_mae_meV_atom": self.energy_mae, f"{prefix}_energy_rmse_meV_atom": self.energy_rmse,
               f"{prefix}_force_mae_eV_A": self.force_mae, f"{prefix}_force_rmse_eV_A": self.force_rmse}
        if self.n_stress:
            out.update({f"{prefix}_stress_mae_GPa": self.stress_mae, f"{prefix}_stress_rmse_GPa": self.stress_rmse})
        return out


def _empty() -> np.ndarray:
    return np.zeros(0)


@dataclass
class Parity:
    """Reference and predicted values for parity plots."""

    energy_ref: np.ndarray  # (S,) eV/atom
    energy_pred: np.ndarray  # (S,) eV/atom
    force_ref: np.ndarray  # (n_components,) eV/Å
    force_pred: np.ndarray  # (n_components,) eV/Å
    stress_ref: np.ndarray = field(default_factory=_empty)  # (6 × structures with stress,) eV/Å³, Voigt
    stress_pred: np.ndarray = field(default_factory=_empty)  # (6 × structures with stress,) eV/Å³, Voigt


class PredictedRow(NamedTuple):
    """One sample's prediction by the scored head."""

    sample: Sample
    energy: float  # eV/atom (divided in the model's dtype)
    forces: np.ndarray | None  # (n_atoms, 3) eV/Å, when the target has forces
    stress: np.ndarray | None  # (6,) eV/Å³, when the target has a stress


def predict_rows(model, samples: list[Sample], head: str, batch_size: int) -> list[PredictedRow]:
    """Predictions of ``head`` for the samples that carry its target; stress only where a target has one."""
    have = [s for s in samples if head in s.targets]
    rows = []
    was_training = model.training
    model.eval()
    try:
        for k in range(0, len(have), batch_size):
            chunk = have[k:k + batch_size]
            stress = any(s.targets[head].stress is not None and s.graph.periodic for s in chunk)
            p = model(collate([s.graph for s in chunk]), heads=[head], forces=True, stress=stress,
                      create_graph=False)[head]
            n = torch.tensor([s.n_atoms for s in chunk], dtype=p.energy.dtype)
            per_atom = (p.energy.detach().cpu() / n).tolist()
            forces = p.forces.detach().cpu().split([s.n_atoms for s in chunk])
            for i, s in enumerate(chunk):
                t = s.targets[head]
                rows.append(PredictedRow(s, per_atom[i],
                                 forces[i].numpy() if t.forces is not None else None,
                                 p.stress[i].detach().cpu().numpy() if t.stress is not None and s.graph.periodic else None))
    finally:
        model.train(was_training)
    return rows


def _parity(rows: list[PredictedRow], head: str) -> Parity:
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    f = [(r.sample.targets[head].forces.numpy().ravel(), r.forces.ravel()) for r in rows if r.forces is not None]
    s = [(r.sample.targets[head].stress.numpy(), r.stress) for r in rows if r.stress is not None]
    return Parity(np.array([r.sample.targets[head].energy / r.sample.n_atoms for r in rows]),
                  np.array([r.energy for r in rows]),
                  cat([a for a, _ in f]), cat([b for _, b in f]), cat([a for a, _ in s]), cat([b for _, b in s]))


def predict(model, samples: list[Sample], head: str, batch_size: int = 16) -> Parity:
    """Predictions of ``head`` on the samples that carry its target (stress on those that carry one)."""
    return _parity(predict_rows(model, samples, head, batch_size), head)


def metrics_of(parity: Parity) -> Metrics:
    de = (parity.energy_pred - parity.energy_ref) * 1000.0
    df = parity.force_pred - parity.force_ref
    ds = (parity.stress_pred - parity.stress_ref) * EV_PER_A3_IN_GPA
    mae = lambda x: float(np.abs(x).mean()) if x.size else float("nan")  # noqa: E731
    rmse = lambda x: float(np.sqrt((x ** 2).mean())) if x.size else float("nan")  # noqa: E731
    return Metrics(len(de), mae(de), rmse(de), mae(df), rmse(df), mae(ds), rmse(ds), ds.size // 6)


def metrics_by_group(model, samples: list[Sample], head: str, batch_size: int = 16) -> dict[str, Metrics]:
    """{group: metrics of ``head`` on that group's samples}, sorted by group name; predicts once.

    Only groups with at least one sample carrying the head's target appear.
    """
    rows = predict_rows(model, samples, head, batch_size)
    return {g: metrics_of(_parity([r for r in rows if r.sample.group == g], head))
            for g in sorted({r.sample.group for r in rows})}


def metrics_table(first_column: str, metrics: dict[str, Metrics]) -> str:
    """Aligned table: one row per entry, energy in meV/atom, forces in eV/Å, stress (if any) in GPa."""
    from eip2nn.tables import format_table

    stress = any(m.n_stress for m in metrics.values())
    header = (first_column, "structures", "E MAE meV/atom", "E RMSE meV/atom", "F MAE eV/Å", "F RMSE eV/Å")
    rows = [header + (("σ MAE GPa",) if stress else ())]
    for name, m in metrics.items():
        row = (name, str(m.n_structures), f"{m.energy_mae:.2f}", f"{m.energy_rmse:.2f}",
               f"{m.force_mae:.3f}", f"{m.force_rmse:.3f}")
        if stress:
            row += (f"{m.stress_mae:.3f}" if m.n_stress else "-",)
        rows.append(row)
    return format_table(rows)


def evaluate(model, samples: list[Sample], head: str, batch_size: int = 16) -> Metrics:
    return metrics_of(predict(model, samples, head, batch_size))
