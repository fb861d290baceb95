"""Small structures shared by the labelling tests."""

import numpy as np
from ase.build import bulk


def rattled_si_cells(n: int, seed: int, noise: float, tag: str = "test") -> list:
    """``n`` diamond-Si cells, 8 and 16 atoms in turn, positions rattled by ``noise`` Å (normal);
    ``info["config_id"]`` is ``"<tag>/<index>"``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat((1, 1, 1 + i % 2))
        atoms.positions += noise * rng.normal(size=atoms.positions.shape)
        atoms.info["config_id"] = f"{tag}/{i}"
        out.append(atoms)
    return out
