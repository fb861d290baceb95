"""Seeded structure perturbations, each checked for overlapping atoms.

Every function returns a new ``Atoms`` (the seed is untouched) or raises
:class:`Rejected` saying why the result is not physical.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.data import covalent_radii
from matscipy.neighbours import neighbour_list


class Rejected(ValueError):
    """A generated structure failed a sanity check; the message says which."""


def check_no_overlap(atoms: Atoms, factor: float) -> None:
    """Reject if two atoms (or periodic images) are closer than ``factor`` × the sum of their covalent radii."""
    radii = covalent_radii[atoms.numbers]
    reach = 2.0 * factor * radii.max()
    if len(atoms) < 2 and not atoms.pbc.any():
        return
    i, j, d = neighbour_list("ijd", atoms, reach)
    limit = factor * (radii[i] + radii[j])
    bad = d < limit
    if bad.any():
        k = int(np.argmin(d - limit))
        raise Rejected(f"atoms {i[k]} and {j[k]} are {d[k]:.3f} Å apart, below {limit[k]:.3f} Å "
                       f"({factor} × the covalent radii sum)")


def rattle(atoms: Atoms, stdev: float, rng: np.random.Generator) -> Atoms:
    """Every atom displaced by a Gaussian of ``stdev`` Å per component."""
    out = atoms.copy()
    out.positions += rng.normal(0.0, stdev, size=out.positions.shape)
    return out


def strain(atoms: Atoms, max_strain: float, rng: np.random.Generator) -> tuple[Atoms, np.ndarray]:
    """A random symmetric strain ε (components uniform in ±``max_strain``), atoms scaled with the cell.

    Returns (strained atoms, ε (3, 3)). Periodic cells only.
    """
    if not atoms.pbc.all():
        raise Rejected("strain needs a fully periodic cell")
    eps = rng.uniform(-max_strain, max_strain, size=(3, 3))
    eps = 0.5 * (eps + eps.T)
    out = atoms.copy()
    out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out, eps


def vacancies(atoms: Atoms, n: int, rng: np.random.Generator) -> tuple[Atoms, list[int]]:
    """``n`` randomly chosen atoms removed; returns (atoms, removed indices of the seed)."""
    if n >= len(atoms) - 1:
        raise Rejected(f"cannot remove {n} of {len(atoms)} atoms and keep at least 2")
    removed = sorted(rng.choice(len(atoms), size=n, replace=False).tolist())
    out = atoms.copy()
    del out[removed]
    return out, removed
