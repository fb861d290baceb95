"""The one place where forces and stress are made: autograd of the energy.

Positions and a homogeneous strain ε (B, 3, 3) enter the edge vectors,
v = (r_dst − r_src + S·cell)(1 + ε); then F = −∂E/∂r (eV/Å) and
σ = (1/V) ∂E/∂ε (eV/Å³, ASE sign: positive = tensile, Voigt xx yy zz yz xz xy).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch

from eip2nn.nn.graph import Batch


class Prediction(NamedTuple):
    energy: torch.Tensor  # (B,) eV
    forces: torch.Tensor | None  # (N, 3) eV/Å
    stress: torch.Tensor | None  # (B, 6) eV/Å³; NaN for non-periodic structures
    atom_energies: torch.Tensor | None = None  # (N,) eV, each atom's share of its structure's energy


def edge_vectors(batch: Batch, positions: torch.Tensor, strain: torch.Tensor | None = None) -> torch.Tensor:
    """(E, 3) Å; with ``strain`` (B, 3, 3), deformed by (1 + ε) of each edge's structure."""
    v = positions[batch.edge_dst] - positions[batch.edge_src] + batch.edge_offset
    if strain is None:
        return v
    g = batch.atom_graph[batch.edge_src]
    return v + torch.bmm(v[:, None, :], strain[g]).squeeze(1)


def energies_and_derivatives(energy_fn: Callable[[torch.Tensor], dict[str, torch.Tensor]], batch: Batch,
                             forces: bool, stress: bool, create_graph: bool) -> dict[str, Prediction]:
    """Call ``energy_fn(edge_vectors) -> {head: (B,) energies}`` and differentiate each head."""
    positions = batch.positions.detach().clone().requires_grad_(forces)
    strain = torch.zeros_like(batch.cell).requires_grad_() if stress else None
    energies = energy_fn(edge_vectors(batch, positions, strain))
    inputs = [t for t, want in ((positions, forces), (strain, stress)) if want]
    volume = torch.linalg.det(batch.cell).abs()
    out = {}
    names = list(energies)
    for k, name in enumerate(names):
        e = energies[name]
        if not inputs:
            out[name] = Prediction(e, None, None)
            continue
        grads = torch.autograd.grad(e.sum(), inputs, create_graph=create_graph,
                                    retain_graph=create_graph or k < len(names) - 1)
        f = -grads[0] if forces else None
        s = None
        if stress:
            de = grads[-1]
            sym = 0.5 * (de + de.transpose(1, 2)) / volume[:, None, None]
            s = sym[:, [0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
            s = torch.where(batch.periodic[:, None], s, torch.full_like(s, float("nan")))
        out[name] = Prediction(e, f, s)
    return out
