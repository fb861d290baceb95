"""Content hash of a structure: the key of its labels in the store."""

from __future__ import annotations

import hashlib

import numpy as np
from ase import Atoms

DECIMALS = 8  # positions and cell are rounded to 1e-8 Å before hashing


def structure_hash(atoms: Atoms) -> str:
    """A 32-hex-digit hash of atomic numbers, positions, cell and pbc.

    Labels (info/arrays) are not part of it: the same geometry has the same
    EIP labels whatever else is attached. Rounding to 1e-8 Å makes the hash
    stable across round-trips through text formats such as extxyz.
    """
    h = hashlib.sha256()
    h.update(np.asarray(atoms.numbers, dtype=np.int64).tobytes())
    h.update((np.round(atoms.positions, DECIMALS) + 0.0).tobytes())  # + 0.0 turns -0.0 into 0.0
    h.update((np.round(atoms.cell.array, DECIMALS) + 0.0).tobytes())
    h.update(np.asarray(atoms.pbc, dtype=np.uint8).tobytes())
    return h.hexdigest()[:32]
