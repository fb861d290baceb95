"""Multi-head energy model: one backbone, one head per label source.

E_head(structure) = Σ_atoms [scale_head · MLP_head(features) + offset_head[element]]

plus, on the DFT head of a bispectrum model with ``model.snap_prior``, a SNAP
fixed inside the model (:mod:`eip2nn.nn.prior`).

Each head has its own per-element offsets (eV/atom) and scale (eV), fitted
from its own labels before training (:mod:`eip2nn.nn.offsets`), because EIP and
DFT energies have zeros eV/atom apart.
"""

from __future__ import annotations

import torch
from ase import Atoms
from torch import nn

from eip2nn.nn.backbones import ACTIVATION_MODULES, DescriptorNet, SchNet, mlp
from eip2nn.nn.bispectrum import BispectrumDescriptor
from eip2nn.nn.config import ModelConfig
from eip2nn.nn.derivatives import Prediction, energies_and_derivatives
from eip2nn.nn.descriptors import SymmetryFunctions
from eip2nn.nn.graph import AtomicGraph, Batch, build_graph
from eip2nn.nn.graph_cache import CACHE, geometry_key
from eip2nn.nn.prior import SnapPrior

DFT_HEAD = "dft"


def head_key(name: str) -> str:
    """ModuleDict-safe key for a head name (EIP ids may contain dots)."""
    return name.replace(".", "__dot__")


class EnergyHead(nn.Module):
    """Per-atom energy from features: ``scale * MLP(x) + offsets[species]`` (eV)."""

    def __init__(self, width: int, hidden: int, n_species: int, activation: str = "shifted_softplus"):
        super().__init__()
        self.net = mlp([width, hidden, 1], ACTIVATION_MODULES[activation])
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("offsets", torch.zeros(n_species))

    def forward(self, features: torch.Tensor, species: torch.Tensor) -> torch.Tensor:
        return self.scale * self.net(features).squeeze(-1) + self.offsets[species]


class EnergyModel(nn.Module):
    """Backbone + named heads. ``species`` fixes the element order of every index."""

    def __init__(self, config: ModelConfig, species: list[str], heads: list[str], reference_eip: str = ""):
        super().__init__()
        self.config, self.species = config, list(species)
        # Δ-learning: the id of the EIP this model's energies are added to ("" = none); the model alone
        # predicts DFT − EIP, and EIP2NNCalculator evaluates the sum
        self.reference_eip = reference_eip
        n = len(self.species)
        self.descriptor, self.prior = None, None
        if config.backbone == "schnet":
            self.backbone = SchNet(n, config.cutoff, config.width, config.depth, config.n_rbf)
        else:
            if config.backbone == "bispectrum":
                self.descriptor = BispectrumDescriptor(self.species, config.cutoff, config.twojmax)
            else:
                self.descriptor = SymmetryFunctions(self.species, config.cutoff, config.descriptor)
            self.backbone = DescriptorNet(n, config.cutoff, self.descriptor.size, config.width, config.depth,
                                          config.activation)
        # model.snap_prior: a SNAP on the bispectrum, fixed, added to the DFT head (its coefficients are set by
        # the training plan, or loaded with the state dict)
        self.prior = SnapPrior(n, self.descriptor.size) if config.snap_prior != "none" else None
        self.heads = nn.ModuleDict()
        for h in heads:
            self.add_head(h)

    @property
    def head_names(self) -> list[str]:
        return list(self._head_names)

    def add_head(self, name: str, copy_from: str | None = None) -> EnergyHead:
        """Add head ``name`` (fresh, or a copy of head ``copy_from``)."""
        if not hasattr(self, "_head_names"):
            self._head_names: list[str] = []
        if name in self._head_names:
            raise ValueError(f"head {name!r} exists")
        head = EnergyHead(self.config.width, self.config.head_hidden, len(self.species), self.config.activation)
        if copy_from is not None:
            head.load_state_dict(self.head(copy_from).state_dict())
        head.to(next(self.backbone.parameters()).dtype)
        self.heads[head_key(name)] = head
        self._head_names.append(name)
        return head

    def head(self, name: str) -> EnergyHead:
        if name not in self.head_names:
            raise KeyError(f"no head {name!r}; heads: {self.head_names}")
        return self.heads[head_key(name)]

    def graph(self, atoms: Atoms, where: str = "") -> AtomicGraph:
        """The graph this model needs for ``atoms`` (with descriptors if the backbone uses them); cached."""
        dtype = next(self.backbone.parameters()).dtype
        key = (geometry_key(atoms), self.config.cutoff, tuple(self.species),
               self.descriptor_key(), str(dtype))
        graph = CACHE.get(key)
        if graph is None:
            graph = build_graph(atoms, self.config.cutoff, self.species, self.descriptor, where).to(dtype)
            CACHE.put(key, graph)
        return graph

    def descriptor_key(self) -> tuple | None:
        """What fixes the descriptor values of a graph (None: the backbone reads no descriptor)."""
        if self.config.backbone == "bispectrum":
            return ("bispectrum", self.config.twojmax)
        return ("symmetry_functions", self.config.descriptor) if self.descriptor is not None else None

    def atomic_energies(self, batch: Batch, edge_vectors: torch.Tensor, heads: list[str]) -> dict[str, torch.Tensor]:
        """{head: (N,) eV} per-atom energies (the DFT head's with the SNAP prior, if the model has one)."""
        if self.prior is None:
            x = self.backbone(batch, edge_vectors)
            return {h: self.head(h)(x, batch.species) for h in heads}
        g = self.backbone.descriptor_values(batch, edge_vectors)
        x = self.backbone.features(g, batch.species)
        return {h: self.head(h)(x, batch.species) + (self.prior(g, batch.species) if h == DFT_HEAD else 0.0)
                for h in heads}

    def forward(self, batch: Batch, heads: list[str] | None = None, forces: bool = True,
                stress: bool = False, create_graph: bool | None = None) -> dict[str, Prediction]:
        """Energies (B,) eV, forces (N, 3) eV/Å, stress (B, 6) eV/Å³ and atom energies (N,) eV per head,
        on the model's device."""
        return predict_heads(self, batch, heads or self.head_names, forces, stress,
                             self.training if create_graph is None else create_graph)


def predict_heads(model: nn.Module, batch: Batch, heads: list[str], forces: bool, stress: bool,
                  create_graph: bool) -> dict[str, Prediction]:
    """``model.atomic_energies`` summed per structure and differentiated: what a model's ``forward`` returns
    (:class:`EnergyModel`, :class:`eip2nn.nn.committee.Committee`)."""
    weight = next(model.parameters())
    batch = batch.to(weight.dtype, weight.device)
    per_atom = {}

    def energy_fn(v):
        per_atom.update(model.atomic_energies(batch, v, heads))
        return {h: torch.zeros(batch.n_graphs, dtype=weight.dtype, device=weight.device).index_add_(0, batch.atom_graph, e)
                for h, e in per_atom.items()}

    out = energies_and_derivatives(energy_fn, batch, forces, stress, create_graph)
    return {h: p._replace(atom_energies=per_atom[h]) for h, p in out.items()}
