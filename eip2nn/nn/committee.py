"""A committee: several networks of one design, trained on the same labels from other initial weights, that
predicts their mean.

E(structure) = (1/N) Σ_k E_k(structure); forces, stress and atom energies are the same means (the derivative of
a mean is the mean of the derivatives), made in one backward pass. The members share their config, species, heads
and Δ-learning EIP, so one graph (descriptors included) serves them all. A committee stands wherever an
:class:`~eip2nn.nn.model.EnergyModel` is used for prediction: metrics, the ASE calculator, the LAMMPS export.
"""

from __future__ import annotations

import torch
from ase import Atoms
from torch import nn

from eip2nn.nn.derivatives import Prediction, edge_vectors
from eip2nn.nn.graph import AtomicGraph, Batch
from eip2nn.nn.model import EnergyHead, EnergyModel, predict_heads


class Committee(nn.Module):
    """The mean of ``members`` (at least two :class:`EnergyModel` of one config, species, heads and EIP)."""

    def __init__(self, members: list[EnergyModel]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"a committee needs at least 2 members, got {len(members)}")
        first = members[0]
        for k, m in enumerate(members[1:], start=1):
            for what, a, b in (("model config", m.config, first.config), ("species", m.species, first.species),
                               ("heads", m.head_names, first.head_names),
                               ("Δ-learning EIP", m.reference_eip, first.reference_eip)):
                if a != b:
                    raise ValueError(f"committee member {k} differs from member 0 in its {what}: {a!r} against {b!r}")
        self.members = nn.ModuleList(members)

    @property
    def first(self) -> EnergyModel:
        return self.members[0]

    @property
    def config(self):
        return self.first.config

    @property
    def species(self) -> list[str]:
        return self.first.species

    @property
    def reference_eip(self) -> str:
        return self.first.reference_eip

    @property
    def head_names(self) -> list[str]:
        return self.first.head_names

    @property
    def prior(self):
        """Member 0's SNAP prior (each member carries the same one: fitted to the same labels)."""
        return self.first.prior

    def head(self, name: str) -> EnergyHead:
        """Member 0's head ``name``: KeyError listing the heads if absent."""
        return self.first.head(name)

    def graph(self, atoms: Atoms, where: str = "") -> AtomicGraph:
        return self.first.graph(atoms, where)

    def atomic_energies(self, batch: Batch, edge_vectors: torch.Tensor, heads: list[str]) -> dict[str, torch.Tensor]:
        """{head: (N,) eV}: the members' mean per-atom energies."""
        per_member = [m.atomic_energies(batch, edge_vectors, heads) for m in self.members]
        return {h: torch.stack([e[h] for e in per_member]).mean(dim=0) for h in heads}

    def forward(self, batch: Batch, heads: list[str] | None = None, forces: bool = True,
                stress: bool = False, create_graph: bool | None = None) -> dict[str, Prediction]:
        """As :meth:`EnergyModel.forward`, for the members' mean."""
        return predict_heads(self, batch, heads or self.head_names, forces, stress,
                             self.training if create_graph is None else create_graph)

    @torch.no_grad()
    def member_energies(self, batch: Batch, head: str) -> torch.Tensor:
        """(N_members, B) eV: each member's energy of each structure (its spread is the committee's disagreement)."""
        weight = next(self.parameters())
        batch = batch.to(weight.dtype, weight.device)
        v = edge_vectors(batch, batch.positions)
        return torch.stack([torch.zeros(batch.n_graphs, dtype=weight.dtype, device=weight.device)
                            .index_add_(0, batch.atom_graph, m.atomic_energies(batch, v, [head])[head])
                            for m in self.members])
