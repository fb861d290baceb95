"""Energy and force errors of one head on a set of samples."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from eip2nn.nn.graph import collate
from eip2nn.training.samples import Sample


@dataclass(frozen=True)
class Metrics:
    n_structures: int
    energy_mae: float  # meV/atom
    energy_rmse: float  # meV/atom
    force_mae: float  # eV/Å, per component
    force_rmse: float  # eV/Å, per component

    def as_dict(self, prefix: str) -> dict[str, float]:
        return {f"{prefix}_energy_mae_meV_atom": self.energy_mae, f"{prefix}_energy_rmse_meV_atom": self.energy_rmse,
                f"{prefix}_force_mae_eV_A": self.force_mae, f"{prefix}_force_rmse_eV_A": self.force_rmse}


@dataclass
class Parity:
    """Reference and predicted values for parity plots."""

    energy_ref: np.ndarray  # (S,) eV/atom
    energy_pred: np.ndarray  # (S,) eV/atom
    force_ref: np.ndarray  # (n_components,) eV/Å
    force_pred: np.ndarray  # (n_components,) eV/Å


def predict(model, samples: list[Sample], head: str, batch_size: int = 16) -> Parity:
    """Predictions of ``head`` on the samples that carry its target."""
    have = [s for s in samples if head in s.targets]
    e_ref, e_pred, f_ref, f_pred = [], [], [], []
    was_training = model.training
    model.eval()
    try:
        for k in range(0, len(have), batch_size):
            chunk = have[k:k + batch_size]
            p = model(collate([s.graph for s in chunk]), heads=[head], forces=True, create_graph=False)[head]
            n = torch.tensor([s.n_atoms for s in chunk], dtype=p.energy.dtype)
            e_pred.append((p.energy.detach() / n).numpy())
            e_ref.append(np.array([s.targets[head].energy / s.n_atoms for s in chunk]))
            forces = p.forces.detach().split([s.n_atoms for s in chunk])
            for s, f in zip(chunk, forces):
                if s.targets[head].forces is not None:
                    f_ref.append(s.targets[head].forces.numpy().ravel())
                    f_pred.append(f.numpy().ravel())
    finally:
        model.train(was_training)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    return Parity(cat(e_ref), cat(e_pred), cat(f_ref), cat(f_pred))


def metrics_of(parity: Parity) -> Metrics:
    de = (parity.energy_pred - parity.energy_ref) * 1000.0
    df = parity.force_pred - parity.force_ref
    nan = float("nan")
    return Metrics(len(de), float(np.abs(de).mean()) if de.size else nan, float(np.sqrt((de ** 2).mean())) if de.size else nan,
                   float(np.abs(df).mean()) if df.size else nan, float(np.sqrt((df ** 2).mean())) if df.size else nan)


def metrics_table(first_column: str, metrics: dict[str, Metrics]) -> str:
    """Aligned table: one row per entry, energy in meV/atom, forces in eV/Å."""
    from eip2nn.tables import format_table

    rows = [(first_column, "structures", "E MAE meV/atom", "E RMSE meV/atom", "F MAE eV/Å", "F RMSE eV/Å")]
    for name, m in metrics.items():
        rows.append((name, str(m.n_structures), f"{m.energy_mae:.2f}", f"{m.energy_rmse:.2f}",
                     f"{m.force_mae:.3f}", f"{m.force_rmse:.3f}"))
    return format_table(rows)


def evaluate(model, samples: list[Sample], head: str, batch_size: int = 16) -> Metrics:
    return metrics_of(predict(model, samples, head, batch_size))
