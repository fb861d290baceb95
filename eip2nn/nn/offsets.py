"""Fit a head's per-element offsets and scale from its labels, before training."""

from __future__ import annotations

import numpy as np
import torch

from eip2nn.alignment import per_element_offsets


@torch.no_grad()
def fit_head_statistics(head, counts: np.ndarray, energies: np.ndarray, forces: list[np.ndarray],
                        fit_scale: bool = True) -> dict:
    """Set ``head.offsets`` (eV/atom) by least squares and, if ``fit_scale``, ``head.scale`` (eV).

    counts: (S, n_species) atoms per element; energies: (S,) eV; forces: arrays
    (n_atoms, 3) eV/Å. The scale is the RMS force component (the energy change
    per Å a feature of order one should produce), else the per-atom energy
    spread left after the offsets; at least 1 meV.
    """
    mu = per_element_offsets(counts, energies)
    resid = (energies - counts @ mu) / counts.sum(axis=1)
    f = np.concatenate([x.ravel() for x in forces]) if forces else np.zeros(0)
    scale = float(np.sqrt(np.mean(f ** 2))) if f.size else float(np.std(resid))
    scale = max(scale, 1e-3)
    head.offsets.copy_(torch.as_tensor(mu, dtype=head.offsets.dtype))
    if fit_scale:
        head.scale.fill_(scale)
    return {"offsets_eV_per_atom": mu.tolist(), "scale_eV": float(head.scale),
            "residual_std_meV_per_atom": float(np.std(resid) * 1000.0)}
