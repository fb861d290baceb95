"""Trainer stages on real mlearn Si with tiny models, tracked in a real MLflow SQLite store."""

import json
import math
import re

import numpy as np
import pytest
import torch

from eip2nn.config import ConfigError
from eip2nn.data.protocol import DataConfig, make_split
from eip2nn.keys import REF_ENERGY, REF_FORCES
from eip2nn.nn.checkpoint import load_model, read_checkpoint
from eip2nn.nn.model import DFT_HEAD
from eip2nn.training.config import StageConfig
from eip2nn.training.stages import run_stage

TINY = {"model": {"width": 8, "depth": 1, "n_rbf": 8, "head_hidden": 8, "cutoff": 4.5},
        "train": {"epochs": 3, "batch_size": 16, "lr": 5e-3}}


def stage_config(tmp, **sections) -> StageConfig:
    d = {"output": str(tmp / "runs"), "data": {"labels": str(tmp / "labels.sqlite"), "workers": 1},
         "tracking": {"experiment": "tests"}}
    for key, value in {**TINY, **sections}.items():
        d[key] = {**d.get(key, {}), **value} if isinstance(value, dict) else value
    return StageConfig.from_dict(d)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, data_mirror_session):
    return tmp_path_factory.mktemp("training")


@pytest.fixture(scope="module")
def mlflow_client(workdir):
    """A real MLflow SQLite store for this module's runs."""
    import os

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    yield MlflowClient(tracking_uri=uri)
    if old is None:
        os.environ.pop("MLFLOW_TRACKING_URI")
    else:
        os.environ["MLFLOW_TRACKING_URI"] = old


@pytest.fixture(scope="module")
def baseline(workdir, mlflow_client):
    return run_stage(stage_config(workdir, stage="baseline"), log=lambda s: None)


@pytest.fixture(scope="module")
def pretrain(workdir, mlflow_client):
    cfg = stage_config(workdir, stage="pretrain",
                       data={"eips": ["lmp_Si_sw", "lmp_Si_tersoff"], "labels": str(workdir / "labels.sqlite"),
                             "workers": 1, "dft_fraction": 0.1})
    return run_stage(cfg, log=lambda s: None)


def test_dft_fraction_hides_labels_and_nests(data_mirror_session):
    full = make_split(DataConfig(dft_fraction=1.0))
    tenth = make_split(DataConfig(dft_fraction=0.1))
    quarter = make_split(DataConfig(dft_fraction=0.25))
    n = len(full.train)
    assert [a.info["config_id"] for a in tenth.train] == [a.info["config_id"] for a in full.train]
    labelled = {a.info["config_id"] for a in tenth.train if REF_ENERGY in a.info}
    assert len(labelled) == math.ceil(0.1 * n)
    assert labelled <= {a.info["config_id"] for a in quarter.train if REF_ENERGY in a.info}
    hidden = [a for a in tenth.train if REF_ENERGY not in a.info]
    assert hidden and all(REF_FORCES not in a.arrays and a.calc is None for a in hidden)
    assert all(REF_ENERGY in a.info for a in tenth.test) and len(tenth.test) == len(full.test)
    assert not {a.info["config_id"] for a in full.val} & {a.info["config_id"] for a in full.train}


def test_baseline_run_is_tracked_with_params_metrics_and_artifacts(baseline, mlflow_client):
    run = mlflow_client.get_run(baseline.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.lr"] == "0.005" and run.data.params["model.backbone"] == "schnet"
    assert run.data.tags["eip2nn.stage"] == "baseline"
    assert len(run.data.tags["eip2nn.data.train_data_sha256"]) == 64
    assert run.data.tags["eip2nn.version.torch"].startswith("2.13")
    history = mlflow_client.get_metric_history(baseline.run_id, "val_loss")
    assert [m.step for m in history] == [0, 1, 2]
    assert run.data.metrics["test_energy_mae_meV_atom"] == pytest.approx(baseline.metrics["test"].energy_mae)
    artifacts = {f.path for d in ("model", "plots") for f in mlflow_client.list_artifacts(baseline.run_id, d)}
    assert {"model/model.pt", "plots/parity.png", "plots/learning_curve.png"} <= artifacts


def test_reported_test_metrics_match_an_independent_evaluation(baseline, data_mirror_session):
    from eip2nn.evaluation import evaluate_model

    again = evaluate_model(str(baseline.model_path), ["mlearn/Si/test"]).per_dataset["mlearn/Si/test"]
    assert again.n_structures == 25
    assert again.energy_mae == pytest.approx(baseline.metrics["test"].energy_mae, rel=1e-4)
    assert again.force_mae == pytest.approx(baseline.metrics["test"].force_mae, rel=1e-4)
    saved = json.loads((baseline.output_dir / "metrics.json").read_text())
    assert saved["test"]["energy_mae"] == pytest.approx(again.energy_mae, rel=1e-4)


def test_training_lowers_the_error(workdir, baseline, mlflow_client):
    untrained = run_stage(stage_config(workdir, stage="baseline", train={**TINY["train"], "epochs": 0}),
                          log=lambda s: None)
    assert baseline.metrics["train"].energy_mae < 0.8 * untrained.metrics["train"].energy_mae
    assert baseline.metrics["train"].force_mae < untrained.metrics["train"].force_mae


def test_rerun_of_a_finished_config_reuses_its_checkpoint(workdir, baseline, mlflow_client):
    again = run_stage(stage_config(workdir, stage="baseline"), log=lambda s: None)
    assert again.fit.resumed_from == 3 and again.output_dir == baseline.output_dir
    assert again.metrics["test"].energy_mae == pytest.approx(baseline.metrics["test"].energy_mae, rel=1e-6)


def test_checkpoint_holds_weights_config_and_versions(baseline):
    payload = read_checkpoint(baseline.model_path)  # torch.load(weights_only=True): no pickled modules
    assert payload["config"]["stage"] == "baseline"
    assert payload["versions"]["torch"].startswith("2.13")
    assert payload["model"]["heads"] == [DFT_HEAD]
    model = load_model(baseline.model_path)
    assert not model.training and model.head_names == [DFT_HEAD]


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="model.pt is not a readable eip2nn checkpoint"):
        load_model(bad)


def test_pretrain_has_one_head_per_eip(pretrain, mlflow_client):
    assert pretrain.heads == ["lmp_Si_sw", "lmp_Si_tersoff"]
    assert set(pretrain.metrics) == {"val:lmp_Si_sw", "val:lmp_Si_tersoff"}
    model = load_model(pretrain.model_path)
    sw, tersoff = model.head("lmp_Si_sw").offsets, model.head("lmp_Si_tersoff").offsets
    assert abs(float(sw[0] - tersoff[0])) > 0.1  # the EIPs' energy zeros differ; each head fits its own
    run = mlflow_client.get_run(pretrain.run_id)
    assert run.data.tags["eip2nn.eips"] == "lmp_Si_sw,lmp_Si_tersoff"


def test_finetune_from_mlflow_run_links_lineage_and_freezes(workdir, pretrain, mlflow_client):
    cfg = stage_config(workdir, stage="finetune", data={"dft_fraction": 0.1, "workers": 1,
                                                        "labels": str(workdir / "labels.sqlite")},
                       finetune={"pretrained": f"runs:/{pretrain.run_id}", "init_head": "best",
                                 "freeze": "backbone", "replay_fraction": 0.05})
    result = run_stage(cfg, log=lambda s: None)
    run = mlflow_client.get_run(result.run_id)
    assert run.data.tags["eip2nn.pretrain_run_id"] == pretrain.run_id
    assert run.data.tags["eip2nn.init_head"] in ("lmp_Si_sw", "lmp_Si_tersoff")
    assert run.data.tags["eip2nn.n_dft_labels"] == str(math.ceil(0.1 * 193) + math.ceil(0.1 * 21))
    before, after = load_model(pretrain.model_path), load_model(result.model_path)
    for name, p in before.backbone.state_dict().items():
        assert torch.equal(p, after.backbone.state_dict()[name]), name  # frozen
    assert not torch.equal(after.head(DFT_HEAD).net[0].weight, before.head(run.data.tags["eip2nn.init_head"]).net[0].weight)
    assert result.heads[0] == "lmp_Si_sw" and DFT_HEAD in result.heads


def test_leakage_tagged_eip_is_refused_for_pretraining(workdir, mlflow_client):
    cfg = stage_config(workdir, stage="pretrain", data={"eips": ["SNAP_ZuoChenLi_2019_Si"]})
    with pytest.raises(ValueError, match="may not label 'mlearn' data"):
        run_stage(cfg, log=lambda s: None)


@pytest.mark.parametrize("extra", [{}, {"schedule": "cosine", "ema_decay": 0.9, "final_start": 0.5}],
                         ids=["plateau", "cosine+ema+final"])
def test_resume_after_interrupt_equals_uninterrupted(tmp_path, data_mirror_session, extra):
    from eip2nn.data import load_dataset
    from eip2nn.nn.config import ModelConfig
    from eip2nn.nn.model import EnergyModel
    from eip2nn.nn.offsets import fit_head_statistics
    from eip2nn.training.config import TrainConfig
    from eip2nn.training.samples import head_arrays, make_samples
    from eip2nn.training.trainer import fit

    structures = load_dataset("mlearn/Si/test")

    def fresh():
        torch.manual_seed(0)
        m = EnergyModel(ModelConfig(**TINY["model"]), ["Si"], [DFT_HEAD])
        samples = make_samples(m, structures, [DFT_HEAD])
        fit_head_statistics(m.head(DFT_HEAD), *head_arrays(samples, DFT_HEAD))
        return m, samples[:20], samples[20:]

    cfg = TrainConfig(epochs=4, batch_size=8, lr=5e-3, **extra)
    m1, tr, va = fresh()
    straight = fit(m1, tr, va, {DFT_HEAD: 1.0}, cfg, tmp_path / "a.pt")

    def stop_after_two(row):
        if row["epoch"] == 1:
            raise KeyboardInterrupt

    m2, tr, va = fresh()
    with pytest.raises(KeyboardInterrupt):
        fit(m2, tr, va, {DFT_HEAD: 1.0}, cfg, tmp_path / "b.pt", on_epoch=stop_after_two)
    m3, tr, va = fresh()
    resumed = fit(m3, tr, va, {DFT_HEAD: 1.0}, cfg, tmp_path / "b.pt")
    assert resumed.resumed_from == 2
    if extra:  # the final phase began at epoch 2, after the interruption, and the best is the final phase's
        assert [h["final_phase"] for h in resumed.history] == [0.0, 0.0, 1.0, 1.0]
        assert resumed.best_epoch >= 2
    assert [h["val_loss"] for h in resumed.history] == pytest.approx([h["val_loss"] for h in straight.history], rel=1e-6)
    for k, v in m1.state_dict().items():
        np.testing.assert_allclose(v.numpy(), m3.state_dict()[k].numpy(), rtol=1e-6, atol=1e-7)


def test_unknown_config_key_names_the_key(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'train.lrr'"):
        StageConfig.from_dict({"train": {"lrr": 0.1}})
    with pytest.raises(ConfigError, match="train.epochs: expected an integer"):
        StageConfig.from_dict({"train": {"epochs": "many"}})
    with pytest.raises(ConfigError, match="model.backbone"):
        StageConfig.from_dict({"model": {"backbone": "transformer"}})


def test_calculator_from_mlflow_run_runs_md(baseline, mlflow_client, data_mirror_session):
    from ase import units
    from ase.md.langevin import Langevin

    from eip2nn.calculator import EIP2NNCalculator
    from eip2nn.data import load_dataset

    atoms = load_dataset("mlearn/Si/test")[0]
    atoms.calc = EIP2NNCalculator.from_mlflow(baseline.run_id)
    e_run = atoms.get_potential_energy()
    assert e_run == pytest.approx(EIP2NNCalculator.from_checkpoint(baseline.model_path).get_potential_energy(atoms))
    Langevin(atoms, 1.0 * units.fs, temperature_K=300, friction=0.02, rng=np.random.default_rng(0)).run(20)
    d = atoms.get_all_distances(mic=True)[np.triu_indices(len(atoms), 1)]
    assert d.min() > 1.5 and np.isfinite(atoms.get_forces()).all()


def test_cli_train_and_evaluate(workdir, mlflow_client, capsys):
    from eip2nn.cli import main

    args = ["train", "pipelines/stages/si_baseline.yaml", "--set", f"output={workdir / 'cli'}",
            "--set", "train.epochs=1", "--set", "model.width=8", "--set", "model.depth=1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert re.search(r"^test +25 ", out, re.M) and "MLflow run:" in out
    model_path = out.split("model: ")[1].split()[0]
    assert main(["evaluate", "--model", model_path, "--dataset", "mlearn/Si/test"]) == 0
    assert "mlearn/Si/test  25" in capsys.readouterr().out
    assert main(["evaluate", "--eip", "lmp_Si_sw", "--dataset", "mlearn/Si/test",
                 "--labels", str(workdir / "eval.sqlite"), "--workers", "1"]) == 0
    assert "EIP lmp_Si_sw" in capsys.readouterr().out
    assert main(["evaluate", "--eip", "SNAP_ZuoChenLi_2019_Si", "--dataset", "mlearn/Si/test",
                 "--labels", str(workdir / "eval.sqlite")]) == 2
    assert "leakage" in capsys.readouterr().err
    assert main(["train", "pipelines/stages/si_baseline.yaml", "--set", "train.lrr=1"]) == 2
    assert "unknown key 'train.lrr'" in capsys.readouterr().err


def test_interrupted_stage_resumes_under_another_parent_run(tmp_path, data_mirror_session, mlflow_client):
    """A pipeline re-run after a crash has a new parent MLflow run; the stage must still resume, not refuse."""
    from eip2nn.training.stages import StopStage

    def stop_after_two(row):
        if row["epoch"] == 1:
            raise StopStage

    first = stage_config(tmp_path, stage="baseline", train={**TINY["train"], "epochs": 4},
                         tracking={"experiment": "tests", "run_name": "crash"})
    with pytest.raises(StopStage):
        run_stage(first, log=lambda s: None, on_epoch=stop_after_two)
    second = stage_config(tmp_path, stage="baseline", train={**TINY["train"], "epochs": 4},
                          tracking={"experiment": "tests", "run_name": "again"})
    assert second.content_hash() == first.content_hash()
    resumed = run_stage(second, log=lambda s: None)
    assert resumed.fit.resumed_from == 2 and len(resumed.fit.history) == 4


def test_weight_average_and_final_phase_change_what_is_returned(tmp_path, data_mirror_session):
    """The averaged weights are what validation sees and what comes back; the final phase's loss has its weights."""
    from eip2nn.data import load_dataset
    from eip2nn.nn.config import ModelConfig
    from eip2nn.nn.model import EnergyModel
    from eip2nn.nn.offsets import fit_head_statistics
    from eip2nn.training.config import TrainConfig
    from eip2nn.training.loss import batch_loss
    from eip2nn.training.samples import head_arrays, make_samples
    from eip2nn.training.trainer import fit

    structures = load_dataset("mlearn/Si/test")
    torch.manual_seed(0)
    model = EnergyModel(ModelConfig(**TINY["model"]), ["Si"], [DFT_HEAD])
    samples = make_samples(model, structures, [DFT_HEAD])
    fit_head_statistics(model.head(DFT_HEAD), *head_arrays(samples, DFT_HEAD))
    start = {k: v.clone() for k, v in model.state_dict().items()}
    cfg = TrainConfig(epochs=3, batch_size=8, lr=5e-3, ema_decay=0.5, final_start=0.5, final_energy_weight=7.0,
                      final_force_weight=0.0, patience=100)
    result = fit(model, samples[:20], samples[20:], {DFT_HEAD: 1.0}, cfg, tmp_path / "c.pt")
    assert [h["final_phase"] for h in result.history] == [0.0, 0.0, 1.0]  # round(0.5 × 3) = 2
    # the last epoch's validation loss is the averaged weights' loss with the final weights (forces weigh 0)
    with torch.no_grad():
        model.train()
        val, _ = batch_loss(model, samples[20:], {DFT_HEAD: 1.0}, cfg.final_loss_weights)
    assert result.best_epoch == 2
    assert float(val) == pytest.approx(result.history[-1]["val_loss"], rel=1e-5)
    assert any(not torch.equal(v, start[k]) for k, v in model.state_dict().items())


def test_min_steps_gives_a_small_training_set_more_epochs_and_the_schedule_follows(tmp_path, data_mirror_session):
    """min_steps 9 on 10 structures in batches of 4 (3 steps an epoch): 3 epochs, not 1; the cosine schedule and
    the final phase span the 3; 100% of the data (more steps an epoch) keeps `epochs`."""
    from eip2nn.data import load_dataset
    from eip2nn.nn.config import ModelConfig
    from eip2nn.nn.model import EnergyModel
    from eip2nn.training.config import StageConfig, TrainConfig
    from eip2nn.training.samples import make_samples
    from eip2nn.training.trainer import fit

    cfg = TrainConfig(epochs=1, min_steps=9, batch_size=4, lr=1e-3, schedule="cosine", final_start=0.5,
                      patience=100)
    assert (cfg.epochs_for(10), cfg.epochs_for(9), cfg.epochs_for(36), cfg.epochs_for(400)) == (3, 3, 1, 1)
    torch.manual_seed(0)
    model = EnergyModel(ModelConfig(**TINY["model"]), ["Si"], [DFT_HEAD])
    samples = make_samples(model, load_dataset("mlearn/Si/test")[:12], [DFT_HEAD])
    result = fit(model, samples[:10], samples[10:], {DFT_HEAD: 1.0}, cfg, tmp_path / "m.pt")
    assert [h["final_phase"] for h in result.history] == [0.0, 0.0, 1.0]  # round(0.5 × 3) = 2
    assert result.history[-1]["lr"] == pytest.approx(cfg.min_lr)  # the half cosine ends with the 3rd epoch
    with pytest.raises(ValueError, match="min_steps >= 0"):
        TrainConfig(min_steps=-1)
    # left out of the stage hash at its default (finished stages stay valid), in it otherwise
    assert "min_steps" not in StageConfig().result_dict()["train"]
    assert StageConfig(train=TrainConfig(min_steps=9)).content_hash() != StageConfig().content_hash()


def test_device_is_checked_and_left_out_of_the_stage_hash(tmp_path):
    from eip2nn.nn.device import resolve_device
    from eip2nn.training.config import StageConfig, TrainConfig

    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="train.device"):
        TrainConfig(device="tpu")
    a, b = StageConfig(train=TrainConfig(device="cpu")), StageConfig(train=TrainConfig(device="cuda"))
    assert a.content_hash() == b.content_hash()
    assert StageConfig(train=TrainConfig(ema_decay=0.99)).content_hash() != a.content_hash()


def test_the_labelling_scheduler_is_left_out_of_the_stage_hash():
    """Where labels are computed (a Dask cluster or local processes) does not change what a stage learns."""
    from eip2nn.data.protocol import DataConfig
    from eip2nn.training.config import StageConfig

    local = StageConfig(data=DataConfig(dataset="mlearn/Si"))
    on_dask = StageConfig(data=DataConfig(dataset="mlearn/Si", scheduler="tcp://10.0.0.5:8786"))
    assert local.content_hash() == on_dask.content_hash()
    assert StageConfig(data=DataConfig(dataset="mlearn/Mo")).content_hash() != local.content_hash()


def _local_energy_error(model, structures, eip) -> float:
    """Mean |Δe_i − ⟨Δe⟩| over the atoms of ``structures``, Δe_i = e_i(model head) − e_i(EIP), eV."""
    from eip2nn.keys import LOCAL_ENERGIES, eip_key
    from eip2nn.nn.graph import collate
    errors = []
    model.eval()
    for k, atoms in enumerate(structures):
        pred = model(collate([model.graph(atoms, where=str(k))]), heads=[eip], forces=False)[eip]
        # each structure's total taken out: how the head shares a total among atoms, not the total's error
        diff = pred.atom_energies.detach().numpy() - atoms.arrays[eip_key(eip, LOCAL_ENERGIES)]
        errors.append(np.abs(diff - diff.mean()))
    return float(np.concatenate(errors).mean())


def test_pretraining_on_local_energies_learns_each_atoms_share(workdir, mlflow_client):
    """A head trained with train.local_energy_weight shares each validation structure's energy among its atoms
    much as the EIP does (LAMMPS pe/atom); a SchNet head trained on totals only shares it far less alike."""
    from eip2nn.labelling.choice import label_with
    from eip2nn.nn.checkpoint import load_model
    from eip2nn.potentials.db import PotentialsDB
    eip = "lmp_Si_sw"
    cfg = {"stage": "pretrain", "data": {"eips": [eip], "labels": str(workdir / "labels.sqlite"), "workers": 1,
                                         "dft_fraction": 0.1},
           "model": {"width": 16}, "train": {"epochs": 12, "lr": 1e-2}}
    totals = run_stage(stage_config(workdir, **cfg), log=lambda s: None)
    cfg["train"] = {**cfg["train"], "local_energy_weight": 10.0}
    local = run_stage(stage_config(workdir, **cfg), log=lambda s: None)
    assert local.output_dir != totals.output_dir
    note = next(n for n in local.notes if n.startswith("local energies"))
    have, of = re.search(rf"on (\d+) of (\d+) structures for {eip}", note).groups()
    assert have == of and int(of) > 100  # every training structure
    val = make_split(stage_config(workdir, **cfg).data).val
    val = label_with(val, [PotentialsDB().get(eip)], workdir / "labels.sqlite", workers=1)
    with_local = _local_energy_error(load_model(local.model_path), val, eip)
    without = _local_energy_error(load_model(totals.model_path), val, eip)
    assert with_local < 0.7 * without, (with_local, without)  # measured: 0.16 against 0.30 eV


def test_the_local_energy_term_is_each_atoms_squared_error_where_a_target_has_local_energies():
    """Atom energies sum to each structure's energy; the local term adds w·⟨(e_i − e_i^EIP)²⟩ over the atoms of the
    targets that carry local energies, computed here structure by structure (not batched)."""
    from ase.build import bulk

    from eip2nn.keys import ENERGY, FORCES, LOCAL_ENERGIES, eip_key
    from eip2nn.nn.config import ModelConfig
    from eip2nn.nn.graph import collate
    from eip2nn.nn.model import EnergyModel
    from eip2nn.potentials import make_evaluator
    from eip2nn.potentials.db import PotentialsDB
    from eip2nn.training.config import LossWeights
    from eip2nn.training.loss import batch_loss
    from eip2nn.training.samples import make_samples
    eip = "lmp_Si_sw"
    structures = [bulk("Si", "diamond", 5.43, cubic=True), bulk("Si", "diamond", 5.43, cubic=True).repeat((2, 1, 1))]
    del structures[1][3]
    ev = make_evaluator(PotentialsDB().get(eip))
    for k, a in enumerate(structures):
        a.rattle(0.05, seed=k)
        r = ev.evaluate(a)
        a.info[eip_key(eip, ENERGY)], a.arrays[eip_key(eip, FORCES)] = r.energy, r.forces
        a.arrays[eip_key(eip, LOCAL_ENERGIES)] = r.local_energies
    ev.close()
    bare = structures[0].copy()  # the same structure without local energies: no local term
    del bare.arrays[eip_key(eip, LOCAL_ENERGIES)]
    model = EnergyModel(ModelConfig(backbone="symmetry_functions", width=8, depth=1, cutoff=4.5), ["Si"],
                        [eip]).double()
    model.backbone.fit_standardisation([model.graph(a) for a in structures])
    samples = make_samples(model, structures + [bare], [eip])
    assert samples[2].targets[eip].local_energies is None
    squared = []
    for a in structures:
        p = model(collate([model.graph(a)]), heads=[eip], forces=False)[eip]
        assert p.atom_energies.sum().item() == pytest.approx(p.energy.item(), abs=1e-10)
        squared.append((p.atom_energies.detach().numpy() - a.arrays[eip_key(eip, LOCAL_ENERGIES)]) ** 2)
    w = 3.0
    base, _ = batch_loss(model, samples, {eip: 1.0}, LossWeights(1.0, 0.1, 0.0, 0.0))
    local, _ = batch_loss(model, samples, {eip: 1.0}, LossWeights(1.0, 0.1, 0.0, w))
    assert local.item() - base.item() == pytest.approx(w * np.concatenate(squared).mean(), rel=1e-9)
