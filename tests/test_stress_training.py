"""Stress as a training target, stress metrics and per-group metrics, on tiny real data.

The data: 8-atom diamond Si cells, rattled and strained (seeded), labelled
with energy, forces and stress by Stillinger-Weber through LAMMPS, in two
groups ("Elastic": strained, "Rattled": rattled at the equilibrium cell). The
models are tiny SchNets trained by the real fit loop.

That the model's stress is the strain derivative of its energy is tested in
``test_nn_physics.py::test_stress_is_the_strain_derivative``.
"""

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk

from eip2nn.keys import GROUP, REF_ENERGY, REF_FORCES, REF_STRESS, STRESS, WEAK_ENERGY, WEAK_FORCES, eip_key
from eip2nn.nn.config import ModelConfig
from eip2nn.nn.model import DFT_HEAD, EnergyModel
from eip2nn.nn.offsets import fit_head_statistics
from eip2nn.training.config import LossWeights, TrainConfig
from eip2nn.training.loss import batch_loss
from eip2nn.training.metrics import Metrics, Parity, metrics_by_group, metrics_of, metrics_table, predict
from eip2nn.training.samples import NO_GROUP, WEAK_TARGET, head_arrays, make_samples, read_target
from eip2nn.training.trainer import fit

TINY = ModelConfig(width=16, depth=2, n_rbf=12, head_hidden=16, cutoff=4.5)
STRESS_WEIGHT = 1000.0  # on (eV/Å³)²: a 1 GPa error costs 0.039


def _cell(rng, strain: float, rattle: float) -> Atoms:
    a = bulk("Si", "diamond", 5.43, cubic=True)
    eps = rng.uniform(-strain, strain, (3, 3))
    a.set_cell(a.cell[:] @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
    a.positions += rng.normal(0.0, rattle, a.positions.shape)
    return a


def _label(structures: list[Atoms]) -> list[Atoms]:
    from eip2nn.potentials import make_evaluator
    from eip2nn.potentials.db import PotentialsDB

    ev = make_evaluator(PotentialsDB().get("lmp_Si_sw"))
    try:
        for a in structures:
            r = ev.evaluate(a)
            a.info[REF_ENERGY], a.arrays[REF_FORCES], a.info[REF_STRESS] = r.energy, r.forces, r.stress
    finally:
        ev.close()
    return structures


@pytest.fixture(scope="module")
def structures() -> list[Atoms]:
    """32 labelled cells: even ones strained by up to 3 % ("Elastic"), odd ones only rattled ("Rattled")."""
    rng = np.random.default_rng(7)
    out = []
    for k in range(32):
        elastic = k % 2 == 0
        a = _cell(rng, 0.03 if elastic else 0.0, 0.03 if elastic else 0.08)
        a.info[GROUP] = "Elastic" if elastic else "Rattled"
        a.info["config_id"] = f"si8/{k}"
        out.append(a)
    labelled = _label(out)
    assert np.abs([a.info[REF_STRESS] for a in labelled]).max() > 0.01  # eV/Å³: the strains matter
    return labelled


def _model(structures, seed=0):
    torch.manual_seed(seed)
    model = EnergyModel(TINY, ["Si"], [DFT_HEAD])
    samples = make_samples(model, structures, [DFT_HEAD])
    fit_head_statistics(model.head(DFT_HEAD), *head_arrays(samples, DFT_HEAD))
    return model, samples


def _fit(structures, tmp_path, stress_weight):
    model, samples = _model(structures)
    cfg = TrainConfig(epochs=40, batch_size=8, lr=5e-3, stress_weight=stress_weight, patience=100, seed=0)
    fit(model, samples[:24], samples[24:], {DFT_HEAD: 1.0}, cfg, tmp_path / f"w{stress_weight}.pt")
    return model, samples


def test_stress_targets_are_read_for_periodic_structures(structures):
    a = structures[0].copy()
    t = read_target(a, DFT_HEAD, torch.float64)
    np.testing.assert_array_equal(t.stress.numpy(), a.info[REF_STRESS])
    a.info[eip_key("lmp_Si_sw", "energy")] = 1.0
    a.info[eip_key("lmp_Si_sw", STRESS)] = np.arange(6.0)
    np.testing.assert_array_equal(read_target(a, "lmp_Si_sw").stress.numpy(), np.arange(6.0))
    a.info[WEAK_ENERGY], a.arrays[WEAK_FORCES] = 1.0, a.arrays[REF_FORCES]
    assert read_target(a, WEAK_TARGET).stress is None  # weak labels have no stress
    a.info[REF_STRESS] = np.full(6, np.nan)
    assert read_target(a, DFT_HEAD).stress is None
    a.info[REF_STRESS] = np.zeros(3)
    with pytest.raises(ValueError, match=r"REF_stress has shape \(3,\)"):
        read_target(a, DFT_HEAD)


def test_samples_carry_their_group(structures):
    model, samples = _model(structures)
    assert [s.group for s in samples[:2]] == ["Elastic", "Rattled"]
    bare = structures[0].copy()
    del bare.info[GROUP]
    assert make_samples(model, [bare], [DFT_HEAD])[0].group == NO_GROUP


def test_stress_weight_lowers_the_stress_error(structures, tmp_path):
    plain, samples = _fit(structures, tmp_path, 0.0)
    stressed, _ = _fit(structures, tmp_path, STRESS_WEIGHT)
    val = samples[24:]
    m0, m1 = metrics_of(predict(plain, val, DFT_HEAD)), metrics_of(predict(stressed, val, DFT_HEAD))
    assert m0.n_stress == m1.n_stress == 8
    assert m1.stress_mae < 0.5 * m0.stress_mae, (m0, m1)
    assert m1.energy_mae < 3 * m0.energy_mae  # the stress term does not wreck the energies


def test_zero_stress_weight_never_asks_for_stress(structures, monkeypatch):
    model, samples = _model(structures)
    asked = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: (asked.append(k["stress"]), forward(*a, **k))[1])
    zero, _ = batch_loss(model, samples[:8], {DFT_HEAD: 1.0}, LossWeights(1.0, 0.1, 0.0))
    weighted, _ = batch_loss(model, samples[:8], {DFT_HEAD: 1.0}, LossWeights(1.0, 0.1, STRESS_WEIGHT))
    assert asked == [False, True]
    assert weighted.item() > zero.item()


def test_non_periodic_stress_is_never_trained(structures, monkeypatch):
    cluster = structures[1].copy()
    cluster.pbc = False
    cluster.center(vacuum=6.0)
    cluster.info[REF_STRESS] = np.full(6, 0.5)  # a label an open structure cannot have
    model, samples = _model(structures[:4])
    (open_sample,) = make_samples(model, [cluster], [DFT_HEAD])
    assert not open_sample.graph.periodic and open_sample.targets[DFT_HEAD].stress is None
    weights = LossWeights(1.0, 0.1, STRESS_WEIGHT)
    # even a stress forced onto its target stays out of the loss (the model's stress there is NaN)
    reference, _ = batch_loss(model, samples + [open_sample], {DFT_HEAD: 1.0}, weights)
    open_sample.targets[DFT_HEAD].stress = torch.full((6,), 0.5)
    forced, _ = batch_loss(model, samples + [open_sample], {DFT_HEAD: 1.0}, weights)
    assert torch.isfinite(forced) and forced.item() == reference.item()
    forced.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    asked = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: (asked.append(k["stress"]), forward(*a, **k))[1])
    batch_loss(model, [open_sample], {DFT_HEAD: 1.0}, weights)
    assert asked == [False]
    assert predict(model, [open_sample], DFT_HEAD).stress_ref.size == 0


def test_stress_metrics_are_in_GPa():
    ref = np.zeros(12)
    parity = Parity(np.zeros(2), np.zeros(2), np.zeros(0), np.zeros(0), ref, ref + 1.0 * units.GPa)
    m = metrics_of(parity)
    assert m.n_stress == 2 and m.stress_mae == pytest.approx(1.0) and m.stress_rmse == pytest.approx(1.0)
    assert m.as_dict("test")["test_stress_mae_GPa"] == pytest.approx(1.0)


def test_metrics_without_stress_load_and_print_as_before():
    old = Metrics(**{"n_structures": 3, "energy_mae": 1.0, "energy_rmse": 2.0, "force_mae": 0.1, "force_rmse": 0.2})
    assert old.n_stress == 0 and np.isnan(old.stress_mae)
    assert not any("stress" in k for k in old.as_dict("val"))
    assert "σ" not in metrics_table("split", {"val": old})
    with_stress = Metrics(3, 1.0, 2.0, 0.1, 0.2, 0.25, 0.3, 3)
    table = metrics_table("split", {"val": old, "test": with_stress})
    assert "σ MAE GPa" in table and "0.250" in table


def test_metrics_by_group_equal_each_group_alone_and_predict_once(structures, monkeypatch):
    model, samples = _model(structures)
    calls = []
    forward = model.forward
    monkeypatch.setattr(model, "forward", lambda *a, **k: (calls.append(1), forward(*a, **k))[1])
    by_group = metrics_by_group(model, samples, DFT_HEAD, batch_size=32)
    assert len(calls) == 1  # one batch of all 32 samples, not one per group
    assert list(by_group) == ["Elastic", "Rattled"]
    for group, m in by_group.items():
        alone = metrics_of(predict(model, [s for s in samples if s.group == group], DFT_HEAD))
        assert m.n_structures == alone.n_structures == 16 and m.n_stress == 16
        for name in ("energy_mae", "energy_rmse", "force_mae", "force_rmse", "stress_mae", "stress_rmse"):
            assert getattr(m, name) == pytest.approx(getattr(alone, name), rel=1e-5), name
    whole = metrics_of(predict(model, samples, DFT_HEAD))
    assert by_group["Elastic"].stress_mae != pytest.approx(by_group["Rattled"].stress_mae, rel=1e-2)
    assert whole.stress_mae == pytest.approx(np.mean([m.stress_mae for m in by_group.values()]), rel=1e-5)
