"""The trained model as an ASE calculator, and MD with it."""

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk
from ase.calculators.calculator import PropertyNotImplementedError
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet

from eip2nn.calculator import EIP2NNCalculator
from eip2nn.nn.checkpoint import save_checkpoint
from eip2nn.nn.config import ModelConfig
from eip2nn.nn.model import DFT_HEAD, EnergyModel


@pytest.fixture(params=["schnet", "symmetry_functions"])
def checkpoint(request, tmp_path):
    torch.manual_seed(0)
    model = EnergyModel(ModelConfig(backbone=request.param, cutoff=4.0, width=16, depth=2, head_hidden=8),
                        ["Si"], [DFT_HEAD, "eip"]).double()
    with torch.no_grad():
        model.head(DFT_HEAD).offsets.fill_(-5.4)
        model.head(DFT_HEAD).scale.fill_(0.3)
    return save_checkpoint(tmp_path / "model.pt", model, {"note": "test"})


def silicon(seed=0):
    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (2, 1, 1)
    atoms.rattle(0.05, seed=seed)
    return atoms


def test_calculator_matches_the_model_and_ase_conventions(checkpoint):
    atoms = silicon()
    atoms.calc = EIP2NNCalculator.from_checkpoint(checkpoint)
    e, f, s = atoms.get_potential_energy(), atoms.get_forces(), atoms.get_stress()
    assert f.shape == (16, 3) and s.shape == (6,)
    assert np.abs(f.sum(axis=0)).max() < 1e-8  # Newton's third law
    assert atoms.get_potential_energies().sum() == pytest.approx(e, abs=1e-8)
    # ASE's own numerical derivatives agree
    np.testing.assert_allclose(atoms.calc.calculate_numerical_forces(atoms, d=1e-5), f, atol=1e-6)
    np.testing.assert_allclose(atoms.calc.calculate_numerical_stress(atoms, d=1e-5), s, atol=1e-7)
    other = EIP2NNCalculator.from_checkpoint(checkpoint, head="eip")
    assert other.get_potential_energy(atoms) != pytest.approx(e)


def test_unknown_head_and_open_cell_stress_are_clear_errors(checkpoint):
    with pytest.raises(KeyError, match="no head 'pbe'"):
        EIP2NNCalculator.from_checkpoint(checkpoint, head="pbe")
    cluster = silicon()[:5]
    cluster.pbc = False
    cluster.calc = EIP2NNCalculator.from_checkpoint(checkpoint)
    assert np.isfinite(cluster.get_potential_energy())
    with pytest.raises(PropertyNotImplementedError):
        cluster.get_stress()


def test_nve_md_conserves_energy(checkpoint):
    atoms = silicon(1)
    atoms.calc = EIP2NNCalculator.from_checkpoint(checkpoint)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    total = []
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.attach(lambda: total.append(atoms.get_total_energy()), interval=5)
    dyn.run(100)
    kinetic = atoms.get_kinetic_energy()
    assert kinetic > 0
    assert np.ptp(total) < 0.01 * max(kinetic, 1e-3)  # drift and noise tiny compared with kT


def test_langevin_md_stays_physical(checkpoint):
    atoms = silicon(2)
    atoms.calc = EIP2NNCalculator.from_checkpoint(checkpoint)
    Langevin(atoms, 1.0 * units.fs, temperature_K=600, friction=0.02, rng=np.random.default_rng(0)).run(50)
    d = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
    assert d.min() > 1.5 and np.isfinite(atoms.get_forces()).all()
