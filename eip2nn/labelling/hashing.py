"""Content hash of a structure: the key of its labels in the store."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
from ase import Atoms

DECIMALS = 8  # positions and cell are rounded to 1e-8 Å before hashing


def structure_hash(atoms: Atoms) -> str:
    """A 32-hex-digit hash of atomic numbers, positions, cell and pbc.

    Labels (info/arrays) are not part of it: the same geometry has the same
    EIP labels whatever else is attached. Rounding to 1e-8 Å makes the hash
    stable across round-trips through text formats such as extxyz.
    """
    return structure_hashes([atoms])[0]


def structure_hashes(structures: list[Atoms]) -> list[str]:
    """:func:`structure_hash` of each structure; rounds the positions of equal-sized structures
    together (one NumPy call per size instead of two per structure)."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for k, atoms in enumerate(structures):
        by_size[len(atoms)].append(k)
    out: list[str] = [""] * len(structures)
    for members in by_size.values():
        positions = _rounded(np.stack([structures[k].positions for k in members]))
        cells = _rounded(np.stack([structures[k].cell.array for k in members]))
        for k, pos, cell in zip(members, positions, cells):
            atoms = structures[k]
            h = hashlib.sha256(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
            h.update(pos.tobytes())
            h.update(cell.tobytes())
            h.update(np.asarray(atoms.pbc, dtype=np.uint8).tobytes())
            out[k] = h.hexdigest()[:32]
    return out


def _rounded(a: np.ndarray) -> np.ndarray:
    a = np.round(np.asarray(a, dtype=float), DECIMALS)
    a += 0.0  # turns -0.0 into 0.0
    return a
