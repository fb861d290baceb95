"""The physics contract every energy model in eip2nn meets: EIP backends and neural networks alike.

Each check takes ``calc(atoms) -> (energy eV, forces (n, 3) eV/Å, stress (6,) eV/Å³ or None)``
and asserts one property of the functional form: forces are minus the energy
gradient, stress is the strain derivative of the energy (ASE convention,
positive = tensile), and energy, forces and stress follow rotations,
reflections, translations, atom permutations and another choice of periodic
cell. Callers choose the structures and the tolerances their arithmetic allows.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase import Atoms

VOIGT = [(0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)]


def numeric_forces(calc, atoms: Atoms, components, h: float) -> dict[tuple[int, int], float]:
    """−∂E/∂r for the (atom, axis) ``components`` by central differences with step ``h`` Å."""
    out = {}
    for i, k in components:
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[i, k] += h
        minus.positions[i, k] -= h
        out[(i, k)] = -(calc(plus)[0] - calc(minus)[0]) / (2 * h)
    return out


def check_forces_are_minus_the_energy_gradient(calc, atoms: Atoms, h: float, atol: float, rtol: float = 0.0,
                                               components=None, min_force: float = 0.0) -> None:
    """Forces equal −∂E/∂r (every component, or the (atom, axis) pairs given) to atol + rtol·|numeric|."""
    forces = calc(atoms)[1]
    components = components or [(i, k) for i in range(len(atoms)) for k in range(3)]
    assert np.abs(forces).max() > min_force  # a test on zero forces would pass for any sign
    for (i, k), numeric in numeric_forces(calc, atoms, components, h).items():
        assert forces[i, k] == pytest.approx(numeric, abs=atol + rtol * abs(numeric)), (i, k)


def check_stress_is_the_strain_derivative(calc, atoms: Atoms, h: float, atol: float, rtol: float = 0.0,
                                          min_stress: float = 0.0) -> None:
    """Voigt stress equals (1/V) ∂E/∂ε for a symmetric strain ε of each component, positions scaled with the cell."""
    stress = calc(atoms)[2]
    volume = atoms.get_volume()
    assert np.abs(stress).max() > min_stress
    for v, (i, j) in enumerate(VOIGT):
        energies = []
        for sign in (1, -1):
            deform = np.eye(3)
            deform[i, j] += sign * h / (1 if i == j else 2)
            deform[j, i] += 0 if i == j else sign * h / 2
            strained = atoms.copy()
            strained.set_cell(atoms.cell.array @ deform, scale_atoms=True)
            energies.append(calc(strained)[0])
        numeric = (energies[0] - energies[1]) / (2 * h) / volume
        assert stress[v] == pytest.approx(numeric, abs=atol + rtol * abs(numeric)), VOIGT[v]


def rotated(atoms: Atoms, rotation: np.ndarray, shift=(0.0, 0.0, 0.0)) -> Atoms:
    """``atoms`` rotated (or reflected) by the orthogonal ``rotation`` and shifted; a periodic cell rotates too."""
    moved = atoms.copy()
    moved.positions = atoms.positions @ rotation.T + np.asarray(shift)
    if atoms.pbc.any():
        moved.set_cell(atoms.cell.array @ rotation.T)
    return moved


def check_rotation_and_translation_invariance(calc, atoms: Atoms, rotation: np.ndarray, shift, atol: float) -> None:
    """E unchanged, F rotated with the structure (rotations, reflections, translations)."""
    e0, f0, _ = calc(atoms)
    e1, f1, _ = calc(rotated(atoms, rotation, shift))
    assert e1 == pytest.approx(e0, abs=atol)
    np.testing.assert_allclose(f1, f0 @ rotation.T, atol=atol)


def check_permutation_invariance(calc, atoms: Atoms, permutation: np.ndarray, atol: float) -> None:
    """E unchanged, F permuted with the atoms."""
    e0, f0, _ = calc(atoms)
    e1, f1, _ = calc(atoms[permutation])
    assert e1 == pytest.approx(e0, abs=atol)
    np.testing.assert_allclose(f1, f0[permutation], atol=atol)


def check_cell_choice_invariance(calc, atoms: Atoms, atol: float, stress_atol: float) -> None:
    """The same periodic lattice described by a skewed cell (c → c + a + b) gives the same E, F and stress."""
    e0, f0, s0 = calc(atoms)
    skewed = atoms.copy()
    cell = atoms.cell.array.copy()
    cell[2] += cell[0] + cell[1]
    skewed.set_cell(cell, scale_atoms=False)
    e1, f1, s1 = calc(skewed)
    assert e1 == pytest.approx(e0, abs=atol)
    np.testing.assert_allclose(f1, f0, atol=atol)
    np.testing.assert_allclose(s1, s0, atol=stress_atol)
