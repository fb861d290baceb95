"""The SNAP bispectrum in pure torch (TorchScript), equal to LAMMPS ``compute snap``'s.

The training descriptor of the bispectrum backbone is LAMMPS's
(:mod:`eip2nn.nn.bispectrum`); this module computes the same numbers from
edges, so that a scripted model carries its descriptor into the LAMMPS pair
style and autograd gives forces. The maths (Thompson et al., J. Comput. Phys.
285, 316 (2015); Varshalovich, Moskalev & Khersonskii, "Quantum Theory of
Angular Momentum", 1988 — VMK), with LAMMPS's conventions:

- each neighbour at r = (x, y, z) is a point on the 3-sphere: θ₀ = r_fac0 π (r − r_min0) / (r_c − r_min0),
  z₀ = r / tan θ₀, and the Cayley–Klein parameters a = (z₀ − i z) / r₀, b = (y − i x) / r₀, r₀ = √(r² + z₀²);
- the Wigner matrices U^j (j = 0 … 2J_max in LAMMPS's doubled labels), (j+1) × (j+1), index [m', m], by
  VMK 4.8.2's recursion U^j[m', m] = √((j−m)/(j−m')) ā U^{j−1}[m', m] − √(m/(j−m')) b̄ U^{j−1}[m', m−1]
  for the rows 2m' ≤ j, and the rest by the symmetry U^j[j−m', j−m] = (−1)^(m'+m) conj(U^j[m', m]);
- the atom's density U_i^j = w_self · 1 + Σ_neighbours f_c(r) U^j, with the switching function
  f_c = ½ (cos(π (r − r_min0)/(r_c − r_min0)) + 1) and w_self = 1 (every element of weight 1, as eip2nn's
  descriptor uses them);
- Z^{j}_{j1 j2}[m', m] = Σ C[m', m1', m2'] C[m, m1, m2] U_i^{j1}[m1', m1] U_i^{j2}[m2', m2], C the
  Clebsch–Gordan coefficients coupling j1 ⊗ j2 to j;
- B_{j1 j2 j} = Re Σ_{m', m} conj(U_i^j[m', m]) Z^{j}_{j1 j2}[m', m], minus w_self³ (j + 1) (bzeroflag: an
  atom without neighbours has B = 0), for LAMMPS's components j2 ≤ j1 ≤ j, in LAMMPS's order; computed as
  one list of triple products (:func:`bispectrum_terms`), 16,500 of them per atom at twojmax 8.

Only LAMMPS's switchflag 1 (the smooth cut-off) is implemented: eip2nn's descriptor always uses it.
"""

from __future__ import annotations

import math
from typing import List

import numpy as np
import torch
from torch import nn

from eip2nn.snap.bispectrum import n_bispectrum


def bispectrum_triples(twojmax: int) -> list[tuple[int, int, int]]:
    """(j1, j2, j) of each component, in LAMMPS's order (``idxb``): j2 ≤ j1 ≤ j, j1 + j2 + j even."""
    return [(j1, j2, j) for j1 in range(twojmax + 1) for j2 in range(j1 + 1)
            for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2) if j >= j1]


def clebsch_gordan(j1: int, j2: int, j: int) -> np.ndarray:
    """(j1+1, j2+1) coefficients ⟨j1/2 m1, j2/2 m2 | j/2 m⟩ with m = m1 + m2 − (j1 + j2 − j)/2 (doubled
    labels, m's counted from 0), by VMK 8.2.1(3); 0 where m falls outside 0 … j."""
    f = math.factorial
    cg = np.zeros((j1 + 1, j2 + 1))
    for m1 in range(j1 + 1):
        a2 = 2 * m1 - j1
        for m2 in range(j2 + 1):
            b2 = 2 * m2 - j2
            m = (a2 + b2 + j) // 2
            if m < 0 or m > j:
                continue
            c2 = 2 * m - j
            total = 0.0
            lo = max(0, -(j - j2 + a2) // 2, -(j - j1 - b2) // 2)
            hi = min((j1 + j2 - j) // 2, (j1 - a2) // 2, (j2 + b2) // 2)
            for z in range(lo, hi + 1):
                total += (-1) ** z / (f(z) * f((j1 + j2 - j) // 2 - z) * f((j1 - a2) // 2 - z)
                                      * f((j2 + b2) // 2 - z) * f((j - j2 + a2) // 2 + z) * f((j - j1 - b2) // 2 + z))
            delta = math.sqrt(f((j1 + j2 - j) // 2) * f((j1 - j2 + j) // 2) * f((-j1 + j2 + j) // 2)
                              / f((j1 + j2 + j) // 2 + 1))
            norm = math.sqrt(f((j1 + a2) // 2) * f((j1 - a2) // 2) * f((j2 + b2) // 2) * f((j2 - b2) // 2)
                             * f((j + c2) // 2) * f((j - c2) // 2) * (j + 1))
            cg[m1, m2] = total * delta * norm
    return cg


def bispectrum_terms(twojmax: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """B as a sum of products: B_k = Σ_t coef_t Re(conj(u[i_t]) u[i1_t] u[i2_t]) over the terms t of k.

    u is every U_i^j flattened and concatenated, (Σ_j (j+1)²,); returns (i, i1, i2, coef, k), each (T,).
    Each term is one (m', m) of U^j coupled to one (m1', m1) of U^{j1} (m2', m2 of U^{j2} follow); by the
    symmetry (m', m) ↔ (j−m', j−m), whose terms are complex conjugates, only rows 2m' ≤ j are kept, with
    weight 2 (1 for the centre of an even j): half the terms.
    """
    start = np.cumsum([0] + [(j + 1) ** 2 for j in range(twojmax)])
    cols: list[list] = [[], [], [], [], []]
    for k, (j1, j2, j) in enumerate(bispectrum_triples(twojmax)):
        cg, shift = clebsch_gordan(j1, j2, j), (j1 + j2 - j) // 2
        for mb in range(j // 2 + 1):
            for ma in range(j + 1):
                weight = 2.0 if (2 * mb < j or ma < mb) else (1.0 if ma == mb else 0.0)
                if weight == 0.0:
                    continue
                for mb1 in range(max(0, mb + shift - j2), min(j1, mb + shift) + 1):
                    for ma1 in range(max(0, ma + shift - j2), min(j1, ma + shift) + 1):
                        mb2, ma2 = mb + shift - mb1, ma + shift - ma1
                        coef = weight * cg[mb1, mb2] * cg[ma1, ma2]
                        if coef == 0.0:
                            continue
                        cols[0].append(start[j] + mb * (j + 1) + ma)
                        cols[1].append(start[j1] + mb1 * (j1 + 1) + ma1)
                        cols[2].append(start[j2] + mb2 * (j2 + 1) + ma2)
                        cols[3].append(coef)
                        cols[4].append(k)
    index = [np.asarray(c, dtype=np.int64) for c in (cols[0], cols[1], cols[2], cols[4])]
    return index[0], index[1], index[2], np.asarray(cols[3], dtype=np.float64), index[3]


def _flat(parts: list[np.ndarray]) -> torch.Tensor:
    return torch.as_tensor(np.concatenate(parts) if parts else np.zeros(0))


class TorchBispectrum(nn.Module):
    """Per-atom bispectrum B (N, K) from edges, K = :func:`n_bispectrum` (twojmax); TorchScript-able.

    ``cutoff`` r_c Å, ``rfac0`` and ``rmin0`` Å as LAMMPS's; ``bzero`` subtracts the isolated atom's B.
    Every neighbour counts with weight 1 whatever its element (eip2nn's descriptor is not element-resolved).
    """

    def __init__(self, cutoff: float, twojmax: int, rfac0: float, rmin0: float = 0.0, bzero: bool = True):
        super().__init__()
        if twojmax < 0 or not (0.0 <= rmin0 < cutoff) or not (0.0 < rfac0 <= 1.0):
            raise ValueError(f"bispectrum needs twojmax ≥ 0, 0 ≤ rmin0 < cutoff and 0 < rfac0 ≤ 1; got "
                             f"twojmax {twojmax}, rmin0 {rmin0}, cutoff {cutoff}, rfac0 {rfac0}")
        self.cutoff, self.twojmax = float(cutoff), int(twojmax)
        self.rfac0, self.rmin0, self.bzero = float(rfac0), float(rmin0), bool(bzero)
        self.size = n_bispectrum(self.twojmax)
        # recursion coefficients of the top rows (2m' ≤ j) of each U^j, and the symmetry's signs, flattened
        coef_a, coef_b, signs = [], [], []
        for j in range(1, self.twojmax + 1):
            rows, m = np.arange(j // 2 + 1)[:, None], np.arange(j + 1)[None, :]
            coef_a.append(np.sqrt(np.clip(j - m, 0, None) / (j - rows)).ravel())
            coef_b.append(np.sqrt(m / (j - rows)).ravel())
            signs.append(((-1.0) ** (np.arange(j + 1)[:, None] + m)).ravel())
        self.register_buffer("coef_a", _flat(coef_a))
        self.register_buffer("coef_b", _flat(coef_b))
        self.register_buffer("signs", _flat(signs))
        self.n_u = sum((j + 1) ** 2 for j in range(self.twojmax + 1))  # entries of all U^j of one atom
        # U_i's real parts start from w_self times the identity; its imaginary parts from 0
        self.register_buffer("u_start", _flat([np.eye(j + 1).ravel() for j in range(self.twojmax + 1)]
                                              + [np.zeros(self.n_u)]))
        self.register_buffer("bzero_values", torch.as_tensor([float(j + 1) for _, _, j in bispectrum_triples(self.twojmax)]))
        i, i1, i2, coef, component = bispectrum_terms(self.twojmax)
        # rows of the (2 n_u, n) real-then-imaginary U_i gathered for the terms: Re u_j, Im u_j, Re u_j1, ...
        self.register_buffer("term_rows", torch.as_tensor(np.concatenate([i, i + self.n_u, i1, i1 + self.n_u,
                                                                           i2, i2 + self.n_u])))
        self.register_buffer("term_coef", torch.as_tensor(coef)[:, None])
        self.register_buffer("term_component", torch.as_tensor(component))

    def forward(self, edge_src: torch.Tensor, edge_vectors: torch.Tensor, n_atoms: int) -> torch.Tensor:
        """B (n_atoms, K) from edges src → dst with vectors (E, 3) Å; edges at or beyond the cut-off count 0."""
        r = torch.linalg.norm(edge_vectors, dim=1)
        inside = (r < self.cutoff) & (r > 1e-10)
        v = edge_vectors[inside]
        src = edge_src[inside]
        r = r[inside]
        theta0 = (r - self.rmin0) * (self.rfac0 * math.pi / (self.cutoff - self.rmin0))
        z0 = r / torch.tan(theta0)
        r0 = torch.sqrt(r * r + z0 * z0)
        # conj(a) = (z0 + i z)/r0 and conj(b) = (y + i x)/r0, a and b the Cayley–Klein parameters; real and
        # imaginary parts kept apart (TorchScript's fused autodiff mishandles complex products)
        ar, ai = (z0 / r0)[:, None, None], (v[:, 2] / r0)[:, None, None]
        br, bi = (v[:, 1] / r0)[:, None, None], (v[:, 0] / r0)[:, None, None]
        switch = 0.5 * (torch.cos((r - self.rmin0) * (math.pi / (self.cutoff - self.rmin0))) + 1.0)
        weight = torch.where(r <= self.rmin0, torch.ones_like(r), switch)[:, None]

        # per-edge U^j (E, j+1, j+1), j by j, flattened and concatenated: (E, Σ (j+1)²)
        u_re = torch.ones(v.shape[0], 1, 1, dtype=v.dtype, device=v.device)
        u_im = torch.zeros_like(u_re)
        flat_re: List[torch.Tensor] = [u_re.reshape(-1, 1)]
        flat_im: List[torch.Tensor] = [u_im.reshape(-1, 1)]
        offset, sign_offset = 0, 0
        for j in range(1, self.twojmax + 1):
            rows = j // 2 + 1
            size = rows * (j + 1)
            ca = self.coef_a[offset:offset + size].view(rows, j + 1)
            cb = self.coef_b[offset:offset + size].view(rows, j + 1)
            offset += size
            left_re, left_im = nn.functional.pad(u_re[:, :rows, :], [0, 1]), nn.functional.pad(u_im[:, :rows, :], [0, 1])
            right_re, right_im = nn.functional.pad(u_re[:, :rows, :], [1, 0]), nn.functional.pad(u_im[:, :rows, :], [1, 0])
            top_re = ca * (ar * left_re - ai * left_im) - cb * (br * right_re - bi * right_im)
            top_im = ca * (ar * left_im + ai * left_re) - cb * (br * right_im + bi * right_re)
            sign = self.signs[sign_offset:sign_offset + (j + 1) * (j + 1)].view(j + 1, j + 1)[rows:, :]
            sign_offset += (j + 1) * (j + 1)
            u_re = torch.cat([top_re, sign * torch.flip(top_re[:, :j + 1 - rows, :], [1, 2])], dim=1)
            u_im = torch.cat([top_im, -sign * torch.flip(top_im[:, :j + 1 - rows, :], [1, 2])], dim=1)
            flat_re.append(u_re.reshape(-1, (j + 1) * (j + 1)))
            flat_im.append(u_im.reshape(-1, (j + 1) * (j + 1)))

        # per-atom densities U_i = w_self · 1 + Σ_edges f_c U, real parts then imaginary: (2 n_u, n)
        u = (self.u_start + torch.zeros(n_atoms, 2 * self.n_u, dtype=v.dtype, device=v.device).index_add(
            0, src, weight * torch.cat(flat_re + flat_im, dim=1))).transpose(0, 1).contiguous()
        ur, ui, r1, i1, r2, i2 = torch.index_select(u, 0, self.term_rows).chunk(6, dim=0)
        # Re(conj(u_j) u_j1 u_j2) = Re(u_j) Re(u_j1 u_j2) + Im(u_j) Im(u_j1 u_j2)
        terms = self.term_coef * (ur * (r1 * r2 - i1 * i2) + ui * (r1 * i2 + i1 * r2))
        b = edge_vectors.new_zeros(self.size, n_atoms).index_add_(0, self.term_component, terms).transpose(0, 1)
        if self.bzero:
            b = b - self.bzero_values
        return b
