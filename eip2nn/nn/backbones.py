"""Backbones: per-atom features (N, F) from edge vectors (E, 3) Å.

Both backbones see the geometry only through ``edge_vectors``, so forces and
stress follow from one autograd call in :mod:`eip2nn.nn.derivatives`.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from eip2nn.nn.graph import AtomicGraph, Batch


def shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.softplus(x) - math.log(2.0)


class ShiftedSoftplus(nn.Module):
    def forward(self, x):
        return shifted_softplus(x)


ACTIVATION_MODULES = {"shifted_softplus": ShiftedSoftplus, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}


def mlp(sizes: list[int], activation=ShiftedSoftplus) -> nn.Sequential:
    """Dense layers with ``activation`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if k < len(sizes) - 2:
            layers.append(activation())
    return nn.Sequential(*layers)


def cosine_cutoff(r: torch.Tensor, cutoff: float) -> torch.Tensor:
    """0.5 (cos(π r / r_c) + 1) inside the cut-off, 0 beyond; smooth to first order."""
    return 0.5 * (torch.cos(r * math.pi / cutoff) + 1.0) * (r < cutoff).to(r.dtype)


class Interaction(nn.Module):
    """SchNet continuous-filter convolution block (Schütt et al. 2018)."""

    def __init__(self, width: int, n_rbf: int):
        super().__init__()
        self.filter = mlp([n_rbf, width, width])
        self.in2f = nn.Linear(width, width, bias=False)
        self.f2out = mlp([width, width, width])

    def forward(self, x, rbf, fcut, src, dst):
        return self.update(x, self.in2f(x), rbf, fcut, src, dst)

    def update(self, x: torch.Tensor, inputs: torch.Tensor, rbf: torch.Tensor, fcut: torch.Tensor,
               src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
        """New features (n, F) of atoms x (n, F): edge e carries ``inputs[dst[e]]`` (``in2f`` of the sender,
        rows of any node set) filtered by (rbf, fcut) into ``src[e]``, a row of x."""
        w = self.filter(rbf) * fcut[:, None]  # (E, F)
        messages = inputs[dst] * w
        agg = torch.zeros_like(x).index_add_(0, src, messages)
        return self.output(x, agg)

    def output(self, x: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        """New features (n, F) of atoms x (n, F) from their aggregated filtered messages agg (n, F)."""
        return x + self.f2out(agg)


class SchNet(nn.Module):
    """SchNet-style message passing: embedding, Gaussian RBF, ``depth`` interactions."""

    needs_descriptor = False

    def __init__(self, n_species: int, cutoff: float, width: int = 64, depth: int = 3, n_rbf: int = 20):
        super().__init__()
        self.cutoff, self.width = float(cutoff), width
        self.embedding = nn.Embedding(n_species, width)
        self.register_buffer("rbf_centres", torch.linspace(0.0, cutoff, n_rbf))
        self.rbf_gamma = 0.5 / float(cutoff / (n_rbf - 1)) ** 2
        self.interactions = nn.ModuleList(Interaction(width, n_rbf) for _ in range(depth))

    def forward(self, batch: Batch, edge_vectors: torch.Tensor) -> torch.Tensor:
        r = torch.linalg.norm(edge_vectors, dim=1)
        rbf = torch.exp(-self.rbf_gamma * (r[:, None] - self.rbf_centres) ** 2)
        fcut = cosine_cutoff(r, self.cutoff)
        x = self.embedding(batch.species)
        for block in self.interactions:
            x = block(x, rbf, fcut, batch.edge_src, batch.edge_dst)
        return x


class DescriptorNet(nn.Module):
    """Per-atom descriptors (KLIFF symmetry functions or LAMMPS bispectrum), standardised, through an MLP.

    The descriptor values come precomputed on the batch with their edge
    Jacobians J; here G(v) = G₀ + Σ_edges J·(v − v₀), whose value is G₀ and
    whose gradient is exactly J, so autograd gives exact forces and stress.
    """

    needs_descriptor = True

    def __init__(self, n_species: int, cutoff: float, n_descriptors: int, width: int = 64, depth: int = 2,
                 activation: str = "shifted_softplus"):
        super().__init__()
        self.cutoff, self.width = float(cutoff), width
        self.n_species = n_species
        self.register_buffer("mean", torch.zeros(n_descriptors))
        self.register_buffer("std", torch.ones(n_descriptors))
        n_in = n_descriptors + (n_species if n_species > 1 else 0)
        self.net = mlp([n_in] + [width] * depth, ACTIVATION_MODULES[activation])
        self.out_activation = ACTIVATION_MODULES[activation]()

    @torch.no_grad()
    def fit_standardisation(self, graphs: list[AtomicGraph]) -> None:
        """Centre and scale each descriptor by its mean and std over the training atoms."""
        g = torch.cat([gr.descriptor for gr in graphs])
        self.mean.copy_(g.mean(0))
        self.std.copy_(g.std(0).clamp_min(1e-6))

    def forward(self, batch: Batch, edge_vectors: torch.Tensor) -> torch.Tensor:
        return self.features(self.descriptor_values(batch, edge_vectors), batch.species)

    @staticmethod
    def descriptor_values(batch: Batch, edge_vectors: torch.Tensor) -> torch.Tensor:
        """The descriptors (N, K) as a function of ``edge_vectors``: the batch's values, its Jacobians' gradient."""
        if batch.descriptor is None:
            raise ValueError("this backbone needs graphs built with descriptors (see EnergyModel.graph)")
        dv = edge_vectors - edge_vectors.detach()  # value 0, gradient 1
        dg = torch.einsum("edk,ek->ed", batch.descriptor_jacobian, dv)
        return batch.descriptor + torch.zeros_like(batch.descriptor).index_add_(0, batch.edge_src, dg)

    def features(self, descriptor: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        """Features (N, width) from descriptors (N, K): standardised, species one-hot appended, the MLP."""
        x = (descriptor - self.mean) / self.std
        if self.n_species > 1:
            x = torch.cat([x, nn.functional.one_hot(species, self.n_species).to(x.dtype)], dim=1)
        return self.out_activation(self.net(x))
