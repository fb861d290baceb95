"""A trained model exported for LAMMPS gives, in LAMMPS, what its ASE calculator gives.

LAMMPS runs through ASE's LAMMPSlib calculator (its own box and triclinic
handling, independent of eip2nn's), with the lines `eip2nn export` writes:
`plugin load`, `pair_style eip2nn` (or hybrid/overlay with a Δ model's EIP).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk

from eip2nn.calculator import EIP2NNCalculator
from eip2nn.deploy.lammps import export_for_lammps, lammps_eip, lammps_twins, load_deployment
from eip2nn.nn.checkpoint import save_checkpoint
from eip2nn.nn.config import ModelConfig
from eip2nn.nn.model import DFT_HEAD, EnergyModel
from eip2nn.potentials.backends import make_evaluator
from eip2nn.potentials.db import PotentialsDB
from eip2nn.potentials.lammps_backend import import_lammps

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")


@pytest.fixture(scope="module", autouse=True)
def plugin():
    """The plugin of this environment, built by the script when missing or stale."""
    if not (shutil.which("c++") or shutil.which("g++")) or not shutil.which("cmake"):
        pytest.skip("no C++ compiler or cmake to build the LAMMPS plugin")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build_lammps_plugin.sh")], cwd=ROOT,
                          capture_output=True, text=True, timeout=900, env=dict(os.environ))
    assert proc.returncode == 0, proc.stderr[-3000:]


def structures(data_dir) -> list:
    """mlearn Si test structures, a rattled triclinic cell and a 2-atom cell far smaller than 2 cut-offs."""
    from eip2nn.data import load_dataset
    out = list(load_dataset("mlearn/Si/test")[:2])
    tri = bulk("Si", "diamond", a=5.431).repeat((2, 2, 1))  # primitive fcc vectors: triclinic
    tri.rattle(0.05, seed=1)
    tri.cell[2] += [0.3, -0.2, 0.1]
    small = bulk("Si", "diamond", a=5.431)
    small.rattle(0.05, seed=2)
    return [a for a in out] + [tri, small]


def random_model(backbone: str, train_structures, reference_eip: str = "", species=("Si",), seed: int = 0,
                 cutoff: float = 4.5, **config) -> EnergyModel:
    import torch
    torch.manual_seed(seed)
    model = EnergyModel(ModelConfig(backbone=backbone, cutoff=cutoff, width=16, depth=2, **config), list(species),
                        [DFT_HEAD], reference_eip=reference_eip).double()
    if backbone != "schnet":
        model.backbone.fit_standardisation([model.graph(a) for a in train_structures])
    head = model.head(DFT_HEAD)
    head.scale.fill_(0.8)
    head.offsets.copy_(torch.linspace(-4.0, -3.5, len(species)))
    return model.eval()


def lammps_calculator(lines: list[str], species=("Si",), log_file=None):
    import_lammps()  # the MPI library first
    from ase.calculators.lammpslib import LAMMPSlib
    return LAMMPSlib(lmpcmds=lines, atom_types={s: t for t, s in enumerate(species, start=1)},
                     log_file=None if log_file is None else str(log_file), keep_alive=True)


def compare(structures_, reference, lammps) -> tuple[float, float, float]:
    """Largest |ΔE| (eV), |ΔF| (eV/Å), |Δσ| (eV/Å³) between two calculators."""
    de = df = ds = 0.0
    for atoms in structures_:
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = reference, lammps
        de = max(de, abs(a.get_potential_energy() - b.get_potential_energy()))
        df = max(df, np.abs(a.get_forces() - b.get_forces()).max())
        ds = max(ds, np.abs(a.get_stress() - b.get_stress()).max())
    return de, df, ds


@pytest.mark.parametrize("backbone", ["schnet", "symmetry_functions", "bispectrum"])
def test_lammps_gives_the_ase_calculator_s_energy_forces_and_stress(tmp_path, data_dir, backbone):
    """pair_style eip2nn; the bispectrum model has shifted-softplus layers (ML-IAP cannot run them), and its
    TorchScript file computes the descriptor that LAMMPS compute snap gave in training."""
    cells = structures(data_dir)
    extra = {"twojmax": 4} if backbone == "bispectrum" else {}
    path = save_checkpoint(tmp_path / "model.pt", random_model(backbone, cells, **extra))
    run = subprocess.run([sys.executable, "-m", "eip2nn", "export", "--model", str(path), "-o",
                          str(tmp_path / "export")], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "pair_style eip2nn" in run.stdout and (tmp_path / "export" / "pair.lmp").read_text().count(
        "pair_style eip2nn") == 1
    deployment = load_deployment(tmp_path / "export")
    de, df, ds = compare(cells, EIP2NNCalculator.from_checkpoint(path),
                         lammps_calculator(load_deployment(tmp_path / "export").commands()))
    assert de < 1e-6 and df < 1e-6 and ds < 1e-8, (de, df, ds)
    assert deployment.metadata["interaction_range"] == pytest.approx(4.5 * (2 if backbone == "schnet" else 1))


def with_germanium(cells: list, species) -> list:
    """The cells with every third atom Ge when the model has two elements."""
    if len(species) > 1:
        for atoms in cells:
            atoms.symbols[::3] = "Ge"
    return cells


def assert_native_equals_torchscript(tmp_path, path, cells, species) -> None:
    """pair_style eip2nn (native descriptor) and `native no` (the TorchScript one) give the same energies, forces
    and stress to 1e-10 relative, and the native run says it is native."""
    lines = export_for_lammps(path, tmp_path / "export").commands()
    torchscript = [line + " native no" if line.startswith("pair_style") else line for line in lines]
    native, generic = lammps_calculator(lines, species, tmp_path / "native.log"), lammps_calculator(torchscript, species)
    for atoms in cells:
        a, b = atoms.copy(), atoms.copy()
        a.calc, b.calc = native, generic
        e, f, s = b.get_potential_energy(), b.get_forces(), b.get_stress()
        assert np.abs(f).max() > 1e-3  # forces that test something
        assert abs(a.get_potential_energy() - e) <= 1e-10 * max(1.0, abs(e))
        assert np.abs(a.get_forces() - f).max() <= 1e-10 * max(1.0, np.abs(f).max())
        assert np.abs(a.get_stress() - s).max() <= 1e-10 * max(1.0, np.abs(s).max())
    assert "computed natively" in (tmp_path / "native.log").read_text()


@pytest.mark.parametrize("species, twojmax, n_cells", [(("Si",), 4, 4), (("Ge", "Si"), 4, 4), (("Si",), 8, 1)],
                         ids=["Si-twojmax4", "GeSi-twojmax4", "Si-twojmax8"])
def test_the_native_bispectrum_equals_the_torchscript_one(tmp_path, data_dir, species, twojmax, n_cells):
    """pair_style eip2nn computes a bispectrum model's descriptor in C++ by default, and in the TorchScript file
    with `native no`: the same energies, forces and stress to 1e-10 relative."""
    cells = with_germanium(structures(data_dir)[:n_cells], species)
    path = save_checkpoint(tmp_path / "model.pt", random_model("bispectrum", cells, "", species, twojmax=twojmax))
    assert_native_equals_torchscript(tmp_path, path, cells, species)


@pytest.mark.parametrize("descriptor", ["set51", "set30"])
@pytest.mark.parametrize("species", [("Si",), ("Ge", "Si")], ids=["Si", "GeSi"])
def test_the_native_symmetry_functions_equal_the_torchscript_ones(tmp_path, data_dir, species, descriptor):
    """The same for KLIFF's symmetry functions (G2 and G4 with their r_jk term), on mlearn Si, a rattled triclinic
    cell and a 2-atom cell smaller than twice the cut-off."""
    cells = with_germanium(structures(data_dir), species)
    path = save_checkpoint(tmp_path / "model.pt", random_model("symmetry_functions", cells, "", species,
                                                                descriptor=descriptor))
    assert_native_equals_torchscript(tmp_path, path, cells, species)


@pytest.mark.parametrize("fmt", ["mliap", "auto"])
@pytest.mark.parametrize("species, eip", [(("Si",), ""), (("Ge", "Si"), ""), (("Si",), "lmp_Si_sw")])
def test_a_tanh_bispectrum_model_runs_as_an_mliap_network_or_in_the_plugin(tmp_path, data_dir, species, eip, fmt):
    """mliap: pair_style mliap model nn ... descriptor sna ..., LAMMPS's own bispectrum and network, no plugin;
    one-hot species fold into per-element biases. auto: pair_style eip2nn (the plugin). A Δ model's EIP sits
    under hybrid/overlay either way."""
    cells = structures(data_dir)
    if len(species) > 1:
        for atoms in cells:
            atoms.symbols[::3] = "Ge"
    path = save_checkpoint(tmp_path / "model.pt", random_model("bispectrum", cells, eip, species, twojmax=4,
                                                                activation="tanh"))
    deployment = export_for_lammps(path, tmp_path / "export", fmt=fmt)
    lines = deployment.commands()
    pair = "mliap model nn" if fmt == "mliap" else "eip2nn"
    style = next(line for line in lines if line.startswith("pair_style"))
    assert style.startswith(f"pair_style hybrid/overlay sw {pair}" if eip else f"pair_style {pair}")
    assert any(line.startswith("plugin load") for line in lines) == (fmt == "auto")
    assert load_deployment(tmp_path / "export").commands() == lines
    de, df, ds = compare(cells, EIP2NNCalculator.from_checkpoint(path), lammps_calculator(lines, species))
    assert de < 1e-6 and df < 1e-6 and ds < 1e-8, (de, df, ds)


def test_an_mliap_export_ml_iap_cannot_run_is_refused_before_writing(tmp_path, data_dir):
    cells = structures(data_dir)
    path = save_checkpoint(tmp_path / "model.pt", random_model("bispectrum", cells, twojmax=4))  # shifted softplus
    with pytest.raises(ValueError, match="train with model.activation: tanh"):
        export_for_lammps(path, tmp_path / "export", fmt="mliap")
    with pytest.raises(ValueError, match="float64 only"):
        export_for_lammps(path, tmp_path / "export", dtype="float32", fmt="mliap")
    schnet = save_checkpoint(tmp_path / "schnet.pt", random_model("schnet", cells))
    with pytest.raises(ValueError, match="only bispectrum models run as LAMMPS ML-IAP networks"):
        export_for_lammps(schnet, tmp_path / "export", fmt="mliap")
    assert not (tmp_path / "export").exists()


@pytest.mark.parametrize("species", [("Si",), ("Ge", "Si")], ids=["Si", "GeSi"])
def test_a_model_with_a_snap_prior_runs_in_the_plugin(tmp_path, data_dir, species):
    """model.snap_prior: the quadratic SNAP inside the model runs in the TorchScript file, with the bispectrum
    computed natively or in torch; ML-IAP, a network only, refuses it before writing."""
    from eip2nn.snap.bispectrum import n_per_element
    from eip2nn.snap.model import SnapModel
    cells = structures(data_dir)
    if len(species) > 1:
        for atoms in cells:
            atoms.symbols[::3] = "Ge"
    model = random_model("bispectrum", cells, "", species, twojmax=4, snap_prior="quadratic", activation="tanh")
    rng = np.random.default_rng(0)
    n = 1 + n_per_element(4, True)
    model.prior.load_snap(SnapModel(list(species), 4, 4.5, 0.99363, 0.0, True,
                                    {e: np.concatenate([[-4.0 - i], 0.02 * rng.normal(size=n - 1)])
                                     for i, e in enumerate(species)}), list(species))
    path = save_checkpoint(tmp_path / "model.pt", model)
    with pytest.raises(ValueError, match="SNAP prior"):
        export_for_lammps(path, tmp_path / "mliap", fmt="mliap")
    assert not (tmp_path / "mliap").exists()
    deployment = export_for_lammps(path, tmp_path / "export")
    assert deployment.metadata["snap_prior"] is True
    lines = deployment.commands()
    torchscript = [line + " native no" if line.startswith("pair_style") else line for line in lines]
    ase = EIP2NNCalculator.from_checkpoint(path)
    # random SNAP coefficients give stresses of order 10 eV/Å³; ASE's bar and LAMMPS's metal-units pressure factor
    # differ by 8e-8 (relative)
    s_max = max(np.abs(ase.get_stress(atoms)).max() for atoms in cells)
    for commands in (lines, torchscript):
        de, df, ds = compare(cells, ase, lammps_calculator(commands, species))
        assert de < 1e-6 and df < 1e-6 and ds < 1e-6 * s_max, (de, df, ds, s_max)


@pytest.mark.parametrize("eip, lammps_id, style", [("lmp_Si_sw", "lmp_Si_sw", "sw"),
                                                    ("Tersoff_LAMMPS_Tersoff_1988T2_Si", "lmp_Si_tersoff", "tersoff")])
def test_a_delta_model_runs_on_its_eip_in_lammps(tmp_path, data_dir, eip, lammps_id, style):
    """Δ-learning: EIP + network. An OpenKIM EIP is replaced by its LAMMPS twin."""
    cells = structures(data_dir)
    path = save_checkpoint(tmp_path / "delta.pt", random_model("schnet", cells, reference_eip=eip))
    deployment = export_for_lammps(path, tmp_path / "export")
    assert deployment.eip.id == lammps_id
    lines = deployment.commands()
    assert lines[1] == f"pair_style hybrid/overlay {style} eip2nn"
    de, df, ds = compare(cells, EIP2NNCalculator.from_checkpoint(path), lammps_calculator(lines))
    assert de < 1e-6 and df < 1e-6 and ds < 1e-8, (de, df, ds)


@pytest.mark.parametrize("backbone, eip", [("bispectrum", ""), ("schnet", "lmp_Si_sw")])
def test_a_committee_runs_as_one_pair_style_that_gives_the_members_mean(tmp_path, data_dir, backbone, eip):
    """A committee exports as one file (descriptor once, native for the bispectrum); LAMMPS gives the ASE
    calculator's numbers, which are the members' mean, and those differ from any one member's."""
    from eip2nn.nn.committee import Committee
    cells = structures(data_dir)
    extra = {"twojmax": 4} if backbone == "bispectrum" else {}
    members = [random_model(backbone, cells, reference_eip=eip, seed=k, **extra) for k in range(3)]
    path = save_checkpoint(tmp_path / "committee.pt", Committee(members))
    deployment = export_for_lammps(path, tmp_path / "export")
    assert deployment.metadata["committee"] == 3
    lines = deployment.commands()
    assert sum(line.startswith("pair_style") for line in lines) == 1
    lammps = lammps_calculator(lines, log_file=tmp_path / "lammps.log")
    de, df, ds = compare(cells, EIP2NNCalculator.from_checkpoint(path), lammps)
    assert de < 1e-6 and df < 1e-6 and ds < 1e-8, (de, df, ds)
    atoms = cells[0].copy()
    atoms.calc = lammps
    energies = []
    for member in members:
        one = cells[0].copy()
        one.calc = EIP2NNCalculator(member)
        energies.append(one.get_potential_energy())
    assert atoms.get_potential_energy() == pytest.approx(np.mean(energies), abs=1e-6)
    assert np.ptp(energies) > 1e-3  # members that differ
    if backbone == "bispectrum":
        assert "computed natively" in (tmp_path / "lammps.log").read_text()
    with pytest.raises(ValueError, match="a committee .* runs in the plugin only"):
        export_for_lammps(path, tmp_path / "mliap", fmt="mliap")


def test_a_delta_model_on_a_kim_only_eip_is_refused_before_writing(tmp_path):
    path = save_checkpoint(tmp_path / "delta.pt",
                           random_model("schnet", [], reference_eip="ThreeBodyCluster_BH_BiswasHamann_1987_Si"))
    with pytest.raises(ValueError, match="no LAMMPS twin"):  # (a KIM-only driver: no LAMMPS form)
        export_for_lammps(path, tmp_path / "export")
    assert not (tmp_path / "export").exists()


def test_each_lammps_twin_is_the_same_potential(data_dir):
    """The twins file may only pair potentials that agree: 1e-6 eV/atom and eV/Å on mlearn and rattled cells."""
    from eip2nn.data import load_dataset
    db = PotentialsDB()
    cells = list(load_dataset("mlearn/Si/test")[:4])
    for seed, a in enumerate((5.35, 5.431, 5.55)):
        atoms = bulk("Si", "diamond", a=a, cubic=True).repeat(2)
        atoms.rattle(0.08, seed=seed)
        cells.append(atoms)
    assert lammps_twins()
    for kim_id, lammps_id in lammps_twins().items():
        assert lammps_eip(kim_id, db).id == lammps_id
        kim, lmp = make_evaluator(db.get(kim_id)), make_evaluator(db.get(lammps_id))
        try:
            for atoms in cells:
                a, b = kim.evaluate(atoms), lmp.evaluate(atoms)
                assert abs(a.energy - b.energy) / len(atoms) < 1e-6, (kim_id, lammps_id)
                assert np.abs(a.forces - b.forces).max() < 1e-6, (kim_id, lammps_id)
        finally:
            kim.close()
            lmp.close()


def metal_cells(element: str) -> list:
    """mlearn test structures of ``element`` and rattled cells, one triclinic, one smaller than 2 cut-offs."""
    from eip2nn.data import load_dataset
    cells = list(load_dataset(f"mlearn/{element}/test")[:3])
    tri = bulk(element).repeat((3, 3, 2))  # primitive vectors: triclinic
    tri.rattle(0.05, seed=1)
    small = bulk(element, cubic=True)
    small.rattle(0.05, seed=2)
    return cells + [tri, small]


@pytest.mark.parametrize("kim_id, element, style", [
    ("EAM_Dynamo_ZhouJohnsonWadley_2004_Ni", "Ni", "eam/alloy"),
    ("EAM_Dynamo_ZhouJohnsonWadley_2004NISTretabulation_Ni", "Ni", "eam/alloy"),
    ("EAM_Dynamo_TehranchiCurtin_2010_NiH", "Ni", "eam/alloy"),
    ("EAM_Dynamo_ZhouJohnsonWadley_2004NISTretabulation_Cu", "Cu", "eam/alloy"),
    ("EAM_Dynamo_GolaPastewka_2018_CuAu", "Cu", "eam/fs"),
    ("MEAM_LAMMPS_ParkFellingerLenosky_2012_Mo", "Mo", "meam/spline"),
    ("EAM_CubicNaturalSpline_AngeloMoodyBaskes_1995_Ni", "Ni", "eam/alloy"),
    ("SW_ZhangXieHu_2014OptimizedSW1_Si", "Si", "sw"),
    ("SW_StillingerWeber_1985_Si", "Si", "sw")])
def test_an_openkim_model_runs_in_lammps_from_its_own_parameter_file(tmp_path, data_dir, kim_id, element, style):
    """The OpenKIM models the Si, Ni, Cu and Mo pipelines' Δ arms sit on: their embedded file under the LAMMPS
    style the KIM driver was ported from (an SW file rewritten in LAMMPS's sw form) is the same potential, to 1e-9
    eV/atom and eV/Å."""
    db = PotentialsDB()
    spec = lammps_eip(kim_id, db, folder=tmp_path)
    assert spec.backend.pair_style == style and Path(spec.source_file).parent == tmp_path.resolve()
    kim, lmp = make_evaluator(db.get(kim_id)), make_evaluator(dataclasses.replace(spec, species=(element,)))
    try:
        for atoms in metal_cells(element):
            a, b = kim.evaluate(atoms), lmp.evaluate(atoms)
            assert abs(a.energy - b.energy) / len(atoms) < 1e-9
            assert np.abs(a.forces - b.forces).max() < 1e-9
    finally:
        kim.close()
        lmp.close()


@pytest.mark.parametrize("kim_id, why", [("Tersoff_LAMMPS_NordAlbeErhart_2003_GaN", "driver Tersoff"),
                                          ("SW_BereSerra_2006_GaN", "2 species; a twin is made from a single-species"),
                                          ("ThreeBodyCluster_BH_BiswasHamann_1987_Si", "driver ThreeBodyCluster")])
def test_an_openkim_model_on_another_driver_gets_no_twin_and_says_why(tmp_path, kim_id, why):
    with pytest.raises(ValueError, match=f"no LAMMPS twin .*{why}.*cannot run in LAMMPS"):
        lammps_eip(kim_id, folder=tmp_path)
    assert not list(tmp_path.iterdir())


def test_a_delta_model_on_an_openkim_eam_carries_its_file_and_runs_in_lammps(tmp_path, data_dir):
    """The export writes the EAM file beside the network; the folder, loaded back, runs as hybrid/overlay and
    gives the ASE calculator's numbers (which evaluate the EIP through the KIM-API)."""
    cells = metal_cells("Ni")
    model = random_model("symmetry_functions", cells, reference_eip="EAM_Dynamo_ZhouJohnsonWadley_2004_Ni",
                         species=("Ni",))
    path = save_checkpoint(tmp_path / "delta.pt", model)
    export_for_lammps(path, tmp_path / "export")
    assert (tmp_path / "export" / "EAM_Dynamo_ZhouJohnsonWadley_2004_Ni.eam.alloy").is_file()
    lines = load_deployment(tmp_path / "export").commands()
    assert lines[1] == "pair_style hybrid/overlay eam/alloy eip2nn"
    assert lines[2].endswith("export/EAM_Dynamo_ZhouJohnsonWadley_2004_Ni.eam.alloy Ni")
    de, df, ds = compare(cells, EIP2NNCalculator.from_checkpoint(path), lammps_calculator(lines, ("Ni",)))
    assert de < 1e-6 and df < 1e-6 and ds < 1e-8, (de, df, ds)


@pytest.mark.parametrize("backbone", ["schnet", "bispectrum", "symmetry_functions"])
def test_a_float32_export_agrees_to_float32_precision(tmp_path, data_dir, backbone):
    """A native descriptor (bispectrum, symmetry functions) is float64 even then: only its network runs in float32."""
    cells = structures(data_dir)
    extra = {"twojmax": 4} if backbone == "bispectrum" else {}
    path = save_checkpoint(tmp_path / "model.pt", random_model(backbone, cells, **extra))
    deployment = export_for_lammps(path, tmp_path / "export", dtype="float32")
    assert deployment.metadata["dtype"] == "float32"
    de, df, ds = compare(cells, EIP2NNCalculator.from_checkpoint(path), lammps_calculator(deployment.commands()))
    assert 0 < df and de < 1e-4 and df < 1e-5 and ds < 1e-6, (de, df, ds)


@pytest.mark.parametrize("chunk", [5, 0])
def test_a_symmetry_function_model_evaluated_in_chunks_of_atoms_is_the_same(tmp_path, data_dir, chunk):
    """pair_style eip2nn chunk N: owned atoms N at a time (bounded memory); chunk 0: all at once."""
    cells = structures(data_dir)
    path = save_checkpoint(tmp_path / "model.pt", random_model("symmetry_functions", cells))
    lines = export_for_lammps(path, tmp_path / "export").commands()
    lines = [f"pair_style eip2nn chunk {chunk}" if line == "pair_style eip2nn" else line for line in lines]
    de, df, ds = compare(cells, EIP2NNCalculator.from_checkpoint(path), lammps_calculator(lines))
    assert de < 1e-6 and df < 1e-6 and ds < 1e-8, (de, df, ds)
