"""Pipelines end to end on real data, real EIPs and a real MLflow store: run, report, reuse, fail loudly."""

import csv
import dataclasses
import math
from pathlib import Path

import pytest

from eip2nn.cli import main
from eip2nn.config import ConfigError
from eip2nn.pipeline.config import load_pipeline
from eip2nn.pipeline.runner import run_pipeline

TINY = Path(__file__).parent / "data" / "tiny_pipeline.yaml"


def tiny(tmp: Path, *overrides: str):
    return load_pipeline(TINY, [f"output={tmp / 'out'}", f"data.labels={tmp / 'labels.sqlite'}", *overrides])


def children(client, parent):
    exp = client.get_run(parent).info.experiment_id
    return client.search_runs([exp], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, data_mirror_session):
    import os

    from mlflow.tracking import MlflowClient
    tmp = tmp_path_factory.mktemp("pipeline")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        cfg = tiny(tmp, "domain_check=true")
        yield tmp, cfg, run_pipeline(cfg, log=lambda s: None), MlflowClient(uri)
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI")
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def test_pipeline_writes_table_curve_and_one_cell_per_arm_and_seed(first_run):
    tmp, cfg, result, _ = first_run
    assert not result.failed
    assert sorted((c.arm, c.seed) for c in result.cells) == sorted(
        (a, s) for a in ("baseline", "weak", "transfer", "both") for s in (0, 1))
    with open(result.files["table_csv"]) as fh:
        rows = {r["arm"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {"baseline", "weak", "transfer", "both"}
    for arm, r in rows.items():
        e, spread = float(r["test_energy_mae_meV_atom_mean"]), float(r["test_energy_mae_meV_atom_spread"])
        cells = [c.test_energy_mae for c in result.cells if c.arm == arm]
        assert e == pytest.approx(sum(cells) / 2) and spread > 0  # two seeds: a real spread
        gain = float(r["energy_improvement_pct"])
        assert math.isnan(gain) if arm == "baseline" else gain == pytest.approx(
            (float(rows["baseline"]["test_energy_mae_meV_atom_mean"]) - e)
            / float(rows["baseline"]["test_energy_mae_meV_atom_mean"]) * 100)
    md = result.files["table_md"].read_text()
    assert "| weak | 0.5 |" in md and "± " in md
    png = result.files["learning_curve"].read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert (result.output_dir / "pipeline.yaml").read_text() == cfg.to_yaml()  # the resolved config


def test_pipeline_reports_whether_the_test_set_and_the_pool_are_in_domain(first_run):
    """Adversarial validation of test vs training and of the unlabelled pool vs the labelled structures."""
    _, _, result, client = first_run
    md = result.files["table_md"].read_text()
    section = md[md.index("## Domain check"):]
    test_row = next(line for line in section.splitlines() if line.startswith("| test vs training |"))
    pool_row = next(line for line in section.splitlines() if line.startswith("| pool vs labelled, DFT fraction 0.5 |"))
    n_train = int(test_row.split("|")[2])
    assert n_train > 150 and int(test_row.split("|")[3]) == 25  # mlearn Si: training (train + validation) vs test
    assert int(pool_row.split("|")[2]) + int(pool_row.split("|")[3]) == n_train
    metrics = client.get_run(result.run_id).data.metrics
    auc = metrics["domain_auc_test_vs_training"]
    assert 0.0 <= auc <= 1.0 and f"{auc:.2f}" in test_row
    assert "domain_auc_pool_vs_labelled_f0.5" in metrics


def test_pipeline_mlflow_parent_and_tagged_children(first_run):
    _, cfg, result, client = first_run
    parent = client.get_run(result.run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.params["study.seeds"] == "[0, 1]"  # the resolved config, flattened
    assert parent.data.metrics["weak.f0.5.test_energy_mae_mean"] == pytest.approx(
        next(r.energy[0] for r in result.rows if r.arm == "weak"))
    runs = children(client, result.run_id)
    cells = [r for r in runs if r.data.tags.get("eip2nn.stage") != "pretrain"]
    assert len(cells) == 8 and sum(r.data.tags["eip2nn.stage"] == "pretrain" for r in runs) == 2
    for r in cells:
        t = r.data.tags
        assert t["eip2nn.dft_fraction"] == "0.5" and t["eip2nn.element"] == "Si"
        assert t["eip2nn.backbone"] == "symmetry_functions" and t["eip2nn.seed"] in ("0", "1")
        assert "test_energy_mae_meV_atom" in r.data.metrics
    assert sorted(r.data.tags["eip2nn.arm"] for r in cells) == sorted(["baseline", "weak", "transfer", "both"] * 2)
    artifacts = {f.path for f in client.list_artifacts(result.run_id, "results")}
    assert {"results/results.md", "results/results.csv", "results/cells.csv"} <= artifacts


def test_rerun_reuses_every_finished_stage_and_an_edit_reruns_only_what_it_touches(first_run):
    tmp, cfg, first, client = first_run
    stamps = {p: p.stat().st_mtime_ns for p in (tmp / "out" / "stages").glob("*/model.pt")}
    again = run_pipeline(cfg, log=lambda s: None)
    assert {c.status for c in again.cells} == {"reused"}
    assert [c.test_energy_mae for c in again.cells] == [c.test_energy_mae for c in first.cells]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # nothing retrained
    reused = children(client, again.run_id)
    assert len(reused) == 10 and all(r.data.tags["eip2nn.reused"] == "true" for r in reused)
    assert all("test_energy_mae_meV_atom" in r.data.metrics for r in reused if r.data.tags["eip2nn.stage"] != "pretrain")

    edited = run_pipeline(tiny(tmp, "train.lr=0.002", "study.arms=[baseline,transfer]"), log=lambda s: None)
    assert {c.status for c in edited.cells} == {"finished"}  # the cells' training changed ...
    pre = [r for r in children(client, edited.run_id) if r.data.tags["eip2nn.stage"] == "pretrain"]
    assert len(pre) == 2 and all(r.data.tags["eip2nn.reused"] == "true" for r in pre)  # ... pretraining did not


def test_a_failing_cell_is_recorded_and_the_others_finish(tmp_path, data_mirror_session, monkeypatch, capsys):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    # SNAP Zuo 2020 was fitted to mlearn Si: it may not label this benchmark, so the weak arm must fail
    args = ["pipeline", "run", str(TINY), "--set", f"output={tmp_path / 'out'}",
            "--set", f"data.labels={tmp_path / 'labels.sqlite'}", "--set", "study.arms=[baseline,weak]",
            "--set", "study.seeds=[0]", "--set", "weak.eips=[lmp_Si_sw,lmp_Si_snap_zuo2020]"]
    assert main(args) == 1
    out = capsys.readouterr()
    assert "1 cell(s) failed" in out.err
    cells = list(csv.DictReader(open(tmp_path / "out" / "cells.csv")))
    assert [(c["arm"], c["status"]) for c in cells] == [("baseline", "finished"), ("weak", "failed")]
    assert "lmp_Si_snap_zuo2020" in cells[1]["error"] and "leakage" in cells[1]["error"]
    assert "weak f=0.5 seed=0" in (tmp_path / "out" / "results.md").read_text()


def test_pipeline_config_is_strict_and_overridable(tmp_path):
    with pytest.raises(ConfigError, match="study.fractionz"):
        load_pipeline(TINY, ["study.fractionz=[0.1]"])
    with pytest.raises(ConfigError, match="study.arms"):
        load_pipeline(TINY, ["study.arms=[baseline,magic]"])
    with pytest.raises(ConfigError, match="finetune.pretrained is set by the pipeline"):
        load_pipeline(TINY, ["finetune.pretrained=x.pt"])
    assert load_pipeline(TINY, ["train.lr=1e-3"]).train.lr == 0.001  # YAML 1.1 reads 1e-3 as a string
    with pytest.raises(ConfigError, match="train.lr: expected a number, got 'fast'"):
        load_pipeline(TINY, ["train.lr=fast"])
    cfg = load_pipeline(TINY, ["study.seeds=[3,4,5]", "model.width=24"])
    assert cfg.study.seeds == [3, 4, 5] and cfg.model.width == 24 and cfg.weak.n_estimators == 30
    assert main(["pipeline", "config", str(TINY), "--set", "train.epochs=7"]) == 0
    assert main(["pipeline", "config", str(TINY), "--set", "train.epochz=7"]) == 2


def test_local_pretraining_is_one_setting_that_reaches_only_the_pretraining_stage(tmp_path):
    """pretrain.w_local sets the pretraining stage's local-energy weight (and so its hash); cells are untouched;
    the stage-level key is refused in a pipeline, so there is one place to set it."""
    from eip2nn.pipeline.runner import cell_config, pretrain_config
    plain, local = tiny(tmp_path), tiny(tmp_path, "pretrain.w_local=10")
    assert pretrain_config(plain, 0).train.local_energy_weight == 0.0
    assert pretrain_config(local, 0).train.local_energy_weight == 10.0
    assert pretrain_config(local, 0).content_hash() != pretrain_config(plain, 0).content_hash()
    assert cell_config(local, "baseline", 0.5, 0).content_hash() == cell_config(plain, "baseline", 0.5, 0).content_hash()
    with pytest.raises(ConfigError, match="set pretrain.w_local instead"):
        tiny(tmp_path, "pretrain.train.local_energy_weight=10")
    with pytest.raises(ConfigError, match="pretrain.w_local must be >= 0"):
        tiny(tmp_path, "pretrain.w_local=-1")


def test_every_arm_is_tagged_by_its_own_name(tmp_path):
    """A cell's stage config names its arm as the pipeline does (the ``eip2nn.arm`` tag and run name)."""
    from eip2nn.pipeline.config import ARMS
    from eip2nn.pipeline.runner import STAGE_OF_ARM, cell_config, pretrain_config
    p = tiny(tmp_path)
    staged = [a for a in ARMS if a != "auto"]  # auto is a choice among the others, not a stage
    assert sorted(STAGE_OF_ARM) == sorted(staged)
    cells = {arm: cell_config(p, arm, 0.5, 0, pretrained="pre.pt") for arm in staged}
    assert {arm: c.arm for arm, c in cells.items()} == {arm: arm for arm in staged}
    assert cells["transfer"].stage == cells["both"].stage == "finetune"  # the stage kind is its own tag
    assert pretrain_config(p, 0).arm == "pretrain"


def test_weak_arms_at_full_dft_are_skipped_with_the_reason(tmp_path, data_mirror_session):
    cfg = tiny(tmp_path, "study.fractions=[1.0]", "study.seeds=[0]", "study.arms=[baseline,weak]",
               "tracking.enabled=false")
    result = run_pipeline(cfg, log=lambda s: None)
    assert [(c.arm, c.fraction) for c in result.cells] == [("baseline", 1.0)]
    assert [r.arm for r in result.rows] == ["baseline"]
    assert any("weak at dft_fraction 1 not run" in n for n in result.notes)
    assert "nothing to weakly label" in result.files["table_md"].read_text()


def test_delta_snap_and_auto_arms(tmp_path, data_mirror_session):
    """auto takes the eip2nn arm with the lowest validation score averaged over the seeds, never snap; snap is
    scored beside them."""
    cfg = tiny(tmp_path, "study.arms=[baseline,delta,snap,auto]", "tracking.enabled=false", "delta.eip=lmp_Si_sw",
               "snap.twojmax=4", "snap.quadratic=linear")
    result = run_pipeline(cfg, log=lambda s: None)
    assert not result.failed
    score = {a: sum(c.val_score for c in result.cells if c.arm == a) for a in ("baseline", "delta")}
    best = min(score, key=score.get)
    for seed in (0, 1):
        mine = {c.arm: c for c in result.cells if c.seed == seed}
        assert set(mine) == {"baseline", "delta", "snap", "auto"}
        assert mine["auto"].chose == best and mine["auto"].run_id == mine[best].run_id
        assert mine["auto"].test_energy_mae == mine[best].test_energy_mae
        assert mine["snap"].test_energy_mae < mine["baseline"].test_energy_mae  # 3 epochs of NN vs a linear fit
    with open(result.files["cells_csv"]) as fh:
        chose = [r["auto_chose"] for r in csv.DictReader(fh) if r["arm"] == "auto"]
    assert chose == [best, best]
    md = result.files["table_md"].read_text()
    assert "## What auto chose" in md and "## eip2nn against the SNAP fitted to the same labels" in md
    from eip2nn.pipeline.runner import cell_config
    from eip2nn.training.stages import stage_dir
    folder = stage_dir(cell_config(cfg, "snap", 0.5, 0))
    assert (folder / "snap_model.json").is_file() and list(folder.glob("*.snapcoeff"))
    from eip2nn.evaluation import evaluate_model  # the saved SNAP, scored afresh, gives the cell's numbers
    again = evaluate_model(str(folder / "snap_model.json"), ["mlearn/Si/test"]).per_dataset["mlearn/Si/test"]
    snap = next(c for c in result.cells if c.arm == "snap" and c.seed == 0)
    assert again.energy_mae == pytest.approx(snap.test_energy_mae, rel=1e-9)
    assert again.force_mae == pytest.approx(snap.test_force_mae, rel=1e-9)


def test_variants_run_as_arms_of_their_own_and_auto_chooses_among_them(tmp_path, data_mirror_session):
    cfg = tiny(tmp_path, "study.arms=[baseline,weak,auto]", "study.seeds=[0]", "tracking.enabled=false",
               "variants={weak-a0.1: {arm: weak, set: {weak.alpha: 0.1, train.lr: 0.002}}}")
    assert cfg.arms == ["baseline", "weak", "weak-a0.1", "auto"]
    result = run_pipeline(cfg, log=lambda s: None)
    assert not result.failed
    cells = {c.arm: c for c in result.cells}
    assert set(cells) == {"baseline", "weak", "weak-a0.1", "auto"}
    best = min(("baseline", "weak", "weak-a0.1"), key=lambda a: cells[a].val_score)
    assert cells["auto"].chose == best
    from eip2nn.pipeline.runner import cell_config
    from eip2nn.training.stages import finished_stage
    variant = cell_config(cfg, "weak-a0.1", 0.5, 0)
    assert (variant.arm, variant.weak.alpha, variant.train.lr) == ("weak", 0.1, 0.002)
    assert finished_stage(variant).run_id == cells["weak-a0.1"].run_id is None  # tracking off: no run, same stage
    assert "| weak-a0.1 | 0.5 |" in result.files["table_md"].read_text()


def test_a_committee_variant_is_an_arm_whose_first_member_is_the_plain_cell(tmp_path, data_mirror_session):
    """train.committee in a variant: the cell is the mean of 2 networks, member 0 the baseline cell itself (not
    trained twice); it is in the table, among auto's candidates, and left out of the LPR (one network's)."""
    cfg = tiny(tmp_path, "study.arms=[baseline,auto]", "study.seeds=[0]", "tracking.enabled=false", "lpr=true",
               "variants={baseline-x2: {arm: baseline, set: {train.committee: 2}}}")
    lines = []
    result = run_pipeline(cfg, log=lines.append)
    assert not result.failed
    cells = {c.arm: c for c in result.cells}
    assert set(cells) == {"baseline", "baseline-x2", "auto"}
    assert any("member 1 of 2" in line and "reusing" in line for line in lines)  # member 0: the baseline cell
    from eip2nn.nn.checkpoint import load_model
    from eip2nn.nn.committee import Committee
    committee = load_model(cells["baseline-x2"].model_path)
    assert isinstance(committee, Committee) and len(committee.members) == 2
    assert cells["baseline-x2"].test_energy_mae != cells["baseline"].test_energy_mae
    assert cells["auto"].chose == min(("baseline", "baseline-x2"), key=lambda a: cells[a].val_score)
    md = result.files["table_md"].read_text()
    assert "| baseline-x2 | 0.5 |" in md
    assert any("LPR baseline-x2: not computed for a committee" in line for line in lines)


@pytest.mark.parametrize("variants, message", [
    ("{weak: {arm: weak, set: {weak.alpha: 0.1}}}", "must differ from the arms"),
    ("{w2: {arm: snap, set: {weak.alpha: 0.1}}}", "is not one of"),
    ("{w2: {arm: weak, set: {weak.alphaa: 0.1}}}", "unknown key 'weak.alphaa'"),
    ("{w2: {arm: weak, set: {}}}", "give section.key overrides"),
])
def test_bad_variants_are_refused_when_the_pipeline_is_read(tmp_path, variants, message):
    with pytest.raises(ConfigError, match=message):
        tiny(tmp_path, f"variants={variants}")


def test_a_study_over_backbones_runs_every_arm_per_backbone_and_compares_their_gains(tmp_path, data_mirror_session):
    """study.backbones: each backbone's cells (own pretraining), gains against its own baseline, one snap,
    and auto choosing among every backbone's arms."""
    cfg = tiny(tmp_path, "study.arms=[baseline,transfer,snap,auto]", "study.seeds=[0]", "tracking.enabled=false",
               "study.backbones=[symmetry_functions, {backbone: bispectrum, twojmax: 2, name: bisp}]",
               "snap.twojmax=2", "snap.quadratic=linear")
    assert cfg.cell_arms == ["baseline@symmetry_functions", "transfer@symmetry_functions", "baseline@bisp",
                             "transfer@bisp", "snap", "auto"]
    result = run_pipeline(cfg, log=lambda s: None)
    assert not result.failed
    cells = {c.arm: c for c in result.cells}
    assert set(cells) == set(cfg.cell_arms)
    assert cells["baseline@bisp"].run_id is None and cells["baseline@bisp"].test_energy_mae != pytest.approx(
        cells["baseline@symmetry_functions"].test_energy_mae, rel=1e-6)  # two different networks
    from eip2nn.pipeline.runner import cell_config
    assert cell_config(dataclasses.replace(cfg, model=cfg.backbone_models()[1][1]), "baseline", 0.5, 0
                       ).model.twojmax == 2
    best = min(cfg.candidates_of_auto, key=lambda a: cells[a].val_score)
    assert cells["auto"].chose == best
    rows = {(r.arm, r.fraction): r for r in result.rows}
    for name in ("symmetry_functions", "bisp"):  # each against its own baseline
        base, arm = cells[f"baseline@{name}"], cells[f"transfer@{name}"]
        gain = (base.test_energy_mae - arm.test_energy_mae) / base.test_energy_mae * 100
        assert rows[(f"transfer@{name}", 0.5)].energy_gain == pytest.approx(gain)
    md = result.files["table_md"].read_text()
    assert "## Backbones: what each arm gains over its own baseline" in md
    assert "| DFT fraction | arm | symmetry_functions | bisp |" in md


@pytest.mark.parametrize("backbones, message", [
    ("[schnet, schnet]", "repeat"),
    ("[{twojmax: 4}]", "names no backbone"),
    ("[{backbone: convnet}]", "is not one of"),
])
def test_bad_backbone_studies_are_refused_when_the_pipeline_is_read(tmp_path, backbones, message):
    with pytest.raises(ConfigError, match=message):
        tiny(tmp_path, f"study.backbones={backbones}")


def test_lpr_reports_each_network_cell_s_rigidity_and_a_rerun_reads_it_back(tmp_path, data_mirror_session):
    import json

    from eip2nn.pipeline.rigidity import LPR_FILE
    cfg = tiny(tmp_path, "study.arms=[baseline,transfer,snap]", "study.seeds=[0]", "tracking.enabled=false", "lpr=true",
               "snap.twojmax=2", "snap.quadratic=linear")
    result = run_pipeline(cfg, log=lambda s: None)
    assert not result.failed
    md = result.files["table_md"].read_text()
    assert "## Local prediction rigidity of the DFT head on the test atoms" in md
    stored = {}
    for cell in result.cells:
        path = Path(cell.model_path).parent / LPR_FILE
        assert path.is_file() == (cell.arm != "snap")
        if cell.arm != "snap":
            stored[cell.arm] = json.loads(path.read_text())
            assert 0 < stored[cell.arm]["p10"] <= stored[cell.arm]["median"]
            assert f"| {cell.arm} | 0.5 | {stored[cell.arm]['median']:.3g} |" in md
    assert set(stored["baseline"]["groups"]) == {"AIMD-NVT", "Elastic", "Surface", "Vacancy"}
    mtime = (Path(result.cells[0].model_path).parent / LPR_FILE).stat().st_mtime
    again = run_pipeline(cfg, log=lambda s: None)  # every stage reused, the LPR read back
    assert (Path(again.cells[0].model_path).parent / LPR_FILE).stat().st_mtime == mtime
    assert again.files["table_md"].read_text() == md


def test_report_so_far_tables_the_finished_stages_and_trains_nothing(first_run):
    """`eip2nn pipeline report` on the first run with a third seed (not run) and auto: the finished cells with
    their own numbers, the third seed's cells listed as not finished, no stage written."""
    from eip2nn.pipeline.runner import report_so_far
    tmp, cfg, result, _ = first_run
    stages = sorted((cfg.output_dir / "stages").iterdir())
    more = dataclasses.replace(cfg, study=dataclasses.replace(cfg.study, seeds=[0, 1, 2],
                                                               arms=[*cfg.study.arms, "auto"]))
    so_far = report_so_far(more, log=lambda s: None)
    assert sorted((cfg.output_dir / "stages").iterdir()) == stages
    assert so_far.output_dir == cfg.output_dir / "so_far" and so_far.files["cells_csv"].is_file()
    ran = {(c.arm, c.seed): c.test_energy_mae for c in result.cells}
    assert {(c.arm, c.seed): c.test_energy_mae for c in so_far.cells if c.arm != "auto"} == ran
    assert sorted(c.seed for c in so_far.cells if c.arm == "auto") == [0, 1]
    assert so_far.notes[0] == ("8 of 12 cells finished (auto not counted); "
                               "not yet: baseline 1, weak 1, transfer 1, both 1")
    assert {r.arm: r.n_seeds for r in so_far.rows} == {"baseline": 2, "weak": 2, "transfer": 2, "both": 2, "auto": 2}
