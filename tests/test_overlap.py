"""The overlap check: exact search, and the displacement bound that spares it in a run of structures."""

import numpy as np
import pytest
from ase.build import bulk
from ase.neighborlist import neighbor_list

from eip2nn.potentials.evaluator import MIN_DISTANCE, TOO_CLOSE, EvaluationError
from eip2nn.potentials.overlap import check_min_distance, clear_by_displacement, closest_pair_distance, inverse_transpose


def closest_by_ase(atoms, search=6.0):
    """Closest pair distance, periodic images included, by ASE's own neighbour list, Å."""
    return neighbor_list("d", atoms, search).min()


def skewed_si(seed):
    atoms = bulk("Si", "diamond", a=5.431, cubic=True)
    rng = np.random.default_rng(seed)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.15 * rng.normal(size=(3, 3))), scale_atoms=True)
    atoms.positions += 0.2 * rng.normal(size=atoms.positions.shape)
    return atoms


@pytest.mark.parametrize("seed", range(4))
def test_closest_pair_distance_agrees_with_ase(seed):
    atoms = skewed_si(seed)
    cell = atoms.cell.array
    got = closest_pair_distance(atoms.positions, cell, inverse_transpose(cell), atoms.pbc, search_range=6.0)
    assert got == pytest.approx(closest_by_ase(atoms), abs=1e-12)


def test_the_displacement_bound_never_clears_an_overlap_and_is_tight():
    """Over many random runs: a cleared structure truly has no pair closer than MIN_DISTANCE. And the bound
    is no looser than it must be: the closest pair pushed together by just under / over the allowed
    reach is cleared / not cleared."""
    rng = np.random.default_rng(0)
    cleared = 0
    for seed in range(20):
        reference = skewed_si(seed)
        cell = reference.cell.array
        d_ref = closest_pair_distance(reference.positions, cell, inverse_transpose(cell), reference.pbc)
        moved = reference.positions + rng.uniform(0.05, 1.0) * rng.normal(size=(30, len(reference), 3))
        ok = clear_by_displacement(reference.positions, moved, d_ref)
        for positions, is_clear in zip(moved, ok):
            if is_clear:
                cleared += 1
                atoms = reference.copy()
                atoms.positions = positions
                assert closest_by_ase(atoms) >= MIN_DISTANCE
    assert 0 < cleared < 20 * 30  # both outcomes were exercised

    atoms = bulk("Si", "diamond", a=5.431, cubic=True)  # closest pair: atoms 0 and 1, 2.352 Å
    cell = atoms.cell.array
    d_ref = closest_pair_distance(atoms.positions, cell, inverse_transpose(cell), atoms.pbc)
    reach = (d_ref - MIN_DISTANCE) / 2
    bond = (atoms.positions[1] - atoms.positions[0]) / d_ref
    for step, expected in ((reach * 0.999, True), (reach * 1.001, False)):
        positions = atoms.positions.copy()
        positions[0] += step * bond
        positions[1] -= step * bond
        assert clear_by_displacement(atoms.positions, positions[None], d_ref)[0] == expected
        pushed = atoms.copy()
        pushed.positions = positions
        assert closest_by_ase(pushed) == pytest.approx(d_ref - 2 * step, abs=1e-9)


def test_an_atom_moved_by_a_lattice_vector_is_not_cleared_but_passes_the_search():
    atoms = skewed_si(1)
    cell = atoms.cell.array
    d_ref = closest_pair_distance(atoms.positions, cell, inverse_transpose(cell), atoms.pbc)
    shifted = atoms.positions.copy()
    shifted[2] += cell[0] - cell[2]
    assert not clear_by_displacement(atoms.positions, shifted[None], d_ref)[0]
    moved = atoms.copy()
    moved.positions = shifted
    check_min_distance(moved)  # the same crystal: no overlap


def test_exact_search_names_the_closest_pair():
    atoms = skewed_si(2)
    atoms.positions[5] = atoms.positions[3] + [0.0, 0.3, 0.0]
    with pytest.raises(EvaluationError) as err:
        check_min_distance(atoms)
    assert err.value.kind == TOO_CLOSE and "atoms 3 and 5 are 0.300 Å apart" in err.value.reason
