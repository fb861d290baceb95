"""The user's own DFT files end to end: pipelines, `eip2nn init`, evaluate and run on files, bad data refused.

Real files (mlearn Si rewritten in other formats; the Ti–Al set mirrored in
shared/data), real EIPs, real MLflow stores, tiny networks and few epochs.
"""

import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.stress import voigt_6_to_full_3x3_stress

from eip2nn.cli import main
from eip2nn.keys import REF_ENERGY, REF_FORCES, REF_STRESS
from eip2nn.pipeline.config import load_pipeline, pipeline_from_dict
from eip2nn.pipeline.runner import run_pipeline

TINY = {
    "name": "own", "label_all": False, "domain_check": False,
    "study": {"fractions": [1.0], "seeds": [0], "arms": ["baseline"]},
    "model": {"backbone": "symmetry_functions", "descriptor": "set30", "width": 8, "depth": 1, "head_hidden": 4},
    "train": {"epochs": 2, "batch_size": 16, "lr": 0.005},
    "tracking": {"enabled": False},
}


def _write_extxyz(structures, path, energy="energy", forces="forces", stress="stress"):
    """Write DFT-labelled structures as extxyz under the given key names (stress in eV/Å³, tensile)."""
    out = []
    for a in structures:
        b = a.copy()
        b.info = {energy: a.info[REF_ENERGY], "config_type": a.info.get("group", "unknown")}
        if REF_STRESS in a.info:  # 3x3, as ASE writes (and insists on reading) the `stress` key
            b.info[stress] = voigt_6_to_full_3x3_stress(np.asarray(a.info[REF_STRESS]))
        b.arrays[forces] = np.asarray(a.arrays[REF_FORCES])
        for key in (REF_FORCES,):
            b.arrays.pop(key, None)
        out.append(b)
    write(path, out, format="extxyz")
    return path


def _write_db(structures, path):
    import ase.db
    with ase.db.connect(path) as db:
        for a in structures:
            b = a.copy()
            b.info = {}
            b.arrays.pop(REF_FORCES, None)
            b.calc = SinglePointCalculator(b, energy=a.info[REF_ENERGY], forces=a.arrays[REF_FORCES],
                                           stress=a.info[REF_STRESS])
            db.write(b, config_type=a.info["group"])
    return path


@pytest.fixture(scope="module")
def si_files(tmp_path_factory, data_mirror_session):
    """mlearn Si train/test as extxyz (default and renamed keys), ASE db and mlearn JSON, outside the repo."""
    from eip2nn.data import load_dataset
    tmp = tmp_path_factory.mktemp("si_files")
    train, test = load_dataset("mlearn/Si/train"), load_dataset("mlearn/Si/test")
    files = {
        "extxyz": (_write_extxyz(train, tmp / "train.xyz"), _write_extxyz(test, tmp / "test.xyz"), {}),
        "renamed": (_write_extxyz(train, tmp / "train_r.extxyz", "E_dft", "F_dft", "S_dft"),
                    _write_extxyz(test, tmp / "test_r.extxyz", "E_dft", "F_dft", "S_dft"),
                    {"energy": "E_dft", "forces": "F_dft", "stress": "S_dft"}),
        "db": (_write_db(train, tmp / "train.db"), _write_db(test, tmp / "test.db"), {}),
        "json": (shutil.copy(data_mirror_session / "mlearn/Si/training.json", tmp / "training.json"),
                 shutil.copy(data_mirror_session / "mlearn/Si/test.json", tmp / "test.json"), {}),
    }
    return tmp, files


def _own(tmp, train, test, keys, **extra):
    data = {"train": str(train), "test": str(test), "keys": keys, "workers": 1, "labels": str(tmp / "labels.sqlite")}
    data.update(extra)
    return pipeline_from_dict({**TINY, "output": str(tmp / f"out-{Path(train).name}"), "data": data})


def test_every_format_gives_the_registered_dataset_s_training_inputs_and_result(si_files):
    """extxyz (default and renamed keys), ASE db and mlearn JSON files train exactly as mlearn/Si does."""
    from eip2nn.data.protocol import make_split
    tmp, files = si_files
    registered = pipeline_from_dict({**TINY, "output": str(tmp / "out-registered"),
                                     "data": {"dataset": "mlearn/Si", "workers": 1}})
    reference = make_split(registered.data)
    want = run_pipeline(registered, log=lambda s: None).cells[0]
    for fmt, (train, test, keys) in files.items():
        # ASE writes extxyz numbers with 8 decimals; the db and JSON files keep every bit
        atol, rel = (1e-7, 1e-3) if fmt in ("extxyz", "renamed") else (1e-12, 1e-9)
        p = _own(tmp, train, test, keys)
        split = make_split(p.data)
        for part in ("train", "val", "test"):
            mine, ref = getattr(split, part), getattr(reference, part)
            assert len(mine) == len(ref), (fmt, part)
            for a, b in zip(mine, ref):
                assert a.get_chemical_symbols() == b.get_chemical_symbols()
                np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=atol, err_msg=fmt)
                np.testing.assert_allclose(a.cell[:], b.cell[:], rtol=0, atol=atol, err_msg=fmt)
                assert a.info[REF_ENERGY] == pytest.approx(b.info[REF_ENERGY], abs=atol), fmt
                np.testing.assert_allclose(a.arrays[REF_FORCES], b.arrays[REF_FORCES], rtol=0, atol=atol, err_msg=fmt)
                np.testing.assert_allclose(a.info[REF_STRESS], b.info[REF_STRESS], rtol=0, atol=atol, err_msg=fmt)
        assert split.hashes["train_file_sha256"] and split.hashes["train_content_sha256"]
        got = run_pipeline(p, log=lambda s: None).cells[0]
        assert got.test_energy_mae == pytest.approx(want.test_energy_mae, rel=rel), fmt
        assert got.test_force_mae == pytest.approx(want.test_force_mae, rel=rel), fmt


def test_without_a_test_file_a_seeded_share_is_held_out_and_never_trained_on(si_files):
    from eip2nn.data.checks import structure_fingerprints
    from eip2nn.data.protocol import make_split
    tmp, files = si_files
    train, _, _ = files["extxyz"]
    p = pipeline_from_dict({**TINY, "data": {"train": str(train), "test_fraction": 0.2, "workers": 1}})
    split = make_split(p.data)
    assert len(split.test) == round(0.2 * 214) and len(split.train) + len(split.val) == 214 - len(split.test)
    assert not set(structure_fingerprints(split.test)) & set(structure_fingerprints(split.train + split.val))
    again = make_split(pipeline_from_dict({**TINY, "data": {"train": str(train), "test_fraction": 0.2,
                                                             "split_seed": 5}}).data)
    assert structure_fingerprints(again.test) == structure_fingerprints(split.test)  # one test set for every seed
    assert "held out" in split.test_note


def test_a_leaked_test_structure_stops_the_pipeline_naming_file_and_frame(si_files, tmp_path):
    from eip2nn.data import load_dataset
    train = load_dataset("mlearn/Si/train")
    test = load_dataset("mlearn/Si/test")[:5] + [train[7]]
    train_file = _write_extxyz(train, tmp_path / "train.xyz")
    test_file = _write_extxyz(test, tmp_path / "test.xyz")
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump({**TINY, "output": str(tmp_path / "out"),
                                      "data": {"train": str(train_file), "test": str(test_file)}}))
    assert main(["pipeline", "run", str(config)]) == 2
    assert not (tmp_path / "out" / "stages").exists()  # refused before any training


def test_leak_message_names_the_file_the_frame_and_the_problem(si_files, tmp_path, capsys):
    from eip2nn.data import load_dataset
    train = load_dataset("mlearn/Si/train")
    test_file = _write_extxyz(load_dataset("mlearn/Si/test")[:5] + [train[7]], tmp_path / "test.xyz")
    train_file = _write_extxyz(train, tmp_path / "train.xyz")
    config = tmp_path / "p.yaml"
    config.write_text(yaml.safe_dump({**TINY, "output": str(tmp_path / "out"),
                                      "data": {"train": str(train_file), "test": str(test_file)}}))
    main(["pipeline", "run", str(config)])
    err = capsys.readouterr().err
    assert "test.xyz" in err and "frame 5" in err and "leak" in err


def test_skipped_bad_frames_are_listed_in_the_report_and_mlflow(si_files, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from eip2nn.data import load_dataset
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    train = load_dataset("mlearn/Si/train")[:60]
    bad = train[3].copy()
    bad.arrays[REF_FORCES] = bad.arrays[REF_FORCES].copy()
    bad.arrays[REF_FORCES][0, 0] = np.nan
    train_file = _write_extxyz(train[:10] + [bad] + train[10:], tmp_path / "train.xyz")
    p = pipeline_from_dict({**TINY, "output": str(tmp_path / "out"), "tracking": {"enabled": True},
                            "data": {"train": str(train_file), "on_bad": "skip", "workers": 1}})
    result = run_pipeline(p, log=lambda s: None)
    assert not result.failed
    md = result.files["table_md"].read_text()
    assert "train.xyz: frame 10:" in md and "left out" in md
    artifacts = {f.path for f in MlflowClient(uri).list_artifacts(result.run_id, "results")}
    assert "results/omitted_frames.json" in artifacts
    omitted = json.loads((tmp_path / "out" / "omitted_frames.json").read_text())
    assert [o["frame"] for o in omitted] == [10]


@pytest.fixture(scope="module")
def tial_file(tmp_path_factory, data_mirror_session):
    """The mirrored Ti–Al set, extracted where a user would keep it (outside the repo)."""
    tmp = tmp_path_factory.mktemp("tial")
    with tarfile.open(data_mirror_session / "acedata" / "TiAl_tutorial.tar.gz") as tar:
        member = tar.extractfile("TiAl_tutorial.xyz")
        (tmp / "TiAl_tutorial.xyz").write_bytes(member.read())
    return tmp / "TiAl_tutorial.xyz"


def test_init_on_two_element_data_writes_a_pipeline_that_runs_unmodified(tial_file, tmp_path, monkeypatch, capsys):
    """Ti–Al (virial, `force`, config_type): `eip2nn init` finds the keys and the EIPs; the pipeline it writes runs."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "tial.yaml"
    assert main(["init", str(tial_file), "-o", str(out), "--labels", str(tmp_path / "labels.sqlite"),
                 "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "Al, Ti" in printed and "FLD_TiAl" in printed and "stress 296" in printed  # the virial read as stress
    p = load_pipeline(out)
    assert p.data.keys.forces == "force" and p.data.keys.virial == "virial"
    assert p.study.arms == ["baseline", "weak", "transfer", "both", "delta", "snap", "auto"]
    assert p.study.auto_choice == "blend"
    table = printed.split("Eligible EIPs")[1]
    assert sum(line.startswith(("EAM_", "MEAM_")) for line in table.splitlines()) >= 3  # several Ti-Al EIPs scored
    # the written pipeline, shrunk to test size only through overrides
    assert main(["pipeline", "run", str(out), "--set", f"output={tmp_path / 'run'}", "--set", "study.seeds=[0]",
                 "--set", "study.fractions=[0.5]", "--set", "study.arms=[baseline,transfer,snap,auto]",
                 "--set", "snap.twojmax=4", "--set", "snap.quadratic=linear",
                 "--set", "train.epochs=2", "--set", "pretrain.train.epochs=1", "--set", "pretrain.n_eips=2",
                 "--set", "model.width=8", "--set", "data.workers=1"]) == 0
    md = (tmp_path / "run" / "results.md").read_text()
    assert "| transfer | 0.5 |" in md and "| snap | 0.5 |" in md  # the SNAP reference on two elements
    assert "| auto | 0.5 |" in md and "the mean of the top k arms" in md  # auto blends, on two elements too
    assert "test stress MAE (GPa)" in md  # the virial became a stress, evaluated on the test set
    assert "## Test errors by group" in md and "FLD_TiAl" in md


def test_evaluate_and_score_eips_take_files(tial_file, tmp_path, capsys):
    store = str(tmp_path / "labels.sqlite")
    assert main(["score-eips", "--file", str(tial_file), "--labels", store, "--workers", "1", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "TiAl_tutorial.xyz" in out and "EAM_Dynamo_ZopeMishin_2003_TiAl" in out
    assert main(["evaluate", "--eip", "EAM_Dynamo_ZopeMishin_2003_TiAl", "--file", str(tial_file),
                 "--labels", store, "--workers", "1"]) == 0
    out = capsys.readouterr().out
    assert "TiAl_tutorial.xyz" in out and "329" in out


def test_a_sweep_tunes_a_pipeline_on_files(tial_file, tmp_path, monkeypatch):
    """Optuna over a pipeline whose data is the user's file (real storage, real training)."""
    import optuna

    from eip2nn.sweep.config import load_sweep
    from eip2nn.sweep.runner import run_sweep
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    pipeline = tmp_path / "tial.yaml"
    pipeline.write_text(yaml.safe_dump({**TINY, "name": "tial-sweep", "output": str(tmp_path / "out"),
                                        "model": {"backbone": "schnet", "width": 8, "depth": 1, "head_hidden": 4},
                                        "data": {"train": str(tial_file), "keys": {"forces": "force"}, "workers": 1}}))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"pipeline": str(pipeline), "study": "tial", "n_trials": 2,
                                     "output": str(tmp_path / "sweep"),
                                     "objective": {"arm": "baseline", "fraction": 1.0, "seeds": [0]},
                                     "pruner": {"kind": "none"},
                                     "params": {"train.lr": {"type": "float", "low": 1e-3, "high": 1e-2, "log": True}}}))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    run_sweep(load_sweep(sweep), storage=storage)
    study = optuna.load_study(study_name="tial", storage=storage)
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(0 < t.value < 1e4 for t in study.trials)  # a validation energy MAE in meV/atom


def test_registered_data_keeps_the_stage_hashes_of_before_files_were_accepted():
    """New data/train fields at their defaults stay out of a stage's hash: finished stages are still reused.

    The values were computed by eip2nn at commit 1445648, before data.train and train.stress_weight existed.
    """
    from eip2nn.pipeline.runner import cell_config, pretrain_config
    from eip2nn.training.config import StageConfig
    p = load_pipeline(Path(__file__).parents[1] / "pipelines" / "si_quick.yaml")
    assert StageConfig().content_hash() == "64ff020bdd51"
    assert cell_config(p, "both", 0.1, 1, "x").content_hash() == "6708a8708361"
    assert pretrain_config(p, 0).content_hash() == "59c2f2516b5c"
    # model.twojmax (added with the bispectrum backbone) counts once it is set
    assert StageConfig.from_dict({"model": {"twojmax": 8}}).content_hash() != "64ff020bdd51"



def test_an_edited_data_file_is_new_data_for_every_stage(tmp_path):
    from eip2nn.pipeline.runner import cell_config
    mine = tmp_path / "mine.xyz"
    mine.write_text("the first version")
    p = pipeline_from_dict({**TINY, "data": {"train": str(mine)}})
    before = cell_config(p, "baseline", 1.0, 0).content_hash()
    assert cell_config(p, "baseline", 1.0, 0).content_hash() == before
    mine.write_text("an edited version")
    assert cell_config(p, "baseline", 1.0, 0).content_hash() != before
