"""Export a trained model to TorchScript for the LAMMPS pair style.

The file is ``torch.jit.save(module, path, _extra_files={"eip2nn.json": metadata})``;
the module's contract with the C++ side:

``forward(species (n,) int64, edge_src (E,) int64, edge_dst (E,) int64, edge_vectors (E, 3) float64 Å)
-> (n,) float64 eV``

- ``species``: index into ``metadata["species"]`` for local and ghost atoms alike;
- edges: every ordered pair within the cut-off (both directions), any order,
  with ``edge_vectors = x[dst] - x[src]``;
- the result: one head's per-atom energies; an atom without edges still gets its own.

The caller sums the local atoms' energies and differentiates that sum with
respect to ``edge_vectors``: with g = ∂E/∂v, F[dst] -= g, F[src] += g, and the
virial is Σ_e v_e ⊗ g_e. ``metadata["interaction_range"]`` (Å) is how far an
atom's energy reaches: ghost atoms within it must be present, and those within
``interaction_range - cutoff`` must have their own edges (SchNet passes
messages ``depth`` times).

A message-passing model (SchNet) also has, for the pair style's layer-by-layer halo exchange
(``metadata["message_passing_layers"]`` layers of ``metadata["feature_width"]`` features per atom):
``initial_features(species (n,)) -> (n, F)``; per layer ``layer_inputs(layer, features (n, F)) -> (n, F)`` (what
each atom sends its neighbours) and ``layer_update(layer, features (m, F), inputs (n, F), edge_src, edge_dst,
edge_vectors) -> (m, F)`` (edge_src: rows of features, the receivers; edge_dst: rows of inputs, the senders); and
``energies_from_features(species (m,), features (m, F)) -> (m,)`` eV. ``forward`` is these in turn on one graph;
the pair style instead keeps features of its owned atoms only, runs each layer on their edges, and fetches the
ghost atoms' ``layer_inputs`` rows from their owners. Such a file may also carry its filters as a table
(``metadata["filter_table"]``): the buffer ``filter_table`` (layers, G, 6, F) holds, per layer and interval
[i h, (i+1) h) of r (h = ``filter_spacing`` Å), the quintic coefficients c_p of the filter
w(r) = filter(rbf(r)) fcut(r) = Σ_p c_p t^p, t = r / h - i (Hermite, as DeePMD-kit's model compression; files
before 0.02 Å quintic tables held 4 cubic coefficients, which the pair style still reads), and
``layer_output(layer, features (m, F), agg (m, F)) -> (m, F)`` finishes a layer from the aggregated messages
agg[i] = Σ_{e: src=i} inputs[dst[e]] ⊙ w(r_e), which the pair style then computes itself in one pass over the
edges, its gradient too.

With a table the file also carries its dense layers as plain numbers, ``native_dense`` (a list of tensors in the
module's dtype; ``metadata["native_dense"] == "schnet"``), so that the pair style can run the whole step in C++
without TorchScript or autograd (see :func:`schnet_dense_weights` for the order). A committee's members sit side by
side in it as one wider network: block-diagonal weights, its head's output weights already averaged.

A descriptor model also has ``energies_from_descriptor(species (n,) int64, descriptor (n, K)) -> (n,)`` eV:
what ``forward`` does after the descriptor. ``metadata["native_descriptor"]`` ``"bispectrum"`` or
``"symmetry_functions"`` says the pair style may compute the descriptor itself from the tables of
``backbone.descriptor`` (a :class:`~eip2nn.nn.bispectrum_torch.TorchBispectrum` or a
:class:`~eip2nn.nn.sf_torch.TorchSymmetryFunctions`) and run only that method in torch; files without the
key (or with "") run ``forward``.
"""

from __future__ import annotations

import copy
import json
import math
import os
from pathlib import Path
from typing import List

import torch
from torch import nn

from eip2nn import __version__
from eip2nn.nn.backbones import DescriptorNet, SchNet, cosine_cutoff
from eip2nn.nn.bispectrum import RFAC0
from eip2nn.nn.bispectrum_torch import TorchBispectrum
from eip2nn.nn.checkpoint import load_model
from eip2nn.nn.committee import Committee
from eip2nn.nn.model import DFT_HEAD, EnergyModel
from eip2nn.nn.prior import NoPrior
from eip2nn.nn.sf_torch import TorchSymmetryFunctions
from eip2nn.snap.bispectrum import BZEROFLAG

FORMAT = "eip2nn-lammps/1"
METADATA_FILE = "eip2nn.json"
# Å: a SchNet's filters are tabulated at this spacing unless export_model is told otherwise
FILTER_SPACING = 0.02


def _filter_of(block: nn.Module, rbf_gamma: float, rbf_centres: torch.Tensor, cutoff: float,
               beyond_cutoff: str = "zero"):
    """The filter w(r) (P,) Å -> (P, F) of an :class:`~eip2nn.nn.backbones.Interaction`, in float64. Beyond the
    cut-off it is 0 (``beyond_cutoff="zero"``, the model's filter) or the inside's formula continued
    (``"continued"``: smooth through the cut-off, so that a table's last knot holds the inside's left limits)."""
    block = copy.deepcopy(block).to(torch.float64).requires_grad_(False)
    centres = rbf_centres.detach().to(torch.float64)

    def w(r: torch.Tensor) -> torch.Tensor:
        rbf = torch.exp(-rbf_gamma * (r[:, None] - centres) ** 2)
        envelope = (cosine_cutoff(r, cutoff) if beyond_cutoff == "zero"
                    else 0.5 * (torch.cos(r * math.pi / cutoff) + 1.0))
        return block.filter(rbf) * envelope[:, None]
    return w


def _with_derivatives(w, r: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """w(r), dw/dr and d²w/dr² (each (P, F)) by forward-mode autograd."""
    ones = torch.ones_like(r)
    y, dy = torch.func.jvp(w, (r,), (ones,))
    _, d2y = torch.func.jvp(lambda x: torch.func.jvp(w, (x,), (ones,))[1], (r,), (ones,))
    return y, dy, d2y


def filter_table(backbone: SchNet, spacing: float) -> torch.Tensor:
    """Quintic Hermite coefficients (layers, G, 6, F) float64 of each interaction's filter on G = ⌈cutoff /
    spacing⌉ intervals of ``spacing`` Å, w = Σ_p c_p t^p on t ∈ [0, 1): from the values, slopes and curvatures
    (forward-mode autograd) at the knots, so w, dw/dr and d²w/dr² are continuous; the error falls as spacing⁶.
    Knots at or past the cut-off take the inside's formula continued (its left limits, not the jump to 0)."""
    if spacing <= 0:
        raise ValueError(f"filter spacing must be > 0 Å, got {spacing}")
    n = math.ceil(backbone.cutoff / spacing)
    knots = torch.arange(n + 1, dtype=torch.float64) * spacing
    layers = []
    for block in backbone.interactions:
        w = _filter_of(block, backbone.rbf_gamma, backbone.rbf_centres, backbone.cutoff, beyond_cutoff="continued")
        y, dy, d2y = _with_derivatives(w, knots)
        y0, y1 = y[:-1], y[1:]
        m0, m1 = dy[:-1] * spacing, dy[1:] * spacing  # per unit t
        a0, a1 = d2y[:-1] * spacing ** 2, d2y[1:] * spacing ** 2
        d = y1 - y0
        layers.append(torch.stack([y0, m0, a0 / 2,
                                   10 * d - 6 * m0 - 4 * m1 - (3 * a0 - a1) / 2,
                                   -15 * d + 8 * m0 + 7 * m1 + (3 * a0 - 2 * a1) / 2,
                                   6 * d - 3 * (m0 + m1) - (a0 - a1) / 2], dim=1))
    return torch.stack(layers)


def table_filter(coefficients: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """w and dw/dt (each (P, F)) from one layer's table rows ``coefficients`` (P, C, F) at ``t`` (P,) in [0, 1),
    C coefficients (6: quintic, 4: cubic)."""
    t = t[:, None]
    w, dw = coefficients[:, -1], torch.zeros_like(coefficients[:, 0])
    for p in range(coefficients.shape[1] - 2, -1, -1):
        dw = w + t * dw
        w = coefficients[:, p] + t * w
    return w, dw


def filter_table_errors(backbone: SchNet, table: torch.Tensor, spacing: float) -> dict:
    """Largest |table - network| of the filters and of their r-derivatives over every layer, at five points
    inside each interval below the cut-off, each relative to the network's largest |value|: {"filter": ...,
    "derivative": ...}."""
    n = table.shape[1]
    t = torch.tensor([0.1, 0.3, 0.5, 0.7, 0.9], dtype=torch.float64)
    r = ((torch.arange(n, dtype=torch.float64)[:, None] + t) * spacing).reshape(-1)
    r = r[r < backbone.cutoff]
    i = torch.clamp((r / spacing).floor().long(), max=n - 1)
    s = r / spacing - i
    worst = {"filter": 0.0, "derivative": 0.0}
    for k, block in enumerate(backbone.interactions):
        w = _filter_of(block, backbone.rbf_gamma, backbone.rbf_centres, backbone.cutoff)
        y, dy = torch.func.jvp(w, (r,), (torch.ones_like(r),))
        y_tab, dy_tab = table_filter(table[k][i], s)
        worst["filter"] = max(worst["filter"], float((y_tab - y).abs().max() / y.abs().max().clamp(min=1e-300)))
        worst["derivative"] = max(worst["derivative"],
                                  float((dy_tab / spacing - dy).abs().max() / dy.abs().max().clamp(min=1e-300)))
    return worst


def _block_diagonal(blocks: list[torch.Tensor]) -> torch.Tensor:
    return torch.block_diag(*blocks) if len(blocks) > 1 else blocks[0].clone()


def schnet_dense_weights(models: list[EnergyModel], head: str) -> list[torch.Tensor]:
    """The dense layers of SchNet ``models`` (one, or a committee's members, side by side: W = members × width
    features) as float64 tensors, Linear weights (out, in) with y = x Wᵀ + b:

    ``[embedding (S, W)]``, then per interaction ``[in2f (W, W), f2out.0 weight (W, W), f2out.0 bias (W,),
    f2out.2 weight (W, W), f2out.2 bias (W,)]``, then the head ``[net.0 weight (M H, W), net.0 bias (M H,),
    net.2 weight (M H,), net.2 bias (1,), offsets (S,)]`` with each member's ``scale`` and the committee's 1 / M
    folded into net.2 and the offsets. Between the two layers of each MLP: shifted softplus.
    """
    m = len(models)

    def f64(t: torch.Tensor) -> torch.Tensor:
        return t.detach().to(torch.float64)

    heads = [model.head(head) for model in models]
    out = [torch.cat([f64(model.backbone.embedding.weight) for model in models], dim=1)]
    for k in range(len(models[0].backbone.interactions)):
        blocks = [model.backbone.interactions[k] for model in models]
        out += [_block_diagonal([f64(b.in2f.weight) for b in blocks]),
                _block_diagonal([f64(b.f2out[0].weight) for b in blocks]),
                torch.cat([f64(b.f2out[0].bias) for b in blocks]),
                _block_diagonal([f64(b.f2out[2].weight) for b in blocks]),
                torch.cat([f64(b.f2out[2].bias) for b in blocks])]
    scales = [float(h.scale) / m for h in heads]
    out += [_block_diagonal([f64(h.net[0].weight) for h in heads]),
            torch.cat([f64(h.net[0].bias) for h in heads]),
            torch.cat([s * f64(h.net[2].weight).reshape(-1) for s, h in zip(scales, heads)]),
            sum(s * f64(h.net[2].bias).reshape(1) for s, h in zip(scales, heads)),
            sum(f64(h.offsets) for h in heads) / m]
    return out


class ExportedSchNet(nn.Module):
    """:class:`SchNet` on raw edges: embedding, Gaussian RBF, interactions aggregated into ``edge_src``."""

    def __init__(self, backbone: SchNet):
        super().__init__()
        self.cutoff = float(backbone.cutoff)
        self.rbf_gamma = float(backbone.rbf_gamma)
        self.register_buffer("rbf_centres", backbone.rbf_centres.detach().clone())
        self.embedding = copy.deepcopy(backbone.embedding)
        self.interactions = copy.deepcopy(backbone.interactions)

    def forward(self, species: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
                edge_vectors: torch.Tensor) -> torch.Tensor:
        """Features (n, width)."""
        rbf, fcut = self.edge_basis(edge_vectors)
        x = self.embedding(species)
        for block in self.interactions:
            x = block(x, rbf, fcut, edge_src, edge_dst)
        return x

    def edge_basis(self, edge_vectors: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(Gaussian RBF (E, n_rbf), cosine cut-off (E,)) of the edges."""
        r = torch.linalg.norm(edge_vectors, dim=1)
        return torch.exp(-self.rbf_gamma * (r[:, None] - self.rbf_centres) ** 2), cosine_cutoff(r, self.cutoff)

    def initial_features(self, species: torch.Tensor) -> torch.Tensor:
        """Features (n, width) before the first interaction: the species embedding."""
        return self.embedding(species)

    def layer_inputs(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        """What atoms of features (n, width) send their neighbours in interaction ``layer`` (0-based): (n, width)."""
        out = torch.empty(0)
        found = False
        for k, block in enumerate(self.interactions):
            if k == layer:
                out = block.in2f(features)
                found = True
        if not found:
            raise IndexError("layer_inputs: no such layer")
        return out

    def layer_update(self, layer: int, features: torch.Tensor, inputs: torch.Tensor, edge_src: torch.Tensor,
                     edge_dst: torch.Tensor, edge_vectors: torch.Tensor) -> torch.Tensor:
        """Interaction ``layer`` on atoms of features (m, width), edge e from ``inputs[edge_dst[e]]`` (rows of
        :meth:`layer_inputs`, any node set) into ``edge_src[e]`` (a row of features): new features (m, width)."""
        rbf, fcut = self.edge_basis(edge_vectors)
        out = features
        found = False
        for k, block in enumerate(self.interactions):
            if k == layer:
                out = block.update(features, inputs, rbf, fcut, edge_src, edge_dst)
                found = True
        if not found:
            raise IndexError("layer_update: no such layer")
        return out

    def layer_output(self, layer: int, features: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        """Interaction ``layer``'s new features (m, width) from features (m, width) and the aggregated filtered
        messages agg (m, width) (see the module docstring)."""
        out = features
        found = False
        for k, block in enumerate(self.interactions):
            if k == layer:
                out = block.output(features, agg)
                found = True
        if not found:
            raise IndexError("layer_output: no such layer")
        return out


class ExportedDescriptorNet(nn.Module):
    """:class:`DescriptorNet` with its descriptor (symmetry functions or bispectrum) computed in torch from the
    edges, not read from the graph: an atom's features depend on its own edges only."""

    def __init__(self, backbone: DescriptorNet, descriptor: nn.Module):
        super().__init__()
        if descriptor.size != backbone.mean.shape[0]:
            raise ValueError(f"descriptor has {descriptor.size} functions, the network expects "
                             f"{backbone.mean.shape[0]}")
        self.descriptor = descriptor
        self.n_species = int(backbone.n_species)
        self.register_buffer("mean", backbone.mean.detach().clone())
        self.register_buffer("std", backbone.std.detach().clone())
        self.net = copy.deepcopy(backbone.net)
        self.out_activation = copy.deepcopy(backbone.out_activation)

    def forward(self, species: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
                edge_vectors: torch.Tensor) -> torch.Tensor:
        """Features (n, width); ``edge_dst`` is unused (the descriptors are not element-resolved)."""
        return self.features_from_descriptor(species, self.descriptor(edge_src, edge_vectors, species.shape[0]))

    def features_from_descriptor(self, species: torch.Tensor, descriptor: torch.Tensor) -> torch.Tensor:
        """Features (n, width) of atoms of ``species`` (n,) with descriptor (n, K): standardised, species
        one-hot appended, the network."""
        x = (descriptor - self.mean) / self.std
        if self.n_species > 1:
            x = torch.cat([x, nn.functional.one_hot(species, self.n_species).to(x.dtype)], dim=1)
        return self.out_activation(self.net(x))


DTYPES = {"float64": torch.float64, "float32": torch.float32}
# owned atoms per model call the pair style uses for a descriptor model unless `pair_style eip2nn chunk N` says
# otherwise: the bispectrum's (16,800 terms x atoms) temporaries make 128 atoms cost 0.9 GB and 32 atoms 0.5 GB, at
# speeds equal within this machine's noise (benchmarks/lammps_chunks.py --backbone bispectrum); 128 for symmetry
# functions
CHUNK_ATOMS = {"symmetry_functions": 128, "bispectrum": 32}
# descriptors the pair style can compute in C++ from the module's tables ("native_descriptor" in the metadata)
NATIVE_DESCRIPTORS = {"bispectrum": "bispectrum", "symmetry_functions": "symmetry_functions"}


class ExportedModel(nn.Module):
    """One head of an :class:`EnergyModel` as a TorchScript-able module (see the module docstring), in
    ``dtype``: "float64" (default; equal to the model to round-off) or "float32" (about twice as fast,
    ~1e-6 relative); edge vectors are expected in that precision."""

    def __init__(self, model: EnergyModel, head: str = DFT_HEAD, dtype: str = "float64",
                 filter_spacing: float = 0.0):
        super().__init__()
        if head not in model.head_names:
            raise ValueError(f"model has no head {head!r}; its heads: {model.head_names}")
        config = model.config
        if config.backbone == "schnet":
            self.backbone = ExportedSchNet(model.backbone)
        elif config.backbone == "bispectrum":  # LAMMPS compute snap's numbers, in torch (bispectrum_torch)
            descriptor = TorchBispectrum(config.cutoff, config.twojmax, RFAC0, 0.0, bool(BZEROFLAG))
            self.backbone = ExportedDescriptorNet(model.backbone, descriptor)
        else:
            descriptor = TorchSymmetryFunctions.from_kliff(config.cutoff, config.descriptor)
            self.backbone = ExportedDescriptorNet(model.backbone, descriptor)
        self.head = copy.deepcopy(model.head(head))
        # a SchNet's filters tabulated (filter_spacing Å > 0), for the pair style; empty otherwise
        table = (filter_table(model.backbone, filter_spacing) if config.backbone == "schnet" and filter_spacing > 0
                 else torch.zeros(0, dtype=torch.float64))
        self.register_buffer("filter_table", table)
        self.filter_spacing = float(filter_spacing) if table.numel() else 0.0
        # with the table, the dense layers as numbers for the pair style's native SchNet (empty otherwise)
        self.native_dense = torch.jit.Attribute(
            [w.to(DTYPES.get(dtype, torch.float64)) for w in schnet_dense_weights([model], head)]
            if table.numel() else [], List[torch.Tensor])  # noqa: UP006 (TorchScript reads typing.List)
        # the SNAP prior belongs to the DFT head only (see EnergyModel.atomic_energies)
        self.prior = copy.deepcopy(model.prior) if model.prior is not None and head == DFT_HEAD else NoPrior()
        if dtype not in DTYPES:
            raise ValueError(f"export dtype must be one of {list(DTYPES)}, got {dtype!r}")
        self.to(DTYPES[dtype]).eval().requires_grad_(False)

    def forward(self, species: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
                edge_vectors: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (n,) eV."""
        if edge_src.shape[0] != edge_vectors.shape[0] or edge_dst.shape[0] != edge_vectors.shape[0]:
            raise ValueError("edge_src, edge_dst and edge_vectors must have one row per edge")
        if hasattr(self.backbone, "features_from_descriptor"):  # resolved when scripting
            return self.energies_from_descriptor(species, self.backbone.descriptor(edge_src, edge_vectors,
                                                                                   species.shape[0]))
        features = self.backbone(species, edge_src, edge_dst, edge_vectors)
        return self.head(features, species)

    @torch.jit.export
    def energies_from_descriptor(self, species: torch.Tensor, descriptor: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (n,) eV of atoms of ``species`` (n,) with descriptor (n, K), in the module's
        dtype: ``forward`` after the descriptor. Descriptor backbones only (SchNet raises)."""
        if hasattr(self.backbone, "features_from_descriptor"):  # resolved when scripting
            return (self.head(self.backbone.features_from_descriptor(species, descriptor), species)
                    + self.prior(descriptor, species))
        raise RuntimeError("energies_from_descriptor: this model's backbone has no per-atom descriptor")

    @torch.jit.export
    def initial_features(self, species: torch.Tensor) -> torch.Tensor:
        """Message passing only: features (n, F) of atoms of ``species`` (n,) before the first layer."""
        if hasattr(self.backbone, "interactions"):  # resolved when scripting
            return self.backbone.initial_features(species)
        raise RuntimeError("initial_features: this model's backbone does not pass messages")

    @torch.jit.export
    def layer_inputs(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        """Message passing only: what atoms of features (n, F) send their neighbours in layer ``layer``
        (0-based): (n, F)."""
        if hasattr(self.backbone, "interactions"):  # resolved when scripting
            return self.backbone.layer_inputs(layer, features)
        raise RuntimeError("layer_inputs: this model's backbone does not pass messages")

    @torch.jit.export
    def layer_update(self, layer: int, features: torch.Tensor, inputs: torch.Tensor, edge_src: torch.Tensor,
                     edge_dst: torch.Tensor, edge_vectors: torch.Tensor) -> torch.Tensor:
        """Message passing only: layer ``layer`` on atoms of features (m, F) -- new features (m, F), exact for an
        atom whose every edge is given (as ``edge_src``, a row of features) with its neighbour's
        :meth:`layer_inputs` row (``edge_dst``, a row of inputs (n, F))."""
        if hasattr(self.backbone, "interactions"):  # resolved when scripting
            return self.backbone.layer_update(layer, features, inputs, edge_src, edge_dst, edge_vectors)
        raise RuntimeError("layer_update: this model's backbone does not pass messages")

    @torch.jit.export
    def layer_output(self, layer: int, features: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        """Message passing only: layer ``layer``'s new features (m, F) from features (m, F) and the aggregated
        filtered messages agg (m, F) (module docstring)."""
        if hasattr(self.backbone, "interactions"):  # resolved when scripting
            return self.backbone.layer_output(layer, features, agg)
        raise RuntimeError("layer_output: this model's backbone does not pass messages")

    @torch.jit.export
    def energies_from_features(self, species: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Message passing only: per-atom energies (n,) eV from the last layer's features (n, F)."""
        if hasattr(self.backbone, "interactions"):  # resolved when scripting
            return self.head(features, species)
        raise RuntimeError("energies_from_features: this model's backbone does not pass messages")


class ExportedCommittee(nn.Module):
    """One head of a :class:`Committee`: the mean of its members' :class:`ExportedModel`, with the same
    contract. A descriptor model's descriptor is computed once (by ``backbone``, member 0's, whose tables the
    pair style reads for a native descriptor) and passed to every member."""

    def __init__(self, committee: Committee, head: str = DFT_HEAD, dtype: str = "float64",
                 filter_spacing: float = 0.0):
        super().__init__()
        self.members = nn.ModuleList([ExportedModel(m, head, dtype) for m in committee.members])
        self.backbone = copy.deepcopy(self.members[0].backbone)
        self.weight = 1.0 / len(self.members)
        self.member_width = int(committee.members[0].config.width)  # message passing: features per member
        # the members' filter tables side by side in F (the features are): one table for the pair style
        schnet = committee.config.backbone == "schnet" and filter_spacing > 0
        table = (torch.cat([filter_table(m.backbone, filter_spacing) for m in committee.members], dim=3) if schnet
                 else torch.zeros(0, dtype=torch.float64))
        self.register_buffer("filter_table", table.to(DTYPES[dtype]))
        self.filter_spacing = float(filter_spacing) if schnet else 0.0
        self.native_dense = torch.jit.Attribute(
            [w.to(DTYPES[dtype]) for w in schnet_dense_weights(list(committee.members), head)] if schnet else [],
            List[torch.Tensor])  # noqa: UP006

    def forward(self, species: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
                edge_vectors: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (n,) eV: the members' mean."""
        if hasattr(self.backbone, "features_from_descriptor"):  # resolved when scripting
            return self.energies_from_descriptor(species, self.backbone.descriptor(edge_src, edge_vectors,
                                                                                   species.shape[0]))
        total = torch.zeros(species.shape[0], dtype=edge_vectors.dtype, device=edge_vectors.device)
        for member in self.members:
            total = total + member(species, edge_src, edge_dst, edge_vectors)
        return total * self.weight

    @torch.jit.export
    def energies_from_descriptor(self, species: torch.Tensor, descriptor: torch.Tensor) -> torch.Tensor:
        """Per-atom energies (n,) eV: the members' mean on one descriptor (n, K)."""
        total = torch.zeros(species.shape[0], dtype=descriptor.dtype, device=descriptor.device)
        for member in self.members:
            total = total + member.energies_from_descriptor(species, descriptor)
        return total * self.weight

    @torch.jit.export
    def initial_features(self, species: torch.Tensor) -> torch.Tensor:
        """Message passing: the members' initial features side by side (n, members × width)."""
        parts: list[torch.Tensor] = []
        for member in self.members:
            parts.append(member.initial_features(species))
        return torch.cat(parts, dim=1)

    @torch.jit.export
    def layer_inputs(self, layer: int, features: torch.Tensor) -> torch.Tensor:
        """Message passing: each member's inputs from its own columns of features (n, members × width)."""
        parts: list[torch.Tensor] = []
        w = self.member_width
        for k, member in enumerate(self.members):
            parts.append(member.layer_inputs(layer, features[:, k * w:(k + 1) * w]))
        return torch.cat(parts, dim=1)

    @torch.jit.export
    def layer_update(self, layer: int, features: torch.Tensor, inputs: torch.Tensor, edge_src: torch.Tensor,
                     edge_dst: torch.Tensor, edge_vectors: torch.Tensor) -> torch.Tensor:
        """Message passing: each member's layer on its own columns of features (m, members × width) and inputs
        (n, members × width)."""
        parts: list[torch.Tensor] = []
        w = self.member_width
        for k, member in enumerate(self.members):
            parts.append(member.layer_update(layer, features[:, k * w:(k + 1) * w], inputs[:, k * w:(k + 1) * w],
                                             edge_src, edge_dst, edge_vectors))
        return torch.cat(parts, dim=1)

    @torch.jit.export
    def layer_output(self, layer: int, features: torch.Tensor, agg: torch.Tensor) -> torch.Tensor:
        """Message passing: each member's layer output from its own columns of features and agg (m, members ×
        width)."""
        parts: list[torch.Tensor] = []
        w = self.member_width
        for k, member in enumerate(self.members):
            parts.append(member.layer_output(layer, features[:, k * w:(k + 1) * w], agg[:, k * w:(k + 1) * w]))
        return torch.cat(parts, dim=1)

    @torch.jit.export
    def energies_from_features(self, species: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Message passing: per-atom energies (n,) eV, the members' mean."""
        total = torch.zeros(species.shape[0], dtype=features.dtype, device=features.device)
        w = self.member_width
        for k, member in enumerate(self.members):
            total = total + member.energies_from_features(species, features[:, k * w:(k + 1) * w])
        return total * self.weight


def export_metadata(model: EnergyModel | Committee, head: str = DFT_HEAD, dtype: str = "float64") -> dict:
    """What the pair style needs besides the module: elements, ranges (Å), units; ``committee``: its members."""
    config = model.config
    message_passing = config.backbone == "schnet"
    reach = config.cutoff * config.depth if message_passing else config.cutoff
    members = len(model.members) if isinstance(model, Committee) else 1
    return {"format": FORMAT, "species": list(model.species), "cutoff": float(config.cutoff),
            "interaction_range": float(reach), "backbone": config.backbone, "head": head, "dtype": dtype,
            "per_atom_descriptor": config.backbone != "schnet", "chunk_atoms": CHUNK_ATOMS.get(config.backbone, 0),
            "native_descriptor": NATIVE_DESCRIPTORS.get(config.backbone, ""),
            "snap_prior": model.prior is not None and head == DFT_HEAD,
            "units": "metal", "reference_eip": model.reference_eip, "eip2nn_version": __version__,
            "committee": members,
            "native_dense": "",
            "message_passing_layers": int(config.depth) if message_passing else 0,
            "feature_width": int(config.width) * members if message_passing else 0}


def export_model(model_or_checkpoint_path: EnergyModel | Committee | str | Path, out_path: str | Path,
                 head: str = DFT_HEAD, dtype: str = "float64", filter_spacing: float = FILTER_SPACING) -> dict:
    """Script ``head`` of the model or committee (or of the checkpoint at that path) into ``out_path``; returns
    the metadata. A SchNet's filters are also tabulated every ``filter_spacing`` Å (0: not), for the pair style;
    ``metadata["filter_table"]`` then says the spacing and the table's largest relative errors.

    Written atomically (temporary file, then rename). Raises ValueError for a head the model lacks.
    """
    model = model_or_checkpoint_path
    if not isinstance(model, (EnergyModel, Committee)):
        model = load_model(model)
    if filter_spacing < 0:
        raise ValueError(f"filter spacing must be >= 0 Å (0: no table), got {filter_spacing}")
    kind = ExportedCommittee if isinstance(model, Committee) else ExportedModel
    exported = kind(model, head, dtype, filter_spacing)
    scripted = torch.jit.script(exported)
    metadata = export_metadata(model, head, dtype)
    if exported.filter_spacing > 0:
        members = model.members if isinstance(model, Committee) else [model]
        shipped = exported.filter_table.to(torch.float64)  # in the file's dtype: its rounding counts too
        w = shipped.shape[3] // len(members)
        errors = [filter_table_errors(m.backbone, shipped[..., k * w:(k + 1) * w], filter_spacing)
                  for k, m in enumerate(members)]
        metadata["filter_table"] = {"spacing": filter_spacing, "intervals": int(exported.filter_table.shape[1]),
                                    "max_relative_error": {key: max(e[key] for e in errors) for key in errors[0]}}
        metadata["native_dense"] = "schnet"
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_suffix(out_path.suffix + f".tmp{os.getpid()}")
    torch.jit.save(scripted, str(tmp), _extra_files={METADATA_FILE: json.dumps(metadata)})
    os.replace(tmp, out_path)
    return metadata


def load_exported(path: str | Path) -> tuple[torch.jit.ScriptModule, dict]:
    """(module, metadata) of a file written by :func:`export_model`."""
    extra = {METADATA_FILE: ""}
    module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    if not extra[METADATA_FILE]:
        raise ValueError(f"{path} has no {METADATA_FILE}: not written by eip2nn's export_model")
    metadata = json.loads(extra[METADATA_FILE])
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{path}: format {metadata.get('format')!r}, expected {FORMAT!r}")
    return module, metadata
