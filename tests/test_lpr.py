"""Local prediction rigidity (eip2nn.diagnostics.lpr): the closed form, an absent species, a real model."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import bulk

from eip2nn.diagnostics.lpr import hessian_from_features, last_layer_features, local_prediction_rigidity, lpr_from_features
from eip2nn.nn.config import ModelConfig
from eip2nn.nn.model import EnergyModel


def constrained_minimum(a: np.ndarray, b: np.ndarray, h_ridge: float, phi: np.ndarray, eps: float) -> float:
    """min over w of ½|a w − b|² + ½ h_ridge |w|² subject to phi·w = eps (a KKT solve)."""
    p = a.shape[1]
    kkt = np.block([[a.T @ a + h_ridge * np.eye(p), phi[:, None]], [phi[None, :], np.zeros((1, 1))]])
    w = np.linalg.solve(kkt, np.r_[a.T @ b, eps])[:p]
    return 0.5 * np.sum((a @ w - b) ** 2) + 0.5 * h_ridge * w @ w


def test_lpr_is_the_curvature_of_the_optimal_loss_along_a_local_energy():
    """Chong et al.'s definition, computed independently: d²/dε² of min_w L(w) with ε_i = φ_i·w held at ε."""
    rng = np.random.default_rng(0)
    p, n_structures = 6, 15
    atoms = [rng.normal(size=(int(rng.integers(2, 6)), p)) for _ in range(n_structures)]  # φ of each atom
    sums, sizes = [x.sum(0) for x in atoms], [len(x) for x in atoms]
    energy_weight, ridge = 2.0, 1e-3
    hessian = hessian_from_features(sums, sizes, None, energy_weight, 0.0, ridge)
    query = rng.normal(size=(4, p))
    lpr = lpr_from_features(hessian, query)
    # the same loss written as least squares: rows sqrt(w_E) Φ_A / n_A, ridge as hessian_from_features adds it
    a = np.array([np.sqrt(energy_weight) * s / n for s, n in zip(sums, sizes)])
    b = rng.normal(size=n_structures)
    h_ridge = ridge * np.trace(a.T @ a) / p
    for phi, expected in zip(query, lpr):
        w_star = np.linalg.solve(a.T @ a + h_ridge * np.eye(p), a.T @ b)
        eps, delta = phi @ w_star, 1e-2
        curvature = (constrained_minimum(a, b, h_ridge, phi, eps + delta) - 2 * constrained_minimum(
            a, b, h_ridge, phi, eps) + constrained_minimum(a, b, h_ridge, phi, eps - delta)) / delta**2
        assert curvature == pytest.approx(expected, rel=1e-6)


def test_a_species_absent_from_training_gets_a_low_lpr():
    """Features in per-species blocks (as with species-resolved descriptors): Ge's block is never trained."""
    rng = np.random.default_rng(1)
    block = 4

    def features(n_si: int, n_ge: int) -> np.ndarray:
        si = np.hstack([rng.normal(1.0, 0.3, (n_si, block)), np.zeros((n_si, block))])
        ge = np.hstack([np.zeros((n_ge, block)), rng.normal(1.0, 0.3, (n_ge, block))])
        return np.vstack([si, ge])

    train = [features(int(rng.integers(4, 9)), 0) for _ in range(20)]
    jac = [rng.normal(size=(3 * len(x), 2 * block)) * np.r_[np.ones(block), np.zeros(block)] for x in train]
    hessian = hessian_from_features([x.sum(0) for x in train], [len(x) for x in train], jac, 1.0, 0.1)
    mixed = features(5, 3)
    lpr = lpr_from_features(hessian, mixed)
    assert lpr[5:].max() < 1e-4 * lpr[:5].min()


@pytest.fixture
def model():
    torch.manual_seed(0)
    return EnergyModel(ModelConfig(backbone="schnet", cutoff=4.0, width=8, depth=2, n_rbf=8, head_hidden=6),
                       ["Si"], ["dft"]).double().eval()


def si_cells(n: int, seed: int = 0) -> list:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = bulk("Si", "diamond", a=5.43 * rng.uniform(0.97, 1.03), cubic=True)
        atoms.rattle(0.08, seed=int(rng.integers(2**31)))
        out.append(atoms)
    return out


def test_force_jacobians_are_the_derivative_of_the_summed_features(model):
    atoms = si_cells(1)[0]
    phis, jacs = last_layer_features(model, [atoms], forces=True)
    assert phis[0].shape == (8, 7) and jacs[0].shape == (24, 7)
    np.testing.assert_allclose(phis[0][:, -1], float(model.head("dft").scale))  # the bias column
    h = 1e-5
    for atom, axis in ((0, 0), (3, 2)):
        plus, minus = atoms.copy(), atoms.copy()
        plus.positions[atom, axis] += h
        minus.positions[atom, axis] -= h
        numeric = -(last_layer_features(model, [plus])[0][0].sum(0) - last_layer_features(model, [minus])[0][0].sum(0)) / (2 * h)
        np.testing.assert_allclose(jacs[0][3 * atom + axis], numeric, atol=1e-7)


def test_training_on_a_structure_raises_the_lpr_of_its_atoms(model):
    train, query = si_cells(6), si_cells(1, seed=5)
    before = local_prediction_rigidity(model, train, query)
    after = local_prediction_rigidity(model, train + query, query)
    assert before.per_structure[0].shape == (8,) and (before.all_atoms > 0).all()
    assert (after.all_atoms > before.all_atoms).all()
    with pytest.raises(ValueError, match="trained on"):
        local_prediction_rigidity(model, [], query)


def test_the_command_scores_every_atom_and_writes_it_for_a_viewer(model, tmp_path, capsys):
    from ase.io import read, write

    from eip2nn.cli import main
    from eip2nn.nn.checkpoint import save_checkpoint
    path = save_checkpoint(tmp_path / "model.pt", model)
    write(tmp_path / "train.extxyz", si_cells(6), format="extxyz")
    query = si_cells(2, seed=9)
    write(tmp_path / "query.extxyz", query, format="extxyz")
    out = tmp_path / "lpr.extxyz"
    assert main(["diagnose", "lpr", "--model", str(path), str(tmp_path / "train.extxyz"),
                 str(tmp_path / "query.extxyz"), "-o", str(out)]) == 0
    frames = read(out, ":")
    expected = local_prediction_rigidity(model, si_cells(6), query).per_structure
    for frame, lpr in zip(frames, expected):
        np.testing.assert_allclose(frame.arrays["lpr"], lpr, rtol=1e-6)
    assert "median LPR" in capsys.readouterr().out
