"""auto as a blend of the best arms (study.auto_choice: blend): chosen on validation, scored as the calculator
predicts it, written as a blend file that the calculator and `eip2nn evaluate` read and that moves with its folder."""

import json
import math
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_lammps_deploy import compare, lammps_calculator, plugin, structures  # noqa: F401  (plugin: fixture)
from test_pipeline import tiny

from eip2nn.calculator import BlendCalculator, load_calculator
from eip2nn.data import load_dataset
from eip2nn.nn.blend import BlendMember, read_blend, write_blend
from eip2nn.pipeline.runner import run_pipeline


@pytest.fixture(scope="module")
def blended(tmp_path_factory, data_mirror_session):
    """The tiny pipeline's baseline, delta (on Stillinger-Weber) and auto, auto a blend of up to 2 arms."""
    tmp = tmp_path_factory.mktemp("blend")
    cfg = tiny(tmp, "study.arms=[baseline,delta,auto]", "study.auto_choice=blend", "study.blend_arms=2",
               "tracking.enabled=false", "delta.eip=lmp_Si_sw")
    log = []
    return cfg, run_pipeline(cfg, log=log.append), log


def test_auto_takes_the_blend_size_with_the_lowest_mean_validation_score(blended):
    cfg, result, log = blended
    assert not result.failed
    why = next(line for line in log if line.startswith("auto f=0.5"))
    scores = {int(k): float(v) for k, v in re.findall(r"top (\d+) ([-+.e0-9]+)", why)}
    assert set(scores) == {1, 2}
    autos = [c for c in result.cells if c.arm == "auto"]
    ranked = sorted(("baseline", "delta"), key=lambda a: sum(c.val_score for c in result.cells if c.arm == a))
    if scores[2] < scores[1]:
        assert all(a.chose == " + ".join(ranked) and a.model_path.endswith(".blend.json") for a in autos)
        assert math.isclose(sum(a.val_score for a in autos) / 2, scores[2], rel_tol=1e-2)
    else:
        assert all(a.chose == ranked[0] for a in autos)


def test_the_blend_cell_is_what_the_blend_calculator_predicts(blended, tmp_path):
    """Members' errors averaged structure by structure (the pipeline's path) = the calculator's mean prediction
    (EIP evaluated live for the Δ member) against DFT; the blend file is written for every seed either way."""
    cfg, result, _ = blended
    cells = {(c.arm, c.seed): c for c in result.cells}
    test = load_dataset("mlearn/Si/test")[::8]
    path = write_blend(tmp_path / "two.blend.json", [BlendMember("baseline", cells["baseline", 0].model_path, 0.25),
                                                       BlendMember("delta", cells["delta", 0].model_path, 0.75)])
    calc = load_calculator(path)
    assert isinstance(calc, BlendCalculator)
    singles = [load_calculator(cells[a, 0].model_path) for a in ("baseline", "delta")]
    from eip2nn.evaluation import evaluate_model
    scored = evaluate_model(str(path), {"part": (test, "")}, labels=cfg.data.labels).per_dataset["part"]
    de, df = [], []
    for atoms in test:
        a = atoms.copy()
        a.calc = calc
        energy, forces = a.get_potential_energy(), a.get_forces()
        parts = []
        for single in singles:
            b = atoms.copy()
            b.calc = single
            parts.append((b.get_potential_energy(), b.get_forces()))
        assert energy == pytest.approx(0.25 * parts[0][0] + 0.75 * parts[1][0], abs=1e-9)
        np.testing.assert_allclose(forces, 0.25 * parts[0][1] + 0.75 * parts[1][1], atol=1e-9)
        assert calc.results["energy_std"] == pytest.approx(abs(parts[0][0] - parts[1][0]) / math.sqrt(2), rel=1e-9)
        de.append((energy - atoms.info["REF_energy"]) / len(atoms) * 1000.0)
        df.append(forces - atoms.arrays["REF_forces"])
    assert scored.energy_mae == pytest.approx(np.mean(np.abs(de)), rel=1e-6)
    assert scored.force_mae == pytest.approx(np.mean(np.abs(np.concatenate(df))), rel=1e-6)


def test_a_blend_file_moves_with_its_folder_and_bad_ones_are_named(blended, tmp_path):
    _, result, _ = blended
    cells = {(c.arm, c.seed): c for c in result.cells}
    folder = tmp_path / "pipeline"
    for arm in ("baseline", "delta"):
        shutil.copytree(cells[arm, 1].model_path.rsplit("/", 1)[0], folder / "stages" / arm)
    path = write_blend(folder / "auto" / "x.blend.json", [BlendMember(a, folder / "stages" / a / "model.pt", 0.5)
                                                          for a in ("baseline", "delta")])
    assert json.loads(path.read_text())["members"][0]["model"] == "../stages/baseline/model.pt"
    moved = tmp_path / "elsewhere"
    shutil.move(folder, moved)
    assert [m.model for m in read_blend(moved / "auto" / "x.blend.json")] == [
        moved / "stages" / a / "model.pt" for a in ("baseline", "delta")]
    with pytest.raises(ValueError, match="sum to 1"):
        write_blend(tmp_path / "w.blend.json", [BlendMember("a", path, 0.5), BlendMember("b", path, 0.6)])
    with pytest.raises(ValueError, match="ends in .blend.json"):
        write_blend(tmp_path / "w.json", [BlendMember("a", path, 0.5), BlendMember("b", path, 0.5)])
    (moved / "stages" / "delta" / "model.pt").unlink()
    with pytest.raises(ValueError, match="member delta's model .* does not exist"):
        read_blend(moved / "auto" / "x.blend.json")


def test_blend_arms_is_checked_when_the_pipeline_is_read(tmp_path):
    from eip2nn.config import ConfigError
    with pytest.raises((ConfigError, ValueError), match="study.blend_arms"):
        tiny(tmp_path, "study.blend_arms=-1")


def test_a_blend_runs_in_lammps_as_hybrid_scaled_and_gives_the_blend_calculator_s_numbers(blended, tmp_path):
    """`eip2nn export` of a blend file: each member in the plugin, the Δ member's Stillinger-Weber scaled by its
    weight; LAMMPS (through ASE's LAMMPSlib) equals BlendCalculator on mlearn cells, a triclinic and a small one."""
    from eip2nn.deploy.lammps import load_deployment
    _, result, _ = blended
    cells = {(c.arm, c.seed): c for c in result.cells}
    path = write_blend(tmp_path / "b.blend.json", [BlendMember("baseline", cells["baseline", 0].model_path, 0.4),
                                                     BlendMember("delta", cells["delta", 0].model_path, 0.6)])
    run = subprocess.run([sys.executable, "-m", "eip2nn", "export", "--model", str(path), "-o", str(tmp_path / "x")],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "blend member delta: weight 0.6" in run.stdout
    lines = load_deployment(tmp_path / "x").commands()
    assert lines[1] == "pair_style hybrid/scaled 0.4 eip2nn 0.6 eip2nn 0.6 sw"
    assert lines[2].startswith("pair_coeff * * eip2nn 1 ") and lines[3].startswith("pair_coeff * * eip2nn 2 ")
    cells_ = structures(None)
    lammps = lammps_calculator(lines)
    members = [lammps_calculator(load_deployment(tmp_path / "x" / f"member-{k}").commands()) for k in (0, 1)]
    for atoms in cells_:  # hybrid/scaled weighs the members' own LAMMPS runs exactly
        runs = []
        for calc in (lammps, *members):
            a = atoms.copy()
            a.calc = calc
            runs.append((a.get_potential_energy(), a.get_forces(), a.get_stress()))
        for i in range(3):
            np.testing.assert_allclose(runs[0][i], 0.4 * runs[1][i] + 0.6 * runs[2][i], rtol=0, atol=1e-9)
    # and the blend calculator's numbers, to the float32 the tiny pipeline trained in (exported as float64)
    de, df, ds = compare(cells_, BlendCalculator(path), lammps)
    assert de < 1e-7 * max(abs(a.info.get("REF_energy", 350.0)) for a in cells_) and df < 1e-5 and ds < 1e-6, (
        de, df, ds)


def test_a_blend_of_members_with_different_cutoffs_runs_in_lammps(tmp_path, plugin):  # noqa: F811
    """Three members at one cut-off and one at another (Cu's blend at 100%: three symmetry-function networks and a
    bispectrum one at the qSNAP's cut-off): the pinned LAMMPS cannot order trimmed neighbour lists for that, so
    the blend's lines give every sub-style the full list. LAMMPS then equals BlendCalculator."""
    from test_lammps_deploy import random_model

    from eip2nn.deploy.lammps import export_for_lammps
    from eip2nn.nn.checkpoint import save_checkpoint
    cells_ = structures(None)
    members = []
    for k, (backbone, cutoff) in enumerate([("symmetry_functions", 4.5)] * 3 + [("bispectrum", 3.6)]):
        model = random_model(backbone, cells_, seed=k, cutoff=cutoff)
        members.append(BlendMember(f"m{k}", str(save_checkpoint(tmp_path / f"m{k}.pt", model)), 0.25))
    path = write_blend(tmp_path / "b.blend.json", members)
    deployment = export_for_lammps(path, tmp_path / "x")
    lines = deployment.commands()
    assert lines[-1] == "pair_modify neigh/trim no"
    de, df, ds = compare(cells_, BlendCalculator(path), lammps_calculator(lines))
    assert de < 1e-8 and df < 1e-8 and ds < 1e-9, (de, df, ds)


def test_a_blend_with_a_member_on_a_kim_only_eip_is_refused_by_member_before_writing(blended, tmp_path):
    from test_lammps_deploy import random_model

    from eip2nn.deploy.lammps import export_for_lammps
    from eip2nn.nn.checkpoint import save_checkpoint
    _, result, _ = blended
    baseline = next(c for c in result.cells if c.arm == "baseline").model_path
    kim_only = save_checkpoint(tmp_path / "delta.pt",
                               random_model("schnet", [], reference_eip="ThreeBodyCluster_BH_BiswasHamann_1987_Si"))
    path = write_blend(tmp_path / "b.blend.json", [BlendMember("baseline", baseline, 0.5),
                                                     BlendMember("delta", kim_only, 0.5)])
    with pytest.raises(ValueError, match=r"member delta \(.*delta.pt\) cannot run in LAMMPS: .*no LAMMPS twin"):
        export_for_lammps(path, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_when_a_blend_cannot_be_made_auto_is_the_best_single_arm_and_the_report_says_why(tmp_path,
                                                                                          data_mirror_session):
    """A model file gone (moved, cleaned up) after its stage finished: the rerun still reports, every cell
    kept, auto one arm, and the reason in the notes."""
    again = tiny(tmp_path, "study.arms=[baseline,delta,auto]", "study.auto_choice=blend", "study.blend_arms=2",
                 "tracking.enabled=false", "delta.eip=lmp_Si_sw")
    assert not run_pipeline(again, log=lambda s: None).failed
    from eip2nn.pipeline.runner import cell_config
    from eip2nn.training.stages import finished_stage
    finished_stage(cell_config(again, "delta", 0.5, 1)).model_path.unlink()
    result = run_pipeline(again, log=lambda s: None)
    autos = [c for c in result.cells if c.arm == "auto"]
    assert len(autos) == 2 and all(a.ok and a.chose in ("baseline", "delta") for a in autos)
    assert {c.arm for c in result.cells} == {"baseline", "delta", "auto"} and all(c.ok for c in result.cells)
    note = next(n for n in result.notes if n.startswith("auto f=0.5: no blend"))
    assert "FileNotFoundError" in note or "No such file" in note
    assert "no blend" in result.files["table_md"].read_text()
