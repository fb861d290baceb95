"""SNAP reference fit against LAMMPS: design rows vs pair_style snap, physics, the fit on mlearn Si, files, errors."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from physics_contract import (
    check_cell_choice_invariance,
    check_forces_are_minus_the_energy_gradient,
    check_rotation_and_translation_invariance,
    check_stress_is_the_strain_derivative,
)

from eip2nn.keys import CONFIG_ID, REF_ENERGY, REF_FORCES
from eip2nn.potentials.lammps_backend import LAMMPSEvaluator
from eip2nn.potentials.spec import LAMMPSBackend, PotentialSpec
from eip2nn.snap.bispectrum import BispectrumCalculator, n_bispectrum, n_per_element
from eip2nn.snap.config import PUBLISHED_HYPERPARAMETERS, SnapConfig, published_config
from eip2nn.snap.fit import fit_snap
from eip2nn.snap.model import SnapCalculator, SnapModel

RCUT = 4.2  # Å: above the 3.84 Å period of the primitive Si cell, so atoms see their own images
# ASE's bar (CODATA 2018) and LAMMPS's metal-units pressure factor differ by 8e-8 (relative); the LAMMPS backend
# converts LAMMPS's pressure with ASE's bar, so stresses through it agree to that, not to round-off
STRESS_RTOL = 1e-6
SI_TWOJMAX = 6  # the mlearn Si fit: 3 s for 75 structures (quadratic 496 coefficients)


def random_model(species, quadratic, twojmax=4, seed=0) -> SnapModel:
    """Coefficients of the size SNAP typically has (β0 a few eV, the rest small): forces of order 1 eV/Å."""
    rng = np.random.default_rng(seed)
    n = 1 + n_per_element(twojmax, quadratic)
    coefficients = {e: np.concatenate([[-4.0 - i], 0.02 * rng.normal(size=n - 1)]) for i, e in enumerate(species)}
    return SnapModel(list(species), twojmax, RCUT, 0.99363, 0.0, quadratic, coefficients)


def rattled(species=("Si",), seed=0, repeat=(2, 1, 1), primitive=False) -> Atoms:
    """A strained (triclinic), rattled diamond cell; with several species, a random decoration."""
    rng = np.random.default_rng(seed)
    atoms = bulk("Si", "diamond", a=5.43, cubic=not primitive).repeat(repeat)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.04 * rng.normal(size=(3, 3))), scale_atoms=True)
    atoms.positions += 0.1 * rng.normal(size=atoms.positions.shape)
    atoms.symbols = list(species) * (len(atoms) // len(species))
    atoms.symbols = rng.permutation(atoms.get_chemical_symbols())
    return atoms


def pair_style_snap(model: SnapModel, tmp_path) -> LAMMPSEvaluator:
    """eip2nn's LAMMPS backend running ``pair_style snap`` on the files the model writes."""
    coeff, param = model.write_lammps(tmp_path / "model")
    spec = PotentialSpec(id="snap_test", name="snap_test", species=tuple(model.species), kind="machine-learned",
                         family="SNAP", backend=LAMMPSBackend(pair_style="snap",
                                                              pair_coeff=f"* * {coeff} {param} {' '.join(model.species)}"),
                         cutoff=model.rcutfac, citation="")
    return LAMMPSEvaluator(spec)


def as_calc(model: SnapModel):
    return lambda atoms: model.predict(atoms)


# -- the design rows are SNAP's: pair_style snap and finite differences ----------------------------------------
@pytest.mark.parametrize("species,quadratic", [(("Si",), False), (("Si",), True), (("Si", "Ge"), False),
                                               (("Si", "Ge"), True)])
def test_predictions_equal_pair_style_snap_on_the_written_files(tmp_path, species, quadratic):
    model = random_model(species, quadratic)
    evaluator = pair_style_snap(model, tmp_path)
    try:
        structures = [rattled(species, seed=1), rattled(species, seed=2, repeat=(1, 1, 1)),
                      rattled(species, seed=3, repeat=(1, 1, 1), primitive=True)]  # sees its own images
        for atoms in structures:
            energy, forces, stress = model.predict(atoms)
            want = evaluator.evaluate(atoms)
            assert np.abs(want.forces).max() > 0.1  # not a test of zeros
            assert energy == pytest.approx(want.energy, abs=1e-8)
            np.testing.assert_allclose(forces, want.forces, rtol=0, atol=1e-8)
            np.testing.assert_allclose(stress, want.stress, rtol=STRESS_RTOL, atol=1e-12)
    finally:
        evaluator.close()
        model.close()


@pytest.mark.parametrize("species,quadratic", [(("Si",), False), (("Si", "Ge"), True)])
def test_forces_and_stress_are_energy_derivatives(species, quadratic):
    model = random_model(species, quadratic, seed=1)
    atoms = rattled(species, seed=4, repeat=(1, 1, 1))
    check_forces_are_minus_the_energy_gradient(as_calc(model), atoms, h=1e-5, atol=1e-6, rtol=1e-5,
                                               components=[(0, 0), (3, 1), (5, 2), (7, 0)], min_force=0.1)
    check_stress_is_the_strain_derivative(as_calc(model), atoms, h=1e-6, atol=1e-7, rtol=1e-5, min_stress=1e-3)
    model.close()


def test_rotation_reflection_translation_and_cell_choice():
    model = random_model(("Si", "Ge"), True, seed=2)
    atoms = rattled(("Si", "Ge"), seed=5)
    q, _ = np.linalg.qr(np.random.default_rng(6).normal(size=(3, 3)))
    for rotation in (q, -q):  # one of them is a reflection
        check_rotation_and_translation_invariance(as_calc(model), atoms, rotation, (0.3, -1.2, 2.0), atol=1e-9)
    check_cell_choice_invariance(as_calc(model), atoms, atol=1e-9, stress_atol=1e-11)
    model.close()


def test_non_periodic_structures_are_exact_in_vacuum():
    # a cluster, and a slab periodic in x and y: the same as in a large periodic box, stress None
    model = random_model(("Si",), False, seed=3)
    cluster = rattled(seed=7, repeat=(1, 1, 1))[:6]
    cluster.pbc, cluster.cell = False, np.zeros((3, 3))
    boxed = cluster.copy()
    boxed.pbc, boxed.cell = True, np.eye(3) * 40.0
    e, f, s = model.predict(cluster)
    e_box, f_box, _ = model.predict(boxed)
    assert s is None and e == pytest.approx(e_box, abs=1e-10)
    np.testing.assert_allclose(f, f_box, atol=1e-10)
    slab = bulk("Si", "diamond", a=5.43, cubic=True)
    slab.positions += 0.1 * np.random.default_rng(8).normal(size=slab.positions.shape)
    slab.pbc = (True, True, False)
    tall = slab.copy()
    tall.pbc = True
    tall.cell[2] = [0.0, 0.0, 40.0]
    e, f, s = model.predict(slab)
    e_tall, f_tall, _ = model.predict(tall)
    assert s is None and e == pytest.approx(e_tall, abs=1e-10)
    np.testing.assert_allclose(f, f_tall, atol=1e-10)
    model.close()


def test_quadratic_rows_contain_the_linear_ones():
    # the fit takes the linear candidate's columns out of the quadratic rows: they must be the same numbers
    atoms = rattled(("Si", "Ge"), seed=9)
    cfg = SnapConfig(twojmax=4, rcutfac=RCUT)
    with BispectrumCalculator(["Si", "Ge"], cfg, False) as lin, BispectrumCalculator(["Si", "Ge"], cfg, True) as quad:
        a, b = lin.rows(atoms), quad.rows(atoms)
    k, per = n_bispectrum(4), n_per_element(4, True)
    for e in range(2):
        np.testing.assert_array_equal(a.energy[e * k:(e + 1) * k], b.energy[e * per:e * per + k])
        np.testing.assert_array_equal(a.forces[:, e * k:(e + 1) * k], b.forces[:, e * per:e * per + k])


# -- the fit ---------------------------------------------------------------------------------------------------------
def labelled_by(model: SnapModel, structures: list[Atoms]) -> list[Atoms]:
    out = []
    for i, atoms in enumerate(structures):
        energy, forces, _ = model.predict(atoms)
        atoms = atoms.copy()
        atoms.info[REF_ENERGY], atoms.info[CONFIG_ID] = energy, f"synthetic/{i}"
        atoms.arrays[REF_FORCES] = forces
        out.append(atoms)
    return out


def test_fit_recovers_a_snap_model_from_its_own_labels():
    # labels from a known linear SNAP with two elements and different offsets: the fit must reproduce them
    # on new structures (per-element offsets, weights and column layout all have to be right)
    truth = random_model(("Si", "Ge"), False, twojmax=2, seed=4)
    structures = [rattled(("Si", "Ge") if i % 3 else ("Si",), seed=20 + i, repeat=(1, 1, 1)) for i in range(12)]
    data = labelled_by(truth, structures)
    fit = fit_snap(data[:8], data[8:10], ["Si", "Ge"], SnapConfig(twojmax=2, rcutfac=RCUT, alphas=[1e-12, 1e-2]))
    assert fit.choice["alpha"] == 1e-12 and not fit.choice["quadratic"]
    for atoms in data[10:]:
        energy, forces, _ = fit.model.predict(atoms)
        assert energy == pytest.approx(atoms.info[REF_ENERGY], abs=1e-5)
        np.testing.assert_allclose(forces, atoms.arrays[REF_FORCES], atol=1e-5)
    truth.close()
    fit.model.close()


@pytest.fixture(scope="module")
def si_fit(data_mirror_session):
    from eip2nn.data.registry import load_dataset

    train = load_dataset("mlearn/Si/train")
    order = np.random.default_rng(0).permutation(len(train))
    cfg = SnapConfig(twojmax=SI_TWOJMAX, rcutfac=PUBLISHED_HYPERPARAMETERS["Si"][1])
    fit = fit_snap([train[i] for i in order[:60]], [train[i] for i in order[60:75]], ["Si"], cfg)
    yield fit, [train[i] for i in order[:60]], [train[i] for i in order[60:75]], load_dataset("mlearn/Si/test")
    fit.model.close()


def mae(model, structures):
    """(energy MAE eV/atom, force MAE eV/Å) of ``model`` (a SnapModel or a function atoms -> (E, F))."""
    predict = model.predict if isinstance(model, SnapModel) else model
    e, f = [], []
    for atoms in structures:
        energy, forces = predict(atoms)[:2]
        e.append(abs(energy - atoms.info[REF_ENERGY]) / len(atoms))
        f.append(np.abs(forces - atoms.arrays[REF_FORCES]).ravel())
    return float(np.mean(e)), float(np.mean(np.concatenate(f)))


def test_fit_on_mlearn_si_beats_offsets_only_by_far(si_fit):
    fit, train, _, test = si_fit
    offset = np.mean([a.info[REF_ENERGY] / len(a) for a in train])  # the best per-element-offset model: E = n·offset

    def offsets_only(atoms):
        return offset * len(atoms), np.zeros((len(atoms), 3))
    e_fit, f_fit = mae(fit.model, test)
    e_ref, f_ref = mae(offsets_only, test)
    # measured: 4.6 vs 287 meV/atom, 0.093 vs 0.57 eV/Å
    assert e_fit < 0.05 * e_ref and f_fit < 0.25 * f_ref, (e_fit, f_fit, e_ref, f_ref)


def test_fit_choice_is_the_best_candidate_and_its_loss_is_the_models(si_fit):
    fit, _, val, _ = si_fit
    cfg = SnapConfig()
    assert len(fit.table) == 2 * len(cfg.alphas)
    assert {(r["quadratic"], r["alpha"]) for r in fit.table} == {(q, a) for q in (False, True) for a in cfg.alphas}
    best = min(fit.table, key=lambda r: r["val_loss"])
    assert (fit.choice["quadratic"], fit.choice["alpha"]) == (best["quadratic"], best["alpha"])
    assert fit.model.quadratic == fit.choice["quadratic"]
    assert fit.model.n_coefficients == fit.choice["n_coefficients"] == (1 + n_per_element(SI_TWOJMAX, best["quadratic"]))
    # the table's validation figures are those of the returned model, computed here independently
    e_err, f_err = [], []
    for atoms in val:
        energy, forces, _ = fit.model.predict(atoms)
        e_err.append((energy - atoms.info[REF_ENERGY]) / len(atoms))
        f_err.append((forces - atoms.arrays[REF_FORCES]).ravel())
    e_err, f_err = np.array(e_err), np.concatenate(f_err)
    assert best["val_energy_mae_meV_per_atom"] == pytest.approx(1e3 * np.abs(e_err).mean(), rel=1e-6)
    assert best["val_force_mae_eV_per_A"] == pytest.approx(np.abs(f_err).mean(), rel=1e-6)
    loss = cfg.energy_weight * np.mean(e_err ** 2) + cfg.force_weight * np.mean(f_err ** 2)
    assert best["val_loss"] == pytest.approx(loss, rel=1e-6)


def test_fit_without_validation_uses_cross_validation(si_fit):
    _, train, _, _ = si_fit
    data = train[:20]
    data[3] = data[3].copy()
    del data[3].info[REF_ENERGY]  # unlabelled: not used
    fit = fit_snap(data, [], ["Si"], SnapConfig(twojmax=2, rcutfac=4.0, quadratic="linear", cv_folds=3))
    assert fit.choice["selection"] == "3-fold cross-validation"
    assert any("cross-validation" in n for n in fit.notes) and any("1 training structures without" in n for n in fit.notes)
    assert fit.choice["alpha"] in SnapConfig().alphas and fit.model.info["n_train"] == 19
    fit.model.close()


def test_save_load_and_calculator_give_the_same_predictions(si_fit, tmp_path):
    fit, _, _, test = si_fit
    loaded = SnapModel.load(fit.model.save(tmp_path / "snap.json"))
    assert loaded.species == fit.model.species and loaded.quadratic == fit.model.quadratic
    for atoms in test[:3]:  # structures the fit has not seen
        e0, f0, s0 = fit.model.predict(atoms)
        e1, f1, s1 = loaded.predict(atoms)
        assert e1 == e0
        np.testing.assert_array_equal(f1, f0)
        np.testing.assert_array_equal(s1, s0)
        calc_atoms = atoms.copy()
        calc_atoms.calc = SnapCalculator(loaded)
        assert calc_atoms.get_potential_energy() == e0
        np.testing.assert_array_equal(calc_atoms.get_stress(), s0)
    loaded.close()


# -- errors -------------------------------------------------------------------------------------------------------------
def test_bad_inputs_name_the_structure(si_fit):
    _, train, val, _ = si_fit
    foreign = train[5].copy()
    foreign[0].symbol = "Ge"
    with pytest.raises(ValueError, match=f"{foreign.info[CONFIG_ID]}.*Ge.*not in the SNAP species"):
        fit_snap(train[:4] + [foreign], val[:2], ["Si"], SnapConfig(twojmax=2))
    unnamed = bulk("Cu", "fcc", a=3.6)
    with pytest.raises(ValueError, match="validation structure 1.*Cu"):
        fit_snap(train[:4], [val[0], unnamed], ["Si"], SnapConfig(twojmax=2))
    unlabelled = [a.copy() for a in train[:3]]
    for a in unlabelled:
        del a.info[REF_ENERGY]
    with pytest.raises(ValueError, match="no labelled training structure"):
        fit_snap(unlabelled, val[:2], ["Si"], SnapConfig(twojmax=2))
    model = random_model(("Si",), False)
    with pytest.raises(ValueError, match="structure 0.*Cu"):
        model.predict(unnamed)


@pytest.mark.parametrize("field,value", [("twojmax", -1), ("rcutfac", 0.0), ("quadratic", "cubic"), ("alphas", []),
                                         ("alphas", [1e-3, -1.0]), ("energy_weight", -1.0)])
def test_config_errors_name_the_field(field, value):
    with pytest.raises(ValueError, match=f"snap.{field}"):
        SnapConfig(**{field: value})


def test_published_hyperparameters_are_those_shipped_with_lammps():
    from eip2nn.potentials.lammps_backend import potentials_folder

    for element, (twojmax, rcutfac) in PUBLISHED_HYPERPARAMETERS.items():
        text = (potentials_folder() / f"{element}_Zuo_JPCA2020.snapparam").read_text().split()
        assert int(text[text.index("twojmax") + 1]) == twojmax
        assert float(text[text.index("rcutfac") + 1]) == rcutfac
    cfg = published_config("Mo", quadratic=True, alphas=[1.0])
    assert (cfg.twojmax, cfg.rcutfac, cfg.quadratic, cfg.alphas) == (6, 5.2, "quadratic", [1.0])
