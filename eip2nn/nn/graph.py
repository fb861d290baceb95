"""Atomic graphs: one structure's neighbour list as tensors, and their batching.

A graph is built once per geometry (neighbour list from matscipy, optional
symmetry-function descriptors with their Jacobians) and reused every epoch.
Edges are directed pairs (src → dst) within the cut-off, including periodic
images: the edge vector is ``pos[dst] - pos[src] + offset`` with
``offset = shift @ cell`` (Å).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from ase import Atoms
from matscipy.neighbours import neighbour_list


class UnknownSpeciesError(ValueError):
    """A structure holds an element the model was not built for."""


@dataclass
class AtomicGraph:
    """One structure. N atoms, E directed edges, D descriptor values per atom."""

    species: torch.Tensor  # (N,) long, index into the model's species list
    positions: torch.Tensor  # (N, 3) Å
    cell: torch.Tensor  # (3, 3) Å, rows are lattice vectors (a box for molecules)
    periodic: bool  # True when all three directions are periodic (stress defined)
    edge_src: torch.Tensor  # (E,) long
    edge_dst: torch.Tensor  # (E,) long
    edge_offset: torch.Tensor  # (E, 3) Å, periodic-image offset: integer shift @ cell
    descriptor: torch.Tensor | None = None  # (N, D) symmetry functions at these positions
    descriptor_jacobian: torch.Tensor | None = None  # (E, D, 3) dG[src]/d(edge vector)

    @property
    def n_atoms(self) -> int:
        return int(self.species.shape[0])

    def to(self, dtype: torch.dtype) -> "AtomicGraph":
        """Copy with floating tensors cast to ``dtype``."""
        return AtomicGraph(**_cast(self, dtype))


def _cast(obj, dtype: torch.dtype, device: torch.device | None = None) -> dict:
    out = {}
    for f in fields(obj):
        v = getattr(obj, f.name)
        if isinstance(v, torch.Tensor):
            v = v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
        out[f.name] = v
    return out


@dataclass
class Batch:
    """Several graphs concatenated; B structures, N atoms, E edges in total."""

    species: torch.Tensor  # (N,)
    positions: torch.Tensor  # (N, 3) Å
    cell: torch.Tensor  # (B, 3, 3) Å
    periodic: torch.Tensor  # (B,) bool
    edge_src: torch.Tensor  # (E,) global atom index
    edge_dst: torch.Tensor  # (E,)
    edge_offset: torch.Tensor  # (E, 3) Å
    atom_graph: torch.Tensor  # (N,) structure index of each atom
    n_atoms: torch.Tensor  # (B,)
    descriptor: torch.Tensor | None = None  # (N, D)
    descriptor_jacobian: torch.Tensor | None = None  # (E, D, 3)

    @property
    def n_graphs(self) -> int:
        return int(self.n_atoms.shape[0])

    def to(self, dtype: torch.dtype, device: torch.device | None = None) -> "Batch":
        """Copy with floating tensors cast to ``dtype`` and all on ``device`` (no copy for tensors already so)."""
        return Batch(**_cast(self, dtype, device))


def species_indices(atoms: Atoms, species: list[str], where: str = "") -> np.ndarray:
    """Index of each atom's element in ``species``; raises for an element not in it."""
    symbols = atoms.get_chemical_symbols()
    unknown = sorted(set(symbols) - set(species))
    if unknown:
        raise UnknownSpeciesError(f"{where or 'structure'} contains {unknown}; the model knows only {species}")
    lookup = {s: i for i, s in enumerate(species)}
    return np.array([lookup[s] for s in symbols], dtype=np.int64)


def _box_for(atoms: Atoms, cutoff: float) -> tuple[np.ndarray, np.ndarray]:
    """(positions, cell): a non-periodic structure inside a box matscipy accepts."""
    pos = atoms.get_positions()
    lo, hi = pos.min(axis=0), pos.max(axis=0)
    return pos - lo + cutoff, np.diag(hi - lo + 2.0 * cutoff)


def build_graph(atoms: Atoms, cutoff: float, species: list[str], descriptor=None,
                where: str = "") -> AtomicGraph:
    """Neighbour graph of ``atoms`` within ``cutoff`` (Å).

    Fully periodic or fully open structures only (slabs with vacuum are fine as
    periodic cells). ``descriptor`` (a :class:`SymmetryFunctions`) adds the
    per-atom descriptors and their edge Jacobians.
    """
    pbc = atoms.get_pbc()
    if pbc.any() and not pbc.all():
        raise ValueError(f"{where or 'structure'}: mixed periodicity {pbc.tolist()} is not supported; "
                         "make it fully periodic with vacuum")
    z = species_indices(atoms, species, where)
    if pbc.all():
        positions, cell = atoms.get_positions(), atoms.get_cell().array
        src, dst, shift = neighbour_list("ijS", atoms, cutoff)
    else:
        positions, cell = _box_for(atoms, cutoff)
        boxed = Atoms(atoms.get_chemical_symbols(), positions=positions, cell=cell, pbc=False)
        src, dst, shift = neighbour_list("ijS", boxed, cutoff)
    order = np.lexsort((dst, src))  # deterministic edge order
    src, dst, shift = src[order], dst[order], shift[order]
    graph = AtomicGraph(
        species=torch.from_numpy(z),
        positions=torch.as_tensor(positions, dtype=torch.float64),
        cell=torch.as_tensor(cell, dtype=torch.float64),
        periodic=bool(pbc.all()),
        edge_src=torch.from_numpy(src.astype(np.int64)),
        edge_dst=torch.from_numpy(dst.astype(np.int64)),
        edge_offset=torch.from_numpy(shift.astype(np.float64) @ cell),
    )
    if descriptor is not None:
        vectors = positions[dst] - positions[src] + shift @ cell
        g, jac = descriptor.compute(z, src, dst, vectors)
        graph.descriptor = torch.from_numpy(g)
        graph.descriptor_jacobian = torch.from_numpy(jac)
    return graph


def collate(graphs: list[AtomicGraph]) -> Batch:
    """Concatenate graphs, offsetting atom indices; order of graphs is kept."""
    n = torch.tensor([g.n_atoms for g in graphs])
    start = torch.cumsum(n, 0) - n
    has_desc = graphs[0].descriptor is not None
    return Batch(
        species=torch.cat([g.species for g in graphs]),
        positions=torch.cat([g.positions for g in graphs]),
        cell=torch.stack([g.cell for g in graphs]),
        periodic=torch.tensor([g.periodic for g in graphs]),
        edge_src=torch.cat([g.edge_src + s for g, s in zip(graphs, start)]),
        edge_dst=torch.cat([g.edge_dst + s for g, s in zip(graphs, start)]),
        edge_offset=torch.cat([g.edge_offset for g in graphs]),
        atom_graph=torch.repeat_interleave(torch.arange(len(graphs)), n),
        n_atoms=n,
        descriptor=torch.cat([g.descriptor for g in graphs]) if has_desc else None,
        descriptor_jacobian=torch.cat([g.descriptor_jacobian for g in graphs]) if has_desc else None,
    )
