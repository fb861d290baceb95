"""Behler–Parrinello atom-centred symmetry functions, computed by KLIFF.

KLIFF's C++ kernel (``kliff.legacy.descriptors.SymmetryFunction``) gives each
atom's descriptor vector and its derivative with respect to every neighbour
position. We feed it our matscipy neighbour list one atom at a time, with the
neighbours as relative vectors, so the derivative is taken per edge: the
Jacobian ``dG[src]/d(edge vector)`` of shape (E, D, 3). The model turns it
into forces and stress by autograd (see :mod:`eip2nn.nn.backbones`).
"""

from __future__ import annotations

import numpy as np


class SymmetryFunctions:
    """Symmetry-function descriptor for ``species`` with one cut-off (Å).

    hyperparams: KLIFF's named sets ``"set51"`` (Artrith & Behler 2012, 51
    functions: G2 radial + G4 angular) or ``"set30"`` (30 functions), or a
    KLIFF hyperparameter dict.
    """

    def __init__(self, species: list[str], cutoff: float, hyperparams: str | dict = "set51"):
        from kliff.legacy.descriptors import SymmetryFunction

        self.species = list(species)
        self.cutoff = float(cutoff)
        cut = {f"{a}-{b}": self.cutoff for a in self.species for b in self.species}
        self._kliff = SymmetryFunction(cut, "cos", hyperparams, normalize=False, dtype=np.float64)
        self._codes = np.array([self._kliff.species_code[s] for s in self.species], dtype=np.intc)
        self.size = int(self._kliff.get_size())

    def compute(self, species_index: np.ndarray, edge_src: np.ndarray, edge_dst: np.ndarray,
                edge_vectors: np.ndarray, jacobian: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Descriptors (N, D) and Jacobians (E, D, 3) in 1/Å (None unless ``jacobian``); edges sorted by ``edge_src``."""
        if np.any(np.diff(edge_src) < 0):
            raise ValueError("edges must be sorted by source atom")
        n, d = len(species_index), self.size
        g = np.zeros((n, d))
        jac = np.zeros((len(edge_src), d, 3)) if jacobian else None
        codes = self._codes[species_index]
        bounds = np.searchsorted(edge_src, np.arange(n + 1))
        for i in range(n):
            lo, hi = bounds[i], bounds[i + 1]
            if hi == lo:  # isolated atom: every symmetry function is a sum over neighbours, so 0
                continue
            # local frame: atom i at the origin, then its neighbours (periodic images included)
            coords = np.ascontiguousarray(np.vstack([np.zeros((1, 3)), edge_vectors[lo:hi]]), dtype=np.double)
            sp = np.ascontiguousarray(np.concatenate([codes[i:i + 1], codes[edge_dst[lo:hi]]]), dtype=np.intc)
            neigh = np.arange(1, hi - lo + 1, dtype=np.intc)
            zeta, dzeta = self._kliff._cdesc.generate_one_atom(0, coords.ravel(), sp, neigh, jacobian)
            g[i] = zeta
            if not jacobian:
                continue
            # KLIFF orders the derivative as (neighbours..., centre atom); d/d(neighbour) = d/d(edge)
            jac[lo:hi] = np.asarray(dzeta).reshape(d, hi - lo + 1, 3)[:, : hi - lo, :].transpose(1, 0, 2)
        return g, jac
