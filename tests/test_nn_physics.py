"""Physics every backbone must satisfy: the contract of tests/physics_contract.py, shared with the EIP backends.

Run in float64 on small random crystals and molecules; the models are
randomly initialised, which is enough: these are properties of the functional
form, not of training.
"""

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from physics_contract import (
    check_cell_choice_invariance,
    check_forces_are_minus_the_energy_gradient,
    check_permutation_invariance,
    check_rotation_and_translation_invariance,
    check_stress_is_the_strain_derivative,
)
from scipy.spatial.transform import Rotation

from eip2nn.nn.config import ModelConfig
from eip2nn.nn.graph import UnknownSpeciesError, collate
from eip2nn.nn.model import EnergyModel

CUTOFF = 4.0
BACKBONES = ["schnet", "symmetry_functions", "bispectrum"]


@pytest.fixture(params=BACKBONES)
def model(request):
    torch.manual_seed(1)
    m = EnergyModel(ModelConfig(backbone=request.param, cutoff=CUTOFF, width=16, depth=2, n_rbf=10,
                                head_hidden=8, twojmax=4), ["Ge", "Si"], ["dft", "eip"]).double()
    with torch.no_grad():  # non-trivial heads so that every term matters
        for name in m.head_names:
            m.head(name).scale.fill_(0.7)
            m.head(name).offsets.copy_(torch.tensor([-4.0, -5.0]))
    return m.eval()


def crystal(seed=0):
    a = bulk("Si", "diamond", 5.43, cubic=True)
    a.symbols[[1, 6]] = "Ge"
    a.rattle(0.1, seed=seed)
    return a


def molecule(seed=0):
    rng = np.random.default_rng(seed)
    pos = np.array([[0, 0, 0], [2.3, 0, 0], [0, 2.3, 0], [1.2, 1.1, 1.9]]) + rng.normal(0, 0.05, (4, 3))
    return Atoms("SiGeSiSi", positions=pos)


def predict(model, atoms, stress=False, head="dft"):
    p = model(collate([model.graph(atoms)]), heads=[head], stress=stress, create_graph=False)[head]
    return p.energy.detach().numpy()[0], p.forces.detach().numpy(), None if p.stress is None else p.stress.detach().numpy()[0]


def energy(model, atoms):
    return predict(model, atoms)[0]


def as_calc(model):
    """The physics contract's view of a model's DFT head: atoms -> (energy, forces, stress)."""
    return lambda atoms: predict(model, atoms, stress=atoms.pbc.all())


@pytest.mark.parametrize("make", [crystal, molecule])
def test_forces_are_minus_the_energy_gradient(model, make):
    atoms = make()
    scale = max(1.0, np.abs(predict(model, atoms)[1]).max())
    check_forces_are_minus_the_energy_gradient(as_calc(model), atoms, h=1e-5, atol=1e-7 * scale, min_force=1e-3)


def test_stress_is_the_strain_derivative(model):
    check_stress_is_the_strain_derivative(as_calc(model), crystal(), h=1e-5, atol=1e-9, min_stress=1e-5)


@pytest.mark.parametrize("make", [crystal, molecule])
def test_rotation_translation_permutation_invariance(model, make):
    atoms = make()
    rotation = Rotation.random(random_state=3).as_matrix()
    check_rotation_and_translation_invariance(as_calc(model), atoms, rotation, (0.3, -1.1, 2.0), atol=1e-9)
    check_permutation_invariance(as_calc(model), atoms, np.random.default_rng(0).permutation(len(atoms)), atol=1e-9)


def test_cell_choice_invariance(model):
    check_cell_choice_invariance(as_calc(model), crystal(), atol=1e-9, stress_atol=1e-11)


def test_separated_fragments_add_up(model):
    a, b = molecule(1), molecule(2)
    b.positions += [20.0, 0, 0]  # far beyond the cut-off
    both = a + b
    assert energy(model, both) == pytest.approx(energy(model, a) + energy(model, b), abs=1e-9)
    _, f_both, _ = predict(model, both)
    np.testing.assert_allclose(f_both[:4], predict(model, a)[1], atol=1e-10)


def test_atoms_beyond_the_cutoff_have_no_effect(model):
    a = molecule()
    probe = Atoms("Si", positions=[[0.0, 0.0, 0.0]])
    energies = []
    for x in (CUTOFF + 3.0 + 0.01, CUTOFF + 3.0 + 0.5, CUTOFF + 3.0 + 2.0):  # all farther than the cut-off
        probe.positions[0] = [x, 0.0, 0.0]
        energies.append(energy(model, a + probe) - energy(model, probe))
    assert np.ptp(energies) < 1e-10
    probe.positions[0] = [a.positions[:, 0].max() + CUTOFF - 0.5, 0.0, 0.0]  # inside: must matter
    assert abs(energy(model, a + probe) - energy(model, probe) - energies[0]) > 1e-6


def test_batched_equals_one_by_one(model):
    structures = [crystal(0), molecule(0), crystal(5)]
    p = model(collate([model.graph(a) for a in structures]), stress=True, create_graph=False)
    sizes = [len(a) for a in structures]
    for name in model.head_names:
        forces = p[name].forces.detach().split(sizes)
        for k, atoms in enumerate(structures):
            e, f, s = predict(model, atoms, stress=True, head=name)
            assert float(p[name].energy[k].detach()) == pytest.approx(e, abs=1e-10)
            np.testing.assert_allclose(forces[k].numpy(), f, atol=1e-10)
            if s is not None and atoms.pbc.all():
                np.testing.assert_allclose(p[name].stress[k].detach().numpy(), s, atol=1e-12)


def test_heads_share_the_backbone_but_differ(model):
    atoms = crystal()
    assert energy(model, atoms) != pytest.approx(predict(model, atoms, head="eip")[0], abs=1e-6)


def test_unknown_species_is_an_error_naming_the_element(model):
    with pytest.raises(UnknownSpeciesError, match=r"\['C'\]"):
        model.graph(Atoms("C2", positions=[[0, 0, 0], [1.4, 0, 0]]))


def test_graph_cache_shares_a_graph_for_the_same_geometry_only():
    from ase.build import bulk

    from eip2nn.nn.config import ModelConfig
    from eip2nn.nn.model import EnergyModel
    model = EnergyModel(ModelConfig(backbone="symmetry_functions", descriptor="set30", width=8, depth=1),
                        ["Si"], ["dft"])
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    first = model.graph(atoms)
    assert model.graph(atoms.copy()) is first  # same geometry: computed once
    moved = atoms.copy()
    moved.positions[0] += 0.05
    other = model.graph(moved)
    assert other is not first and not torch.equal(other.descriptor, first.descriptor)
    wider = EnergyModel(ModelConfig(backbone="symmetry_functions", descriptor="set30", width=8, depth=1,
                                    cutoff=4.0), ["Si"], ["dft"])
    assert wider.graph(atoms).edge_src.numel() < first.edge_src.numel()  # another cut-off: another graph
