"""Optuna sweeps on the tiny pipeline: real Optuna storage, real training, real MLflow store."""

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from eip2nn.config import ConfigError
from eip2nn.pipeline.config import load_pipeline
from eip2nn.sweep.config import load_sweep
from eip2nn.sweep.runner import run_sweep

SWEEP = Path(__file__).parent / "data" / "tiny_sweep.yaml"


def paths(tmp: Path) -> list[str]:
    return [f"output={tmp / 'sweep'}",
            f"overrides=[output={tmp / 'out'}, data.labels={tmp / 'labels.sqlite'}]"]


def test_two_sweep_processes_share_one_study(tmp_path, data_mirror_session):
    from mlflow.tracking import MlflowClient
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    cmd = [sys.executable, "-m", "eip2nn", "sweep", str(SWEEP), "--n-trials", "2", "--storage", storage]
    for item in paths(tmp_path):
        cmd += ["--set", item]
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    study = optuna.load_study(study_name="tiny", storage=storage)
    assert sorted(t.number for t in study.trials) == [0, 1, 2, 3]  # 2 + 2, none lost, none twice
    assert all(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in study.trials)
    client = MlflowClient(env["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("eip2nn-tiny")
    sweeps = client.search_runs([exp.experiment_id], "tags.`eip2nn.stage` = 'sweep'")
    trials = client.search_runs([exp.experiment_id], "tags.`eip2nn.stage` = 'trial'")
    assert len(sweeps) == 2 and len(trials) == 4
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == {s.info.run_id for s in sweeps}
    done = [t for t in trials if t.data.tags.get("optuna.state") == "COMPLETE"]
    for t in done:  # the trial's value is its stage's validation MAE, logged on the trial run
        value = study.trials[int(t.data.tags["optuna.trial"])].value
        assert t.data.metrics["val_energy_mae"] == pytest.approx(value)
        stage = client.search_runs([exp.experiment_id], f"tags.mlflow.parentRunId = '{t.info.run_id}'")
        assert len(stage) == 1 and stage[0].data.metrics["val_energy_mae_meV_atom"] == pytest.approx(value)
    best = tmp_path / "sweep" / "best.yaml"
    cfg = load_pipeline(best)  # ready to re-run as a pipeline
    assert cfg.train.lr == pytest.approx(study.best_params["train.lr"])
    assert cfg.model.width == study.best_params["model.width"]
    assert cfg.name == "tiny-best-tiny" and cfg.output_dir == Path("outputs/pipelines/tiny-best-tiny")  # not the
    assert cfg.experiment == "eip2nn-tiny-best-tiny"  # swept pipeline's folder or experiment: no overwritten report
    best.unlink()
    zero = [a if a != "2" else "0" for a in cmd]  # --n-trials 0: no new trial, best.yaml written again
    assert subprocess.run(zero, env=env, capture_output=True, text=True, timeout=300).returncode == 0
    assert len(optuna.load_study(study_name="tiny", storage=storage).trials) == 4 and best.is_file()


def test_pruned_trials_stop_training_and_are_marked(tmp_path, data_mirror_session, monkeypatch):
    from mlflow.tracking import MlflowClient
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # a threshold below any loss prunes every trial at its first report
    sweep = load_sweep(SWEEP, paths(tmp_path) + ["pruner.kind=threshold", "pruner.upper=1e-12"])
    result = run_sweep(sweep, n_trials=2, storage=f"sqlite:///{tmp_path / 'optuna.db'}", log=lambda s: None)
    assert [t.state for t in result.study.trials] == [optuna.trial.TrialState.PRUNED] * 2
    assert all(len(t.intermediate_values) == 1 for t in result.study.trials)  # stopped after one epoch
    assert result.best_config is None and not (tmp_path / "sweep" / "best.yaml").exists()
    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    exp = client.get_experiment_by_name("eip2nn-tiny")
    stages = client.search_runs([exp.experiment_id], "tags.`eip2nn.stage` = 'baseline'")
    assert len(stages) == 2 and {r.info.status for r in stages} == {"KILLED"}


def test_sweep_config_names_bad_knobs_and_refuses_test_metrics(tmp_path):
    with pytest.raises(ConfigError, match="params.train.lrr"):
        load_sweep(SWEEP, ["params={train.lrr: {type: float, low: 0.1, high: 1.0}}"])
    with pytest.raises(ConfigError, match="validation only"):
        load_sweep(SWEEP, ["objective.metric=test_energy_mae"])
    with pytest.raises(ConfigError, match="needs low < high"):
        load_sweep(SWEEP, ["params={train.lr: {type: float, low: 1.0, high: 0.1}}"])
    shipped = Path(__file__).parent.parent / "pipelines" / "sweeps"
    for f in shipped.glob("*.yaml"):  # every shipped sweep's knobs exist in its pipeline
        sweep = load_sweep(f)
        assert yaml.safe_load(f.read_text())["params"].keys() == sweep.config.params.keys()
