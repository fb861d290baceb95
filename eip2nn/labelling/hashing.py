"""Content hash of a structure: the key of its labels in the store."""

from __future__ import annotations

import hashlib
from collections import defaultdict

import numpy as np
from ase import Atoms

from eip2nn.labelling.packing import geometry_block

DECIMALS = 8  # positions and cell are rounded to 1e-8 Å before hashing


def structure_hash(atoms: Atoms) -> str:
    """A 32-hex-digit hash of atomic numbers, positions, cell and pbc.

    Labels (info/arrays) are not part of it: the same geometry has the same
    EIP labels whatever else is attached. Rounding to 1e-8 Å makes the hash
    stable across round-trips through text formats such as extxyz.
    """
    return structure_hashes([atoms])[0]


def structure_hashes(structures: list[Atoms]) -> list[str]:
    """:func:`structure_hash` of each structure. Structures of one size are laid out as rows of
    one byte array, so each costs a single sha256 call (the bytes hashed are the same)."""
    by_size: dict[int, list[int]] = defaultdict(list)
    for k, atoms in enumerate(structures):
        by_size[len(atoms)].append(k)
    out: list[str] = [""] * len(structures)
    for members in by_size.values():
        numbers, positions, cells, pbc = geometry_block([structures[k] for k in members])
        m = len(members)
        rows = np.concatenate([numbers.view(np.uint8), _rounded(positions).reshape(m, 3 * numbers.shape[1]).view(np.uint8),
                               _rounded(cells).reshape(m, 9).view(np.uint8), pbc.view(np.uint8)], axis=1)
        for k, row in zip(members, rows):
            out[k] = hashlib.sha256(row).hexdigest()[:32]
    return out


def _rounded(a: np.ndarray) -> np.ndarray:
    a = np.round(np.asarray(a, dtype=float), DECIMALS)
    a += 0.0  # turns -0.0 into 0.0
    return a
