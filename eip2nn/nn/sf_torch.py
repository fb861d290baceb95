"""Behler–Parrinello symmetry functions in pure torch (TorchScript), equal to KLIFF's.

The same functions as KLIFF's C++ kernel (``kliff/legacy/descriptors/
symmetry_function/sym_fn.cpp``), computed from edges so that a scripted model
can run them inside LAMMPS and autograd gives their derivatives. KLIFF's
conventions, kept exactly:

- cut-off fc(r) = ½ (cos(π r / r_c) + 1) for r < r_c, else 0; one r_c for every pair of elements;
- G1 = Σ_j fc(r_ij);  G2 = Σ_j exp(−η (r_ij − R_s)²) fc(r_ij);  G3 = Σ_j cos(κ r_ij) fc(r_ij);
- G4 = 2^(1−ζ) Σ_{j<k} (1 + λ cos θ_ijk)^ζ exp(−η (r_ij² + r_ik² + r_jk²)) fc(r_ij) fc(r_ik) fc(r_jk),
  each unordered neighbour pair once, θ_ijk the angle at i; a base 1 + λ cos θ ≤ 0 counts 0;
- G5 = the same without r_jk² in the exponent and without fc(r_jk);
- neighbours of every element count alike (the functions are not element-resolved);
- η in Å⁻² and R_s in Å: KLIFF's ``set51``/``set30`` are published in Bohr and
  KLIFF divides η by 0.529177² when it builds them; :func:`kliff_hyperparams`
  takes the tables from KLIFF itself, so the numbers are the ones its kernel uses;
- the functions come in the order of the hyperparameter table (``set51``: 8 G2, then 43 G4).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

KINDS = ("g1", "g2", "g3", "g4", "g5")
N_PARAMS = {"g1": 1, "g2": 2, "g3": 1, "g4": 3, "g5": 3}  # columns of each kind's table (g1: a placeholder)


def kliff_hyperparams(hyperparams: str | dict) -> dict[str, np.ndarray]:
    """KLIFF's resolved tables ``{kind: (K, n_params)}`` for a named set (``"set51"``, ``"set30"``) or a dict.

    Rows: g1 one placeholder; g2 (η Å⁻², R_s Å); g3 (κ Å⁻¹); g4 and g5 (ζ, λ, η Å⁻²). Order kept.
    """
    from kliff.legacy.descriptors import SymmetryFunction

    kliff = SymmetryFunction({"X-X": 1.0}, "cos", hyperparams, normalize=False, dtype=np.float64)
    return {name: np.asarray(table, dtype=np.float64) for name, table in kliff.get_hyperparams().items()}


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """KLIFF's ``cut_cos``: ½ (cos(π r / r_c) + 1) for r < r_c, else 0."""
    return 0.5 * (torch.cos(r * math.pi / cutoff) + 1.0) * (r < cutoff).to(r.dtype)


def neighbour_pairs(edge_src: torch.Tensor, n_atoms: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Every unordered pair of distinct edges leaving the same atom, once: edge indices (T,), (T,)."""
    n_edges = edge_src.shape[0]
    position = torch.arange(n_edges, device=edge_src.device)
    order = torch.argsort(edge_src, stable=True)
    sorted_src = edge_src[order]
    counts = torch.bincount(edge_src, minlength=n_atoms)
    start = torch.cumsum(counts, 0) - counts
    n_after = counts[sorted_src] - (position - start[sorted_src]) - 1  # later edges of the same atom
    first = torch.repeat_interleave(position, n_after)
    first_start = torch.repeat_interleave(torch.cumsum(n_after, 0) - n_after, n_after)
    second = first + 1 + torch.arange(first.shape[0], device=edge_src.device) - first_start
    return order[first], order[second]


class TorchSymmetryFunctions(nn.Module):
    """Per-atom symmetry functions G (N, D) from edges; TorchScript-able and differentiable.

    ``tables``: ``{kind: (K, n_params)}`` as :func:`kliff_hyperparams` returns, in KLIFF's order.
    """

    def __init__(self, cutoff: float, tables: dict[str, np.ndarray]):
        super().__init__()
        unknown = sorted(set(tables) - set(KINDS))
        if unknown:
            raise ValueError(f"symmetry functions {unknown} unknown; KLIFF has {list(KINDS)}")
        self.cutoff = float(cutoff)
        for kind in KINDS:
            table = np.asarray(tables.get(kind, np.zeros((0, N_PARAMS[kind]))), dtype=np.float64)
            self.register_buffer(kind, torch.as_tensor(table.reshape(-1, N_PARAMS[kind])))
        self.register_buffer("kliff_order", _kliff_order(list(tables), {k: getattr(self, k).shape[0] for k in KINDS}))
        self.size = int(self.kliff_order.shape[0])
        self._factorise_angular()

    def _factorise_angular(self) -> None:
        """Index the distinct (ζ, λ) and η of G4 and G5, so that each factor goes through pow or exp once.

        G4_k = A[:, a_k] · R4[:, e_k] per neighbour pair, with A (T, P) the angle factors of the P distinct
        (ζ, λ) and R4 (T, Q) the radial factors of the Q distinct η (set51: P = 8, Q = 7, K = 43); on
        1000 Si atoms at 5 Å this halves the time and cuts the memory of a forward-backward pass by a third.
        """
        angles, inverse = np.unique(torch.cat([self.g4[:, :2], self.g5[:, :2]]).numpy(), axis=0,
                                    return_inverse=True)
        inverse = torch.as_tensor(inverse.reshape(-1), dtype=torch.long)
        self.register_buffer("angle_zeta", torch.as_tensor(angles[:, 0]))
        self.register_buffer("angle_lambda", torch.as_tensor(angles[:, 1]))
        self.register_buffer("g4_angle", inverse[: self.g4.shape[0]])
        self.register_buffer("g5_angle", inverse[self.g4.shape[0]:])
        for kind in ("g4", "g5"):
            etas, eta_index = np.unique(getattr(self, kind)[:, 2].numpy(), return_inverse=True)
            self.register_buffer(f"{kind}_eta", torch.as_tensor(etas))
            self.register_buffer(f"{kind}_eta_index", torch.as_tensor(eta_index.reshape(-1), dtype=torch.long))

    @classmethod
    def from_kliff(cls, cutoff: float, hyperparams: str | dict = "set51") -> "TorchSymmetryFunctions":
        """The functions KLIFF's ``SymmetryFunction(..., "cos", hyperparams)`` computes, cut-off in Å."""
        return cls(cutoff, kliff_hyperparams(hyperparams))

    def forward(self, edge_src: torch.Tensor, edge_vectors: torch.Tensor, n_atoms: int) -> torch.Tensor:
        """G (n_atoms, D) from edges src → dst with vectors (E, 3) Å; an atom without edges gets 0."""
        r = torch.linalg.norm(edge_vectors, dim=1)
        fc = cosine_cutoff(r, self.cutoff)
        first, second = neighbour_pairs(edge_src, n_atoms)
        radial_terms = self._radial(r, fc)
        angular_terms = self._angular(edge_vectors, r, fc, first, second)
        radial = edge_vectors.new_zeros(n_atoms, radial_terms.shape[1]).index_add_(0, edge_src, radial_terms)
        angular = edge_vectors.new_zeros(n_atoms, angular_terms.shape[1]).index_add_(0, edge_src[first],
                                                                                     angular_terms)
        return torch.cat([radial, angular], dim=1)[:, self.kliff_order]

    def _radial(self, r: torch.Tensor, fc: torch.Tensor) -> torch.Tensor:
        """(E, K1 + K2 + K3) per-edge terms of G1, G2, G3."""
        g1 = fc[:, None].expand(-1, self.g1.shape[0])
        g2 = torch.exp(-self.g2[:, 0] * (r[:, None] - self.g2[:, 1]) ** 2) * fc[:, None]
        g3 = torch.cos(self.g3[:, 0] * r[:, None]) * fc[:, None]
        return torch.cat([g1, g2, g3], dim=1)

    def _angular(self, v: torch.Tensor, r: torch.Tensor, fc: torch.Tensor, first: torch.Tensor,
                 second: torch.Tensor) -> torch.Tensor:
        """(T, K4 + K5) per-pair terms of G4, G5 for neighbour pairs (j = first, k = second)."""
        r_ij, r_ik = r[first], r[second]
        r_jk = torch.linalg.norm(v[second] - v[first], dim=1)
        cos_ijk = (v[first] * v[second]).sum(1) / (r_ij * r_ik)
        fc_ij_ik = (fc[first] * fc[second])[:, None]
        sq_ij_ik = (r_ij**2 + r_ik**2)[:, None]

        angle = _angle_term(cos_ijk, self.angle_zeta, self.angle_lambda)  # (T, P)
        radial_g4 = (torch.exp(-self.g4_eta * (sq_ij_ik + (r_jk**2)[:, None]))
                     * fc_ij_ik * cosine_cutoff(r_jk, self.cutoff)[:, None])  # (T, Q4)
        radial_g5 = torch.exp(-self.g5_eta * sq_ij_ik) * fc_ij_ik  # (T, Q5)
        g4 = angle[:, self.g4_angle] * radial_g4[:, self.g4_eta_index]
        g5 = angle[:, self.g5_angle] * radial_g5[:, self.g5_eta_index]
        return torch.cat([g4, g5], dim=1)


def _angle_term(cos_ijk: torch.Tensor, zeta: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """(T, P) 2^(1−ζ) (1 + λ cos θ)^ζ, 0 where the base is ≤ 0 (as KLIFF)."""
    base = 1.0 + lam * cos_ijk[:, None]
    positive = base > 0
    safe = torch.where(positive, base, torch.ones_like(base))  # no pow of a non-positive base, even unused
    return torch.where(positive, torch.pow(2.0, 1.0 - zeta) * safe**zeta, torch.zeros_like(base))


def _kliff_order(table_order: list[str], sizes: dict[str, int]) -> torch.Tensor:
    """(D,) for each function in KLIFF's order (that of its tables), its column among the blocks in KINDS order.

    The forward puts the radial blocks (g1, g2, g3) first and the angular ones (g4, g5) after: KINDS order.
    """
    block_start = dict(zip(KINDS, np.cumsum([0] + [sizes[k] for k in KINDS[:-1]]).tolist()))
    columns = [block_start[kind] + i for kind in table_order for i in range(sizes[kind])]
    return torch.tensor(columns, dtype=torch.long)
