"""Committees (train.committee: N): the mean of N networks, as a model, a checkpoint and a tracked stage whose
members are stages of their own, on real mlearn Si, a real EIP and a real MLflow store."""

import numpy as np
import pytest
import torch
from ase.build import bulk
from test_training import TINY, mlflow_client, stage_config, workdir  # noqa: F401  (fixtures)

from eip2nn.calculator import EIP2NNCalculator
from eip2nn.data.protocol import make_split
from eip2nn.evaluation import evaluate_model
from eip2nn.nn.checkpoint import load_model, save_checkpoint
from eip2nn.nn.committee import Committee
from eip2nn.nn.config import ModelConfig
from eip2nn.nn.graph import collate
from eip2nn.nn.model import DFT_HEAD, EnergyModel
from eip2nn.training.committee import MEMBER_SEED_STEP, member_configs
from eip2nn.training.config import StageConfig
from eip2nn.training.stages import finished_stage, run_stage, stage_dir

SW = "lmp_Si_sw"


def members(n=3, backbone="schnet", **config) -> list[EnergyModel]:
    out = []
    for k in range(n):
        torch.manual_seed(k)
        out.append(EnergyModel(ModelConfig(backbone=backbone, cutoff=4.0, width=8, depth=1, **config), ["Si"],
                               [DFT_HEAD]).double().eval())
    return out


def rattled_si():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.rattle(0.1, seed=3)
    return atoms


def test_a_committee_predicts_the_members_mean_energy_forces_and_stress():
    models = members()
    committee = Committee(models).eval()
    batch = collate([committee.graph(rattled_si())])
    out = committee(batch, stress=True)[DFT_HEAD]
    each = [m(batch, stress=True)[DFT_HEAD] for m in models]
    for field in ("energy", "forces", "stress", "atom_energies"):
        mean = torch.stack([getattr(p, field).detach() for p in each]).mean(dim=0)
        assert torch.allclose(getattr(out, field).detach(), mean, rtol=1e-12, atol=1e-12), field
    energies = torch.stack([p.energy.detach() for p in each])
    assert energies.std() > 1e-3  # the members differ
    assert torch.allclose(committee.member_energies(batch, DFT_HEAD), energies, rtol=1e-12, atol=1e-12)


def test_the_calculator_gives_the_mean_and_the_members_spread_and_a_checkpoint_keeps_every_member(tmp_path):
    models = members()
    path = save_checkpoint(tmp_path / "committee.pt", Committee(models))
    loaded = load_model(path)
    assert isinstance(loaded, Committee) and len(loaded.members) == 3
    atoms = rattled_si()
    energies = []
    for m in models:
        atoms.calc = EIP2NNCalculator(m)
        energies.append(atoms.get_potential_energy())
    atoms.calc = EIP2NNCalculator.from_checkpoint(path)
    assert atoms.get_potential_energy() == pytest.approx(np.mean(energies), abs=1e-10)
    assert atoms.calc.results["energy_std"] == pytest.approx(np.std(energies, ddof=1), abs=1e-10)


def test_members_of_another_design_are_refused():
    other = [EnergyModel(ModelConfig(backbone="schnet", cutoff=5.0, width=8, depth=1), ["Si"], [DFT_HEAD]).double()]
    with pytest.raises(ValueError, match="member 1 differs from member 0 in its model config"):
        Committee(members(1) + other)
    with pytest.raises(ValueError, match="at least 2 members"):
        Committee(members(1))


def test_a_committee_is_refused_where_no_dft_head_is_trained():
    for stage, extra in (("pretrain", {}), ("snap", {})):
        with pytest.raises(ValueError, match="train.committee applies to stages that train a DFT head"):
            StageConfig.from_dict({"stage": stage, "train": {"committee": 2}, **extra})
    with pytest.raises(ValueError, match="train.committee must be >= 1"):
        StageConfig.from_dict({"train": {"committee": 0}})


@pytest.fixture(scope="module")
def single(workdir, mlflow_client):  # noqa: F811
    """The single Δ network that is member 0 of the committee below."""
    return run_stage(stage_config(workdir, stage="delta", delta={"eip": SW}, data={"dft_fraction": 0.5}),
                     log=lambda s: None)


@pytest.fixture(scope="module")
def committee_stage(workdir, mlflow_client, single):  # noqa: F811
    cfg = stage_config(workdir, stage="delta", delta={"eip": SW}, data={"dft_fraction": 0.5},
                       train={**TINY["train"], "committee": 2})
    lines = []
    return cfg, run_stage(cfg, log=lines.append), lines


def test_member_zero_is_the_single_network_and_is_reused(committee_stage, single):
    cfg, result, lines = committee_stage
    first, second = member_configs(cfg)
    assert stage_dir(first) == single.output_dir  # the same config: trained once
    assert second.train.seed == cfg.train.seed + MEMBER_SEED_STEP
    assert any("member 1 of 2" in line and "reusing" in line for line in lines)
    assert finished_stage(second) is not None
    assert result.output_dir != single.output_dir


def test_the_committee_stage_scores_the_mean_of_its_members(committee_stage, workdir):  # noqa: F811
    """Its reported test errors are those of the members' mean, evaluated here independently (EIP + mean
    network through the calculator), and differ from each member's."""
    cfg, result, _ = committee_stage
    model = load_model(result.model_path)
    assert isinstance(model, Committee) and model.reference_eip == SW
    test = make_split(cfg.data).test[:6]
    calc = EIP2NNCalculator(model)
    member_calcs = [EIP2NNCalculator(m) for m in model.members]
    for atoms in test:
        energies = []
        for c in member_calcs:
            atoms.calc = c
            energies.append(atoms.get_potential_energy())
        atoms.calc = calc
        assert atoms.get_potential_energy() == pytest.approx(np.mean(energies), rel=1e-6)  # float32 networks
    again = evaluate_model(str(result.model_path), ["mlearn/Si/test"], labels=workdir / "labels.sqlite", workers=1)
    m = again.per_dataset["mlearn/Si/test"]
    assert "a committee of 2, on top of EIP lmp_Si_sw" in again.subject
    assert m.energy_mae == pytest.approx(result.metrics["test"].energy_mae, rel=1e-4)
    assert m.force_mae == pytest.approx(result.metrics["test"].force_mae, rel=1e-4)
    done = finished_stage(cfg)
    assert any(note.startswith("committee of 2 (train.seed 0, 100)") for note in done.notes)
    each = [finished_stage(c).metrics["test"].energy_mae for c in member_configs(cfg)]
    assert all(abs(e - m.energy_mae) > 1e-9 for e in each)


def test_the_committee_run_is_the_parent_of_its_members_runs(committee_stage, mlflow_client):  # noqa: F811
    cfg, result, _ = committee_stage
    run = mlflow_client.get_run(result.run_id)
    assert run.data.tags["eip2nn.committee"] == "2" and run.info.status == "FINISHED"
    assert "member0_test_energy_mae_meV_atom" in run.data.metrics
    children = mlflow_client.search_runs([run.info.experiment_id],
                                         f"tags.mlflow.parentRunId = '{result.run_id}'")
    # member 0 was reused (its run belongs to the single stage); member 1 ran under the committee
    assert [c.data.tags["mlflow.runName"] for c in children] == [f"{cfg.arm} member 1"]


def test_a_finished_committee_is_reused(committee_stage):
    cfg, result, _ = committee_stage
    assert finished_stage(cfg).run_id == result.run_id
