"""A SNAP fitted to the training labels, fixed inside a bispectrum network (``model.snap_prior``).

Per atom of element s with bispectrum B (K,) (LAMMPS ``compute snap``, the
isolated atom's subtracted, as the network reads it):

    e_prior = c_s + l_s · B + ½ Bᵀ Q_s B        (eV)

with c, l and the symmetric Q the coefficients of a linear or quadratic
:class:`eip2nn.snap.model.SnapModel` (its ``α_kl``: ``Q_kk = α_kk``,
``Q_kl = Q_lk = α_kl``). The network's DFT head adds what the SNAP misses.
The coefficients are buffers: training does not move them (the ridge fit
chose their regularisation on validation).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from eip2nn.snap.bispectrum import n_bispectrum


class SnapPrior(nn.Module):
    """Per-atom energies (n,) eV of a linear or quadratic SNAP, from the bispectrum (n, K) and species (n,)."""

    def __init__(self, n_species: int, n_descriptors: int):
        super().__init__()
        self.register_buffer("constant", torch.zeros(n_species))
        self.register_buffer("linear", torch.zeros(n_species, n_descriptors))
        self.register_buffer("quadratic", torch.zeros(n_species, n_descriptors, n_descriptors))

    def forward(self, descriptor: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        q = torch.einsum("nk,nkl->nl", descriptor, self.quadratic[species])
        return self.constant[species] + ((self.linear[species] + 0.5 * q) * descriptor).sum(dim=1)

    @torch.no_grad()
    def load_snap(self, snap, species: list[str]) -> None:
        """Take the coefficients of ``snap`` (a SnapModel on this network's bispectrum) for ``species`` in order."""
        k = self.linear.shape[1]
        if n_bispectrum(snap.twojmax) != k:
            raise ValueError(f"SNAP of twojmax {snap.twojmax} has {n_bispectrum(snap.twojmax)} bispectrum "
                             f"components; the network reads {k}")
        upper = np.triu_indices(k)
        for s, element in enumerate(species):
            c = np.asarray(snap.coefficients[element], dtype=float)
            self.constant[s] = float(c[0])
            self.linear[s] = torch.as_tensor(c[1:1 + k])
            q = np.zeros((k, k))
            if snap.quadratic:
                q[upper] = c[1 + k:]
                q = q + np.triu(q, 1).T
            self.quadratic[s] = torch.as_tensor(q)


class NoPrior(nn.Module):
    """Zero per-atom energies: what :class:`SnapPrior` adds to a model without one (TorchScript-able)."""

    def forward(self, descriptor: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        return torch.zeros(species.shape[0], dtype=descriptor.dtype, device=descriptor.device)
