"""What crosses between the labelling parent and its workers: a chunk's geometries and labels
as a few NumPy arrays, not one small object per structure.

Pickling per-structure objects cost about 16 µs per 64-atom structure in the
parent (a tenth of evaluating it) and 10 µs in the worker.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from eip2nn.labelling.store import LabelRow
from eip2nn.potentials.evaluator import Geometry

# (numbers (m, n), positions (m, n, 3) Å, cells (m, 3, 3) Å, pbc (m, 3)): m structures of n atoms
GeometryBlock = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def pack_geometries(structures: list[Atoms]) -> list[GeometryBlock]:
    """One block per run of consecutive structures with equal atom counts, in order."""
    blocks = []
    start = 0
    while start < len(structures):
        n, end = len(structures[start]), start + 1
        while end < len(structures) and len(structures[end]) == n:
            end += 1
        blocks.append(geometry_block(structures[start:end]))
        start = end
    return blocks


def geometry_block(group: list[Atoms]) -> GeometryBlock:
    """The arrays of structures that all have the same number of atoms (np.array of a list of
    arrays: several times faster than np.stack)."""
    m, n = len(group), len(group[0])
    return (np.array([a.arrays["numbers"] for a in group], dtype=np.int64).reshape(m, n),
            np.array([a.arrays["positions"] for a in group], dtype=float).reshape(m, n, 3),
            np.array([a.cell.array for a in group], dtype=float).reshape(m, 3, 3),
            np.array([a.pbc for a in group], dtype=bool).reshape(m, 3))


def unpack_geometries(blocks: list[GeometryBlock]) -> list[Geometry]:
    """The structures of :func:`pack_geometries`, in order (views into the blocks)."""
    return [Geometry(*g) for block in blocks for g in zip(*block)]


def pack_labels(labels: list[LabelRow]) -> tuple:
    """Labels (hash, energy eV, forces (n, 3) eV/Å, stress (6,) eV/Å³ or None, seconds, local energies
    (n,) eV or None) as (hashes, atom counts (k,), energies (k,), forces (Σn, 3), stresses (k, 6),
    has stress (k,), seconds (k,), local energies (Σn,), has local energies (k,))."""
    stresses = np.zeros((len(labels), 6))
    has_stress = np.array([r.stress is not None for r in labels], dtype=bool)
    for row, r in zip(stresses, labels):
        if r.stress is not None:
            row[:] = r.stress
    sizes = np.array([len(r.forces) for r in labels], dtype=np.int64)
    has_local = np.array([r.local_energies is not None for r in labels], dtype=bool)
    local = np.zeros(int(sizes.sum()))
    for r, end, n in zip(labels, np.cumsum(sizes).tolist(), sizes.tolist()):
        if r.local_energies is not None:
            local[end - n:end] = r.local_energies
    return ([r.hash for r in labels], sizes, np.array([r.energy for r in labels], dtype=float),
            np.concatenate([r.forces for r in labels]) if labels else np.zeros((0, 3)),
            stresses, has_stress, np.array([r.seconds for r in labels], dtype=float), local, has_local)


def unpack_labels(packed: tuple) -> list[LabelRow]:
    """The labels of :func:`pack_labels`, in order (forces, stresses and local energies are views)."""
    hashes, sizes, energies, forces, stresses, has_stress, seconds, local, has_local = packed
    ends = np.cumsum(sizes).tolist()
    return [LabelRow(h, float(e), forces[end - n:end], s if has else None, float(sec),
                     local[end - n:end] if has_l else None)
            for h, n, end, e, s, has, sec, has_l in zip(hashes, sizes.tolist(), ends, energies, stresses,
                                                        has_stress, seconds, has_local)]
