"""The delta arm (Δ-learning on one EIP) on real mlearn Si, real LAMMPS/KIM EIPs and a real MLflow store."""

import numpy as np
import pytest
from test_training import mlflow_client, stage_config, workdir  # noqa: F401  (fixtures)

from eip2nn.calculator import EIP2NNCalculator
from eip2nn.data import load_dataset
from eip2nn.keys import REF_ENERGY, REF_FORCES, eip_key
from eip2nn.labelling.delta import MissingEIPLabel, subtract_eip
from eip2nn.nn.checkpoint import load_model
from eip2nn.potentials.backends import make_evaluator
from eip2nn.potentials.db import PotentialsDB
from eip2nn.training.stages import run_stage

SW = "lmp_Si_sw"


@pytest.fixture(scope="module")
def delta(workdir, mlflow_client):  # noqa: F811
    cfg = stage_config(workdir, stage="delta", delta={"eip": SW}, data={"dft_fraction": 0.5})
    return run_stage(cfg, log=lambda s: None)


def test_delta_model_carries_its_eip_and_the_run_says_so(delta, mlflow_client):  # noqa: F811
    assert load_model(delta.model_path).reference_eip == SW
    run = mlflow_client.get_run(delta.run_id)
    assert run.data.tags["eip2nn.arm"] == "delta"
    assert run.data.tags["eip2nn.delta_eip"] == SW


def test_calculator_adds_the_eip_and_reproduces_the_reported_test_error(delta, data_mirror_session):
    """EIP + network through the ASE calculator, scored here against DFT, equals the stage's own test numbers."""
    test = load_dataset("mlearn/Si/test")
    calc = EIP2NNCalculator.load(str(delta.model_path))
    sw = make_evaluator(PotentialsDB().get(SW))
    network_only = EIP2NNCalculator(load_model(delta.model_path))
    network_only.model.reference_eip = ""
    de, df = [], []
    for atoms in test:
        a = atoms.copy()
        a.calc = calc
        e, f = a.get_potential_energy(), a.get_forces()
        b = atoms.copy()
        b.calc = network_only
        eip = sw.evaluate(atoms)
        assert e == pytest.approx(b.get_potential_energy() + eip.energy, abs=1e-6)
        np.testing.assert_allclose(f, b.get_forces() + eip.forces, atol=1e-6)
        de.append((e - atoms.info[REF_ENERGY]) / len(atoms))
        df.append((f - atoms.arrays[REF_FORCES]).ravel())
    assert 1000 * np.abs(de).mean() == pytest.approx(delta.metrics["test"].energy_mae, rel=1e-3)
    assert np.abs(np.concatenate(df)).mean() == pytest.approx(delta.metrics["test"].force_mae, rel=1e-3)


def test_evaluate_scores_a_delta_model_as_eip_plus_network(delta, workdir):  # noqa: F811
    from eip2nn.evaluation import evaluate_model

    again = evaluate_model(str(delta.model_path), ["mlearn/Si/test"], labels=workdir / "labels.sqlite", workers=1)
    m = again.per_dataset["mlearn/Si/test"]
    assert m.energy_mae == pytest.approx(delta.metrics["test"].energy_mae, rel=1e-4)
    assert "on top of EIP lmp_Si_sw" in again.subject


def test_residuals_need_the_eip_label_and_name_the_structures_without_one(data_mirror_session):
    structures = load_dataset("mlearn/Si/test")[:3]
    labelled = [a.copy() for a in structures]
    for a in labelled[:2]:
        a.info[eip_key(SW, "energy")] = -1.0
        a.arrays[eip_key(SW, "forces")] = np.ones((len(a), 3))
    residual = subtract_eip(labelled[:2], SW)
    assert residual[0].info[REF_ENERGY] == pytest.approx(structures[0].info[REF_ENERGY] + 1.0)
    np.testing.assert_allclose(residual[1].arrays[REF_FORCES], structures[1].arrays[REF_FORCES] - 1.0)
    with pytest.raises(MissingEIPLabel, match="mlearn/Si/test/2"):
        subtract_eip(labelled, SW, "test file")
