"""MD of an exported model in LAMMPS (eip2nn.deploy.md.run_md).

- every frame's energy and forces equal EIP2NNCalculator's on the frame's structure, and frame 0
  is the input structure, for cells in a general orientation (rotated; left-handed): the frame
  conversions (Minkowski reduction, rotation into LAMMPS's triclinic frame, unwrapping) are right;
- NVE conserves energy to the velocity-Verlet error, which falls as dt²;
- the same seed gives the same trajectory; the written input reruns in LAMMPS to the same end;
- bad requests are refused with a ValueError naming the problem.

Models: float64, width 8, random init (torch seed fixed). The plugin is built by
scripts/build_lammps_plugin.sh when missing or stale.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from ase import Atoms  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.constraints import FixAtoms  # noqa: E402
from ase.io import read, write  # noqa: E402
from scipy.spatial.transform import Rotation  # noqa: E402

from eip2nn.calculator import EIP2NNCalculator  # noqa: E402
from eip2nn.deploy.lammps import export_for_lammps  # noqa: E402
from eip2nn.deploy.md import run_md  # noqa: E402
from eip2nn.nn.checkpoint import save_checkpoint  # noqa: E402
from eip2nn.nn.config import ModelConfig  # noqa: E402
from eip2nn.nn.model import EnergyModel  # noqa: E402
from eip2nn.potentials.lammps_backend import import_lammps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("EIP2NN_VENV", ROOT / ".venv"))
if not VENV.is_absolute():
    VENV = ROOT / VENV
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
AGREEMENT = 1e-6  # eV, eV/Å: LAMMPS frame vs the ASE calculator (both float64; extxyz keeps 8 decimals)
HEAD_SCALE = {"schnet": -100.0, "symmetry_functions": 3.0, "bispectrum": 1.0,
              "bispectrum-softplus": 1.0}  # random-init forces 0.1-1 eV/Å
# the bispectrum backbone with tanh (what ML-IAP could also run) and with shifted softplus (the pipelines')
EXTRA_CONFIG = {"bispectrum": {"twojmax": 4, "activation": "tanh"}, "bispectrum-softplus": {"twojmax": 4}}


@pytest.fixture(scope="module")
def plugin() -> Path:
    """eip2nnplugin.so, built (or found up to date) by the build script, where run_md looks for it."""
    so = VENV / "lib" / "eip2nn" / "eip2nnplugin.so"
    if not ((shutil.which("c++") or shutil.which("g++")) and shutil.which("cmake")):
        if so.is_file():
            return so
        pytest.skip("no C++ compiler or cmake to build the LAMMPS plugin (scripts/build_lammps_plugin.sh)")
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build_lammps_plugin.sh")], cwd=ROOT,
                          env=dict(os.environ, EIP2NN_VENV=str(VENV)), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"plugin build failed:\n{proc.stderr[-4000:]}"
    assert Path(proc.stdout.strip().splitlines()[-1]) == so and so.is_file()
    return so


def si_primitive_2x2x2(rattle: float = 0.1, seed: int = 1) -> Atoms:
    """16 Si atoms: the 2-atom fcc primitive cell (60° angles) repeated 2x2x2, rattled."""
    cell = 5.43 * np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    atoms = Atoms("Si2", scaled_positions=[[0, 0, 0], [0.25, 0.25, 0.25]], cell=cell, pbc=True) * (2, 2, 2)
    atoms.rattle(rattle, seed=seed)
    return atoms


def general_orientation(atoms: Atoms, left_handed: bool) -> Atoms:
    """The same crystal rotated at random (cell not lower-triangular), cell vectors swapped to a left-handed
    order if asked, and some atoms moved out of the cell by lattice vectors."""
    atoms = atoms.copy()
    rotation = Rotation.random(random_state=7).as_matrix()
    atoms.set_cell(atoms.cell.array @ rotation.T, scale_atoms=True)
    if left_handed:
        atoms.set_cell(atoms.cell.array[[1, 0, 2]], scale_atoms=False)
    atoms.positions[::3] += atoms.cell.array[0] - 2 * atoms.cell.array[2]
    return atoms


def deploy(folder: Path, backbone: str, head_scale: float = 1.0, seed: int = 0):
    """(Deployment, checkpoint path) of a float64 width-8 depth-2 Si model with random weights."""
    torch.manual_seed(seed)
    model = EnergyModel(ModelConfig(backbone=backbone.split("-")[0], cutoff=4.0, width=8, depth=2,
                                    **EXTRA_CONFIG.get(backbone, {})),
                        ["Si"], ["dft"])
    model = model.double()
    with torch.no_grad():
        model.head("dft").scale.fill_(head_scale)
        model.head("dft").offsets.fill_(-4.0)
    if backbone != "schnet":
        model.backbone.fit_standardisation([model.graph(si_primitive_2x2x2(0.1, s)) for s in range(3)])
    checkpoint = save_checkpoint(folder / f"{backbone}.pt", model)
    return export_for_lammps(checkpoint, folder / backbone), checkpoint


@pytest.fixture(scope="module")
def schnet(plugin, tmp_path_factory):
    return deploy(tmp_path_factory.mktemp("schnet"), "schnet", HEAD_SCALE["schnet"])


@pytest.mark.parametrize("backbone", ["schnet", "symmetry_functions", "bispectrum", "bispectrum-softplus"])
@pytest.mark.parametrize("left_handed", [False, True], ids=["rotated", "left-handed"])
def test_frames_equal_ase_calculator(plugin, tmp_path, backbone, left_handed):
    deployment, checkpoint = deploy(tmp_path, backbone, HEAD_SCALE[backbone])
    atoms = general_orientation(si_primitive_2x2x2(), left_handed)
    result = run_md(deployment, atoms, temperature=600.0, steps=10, timestep=1.0, out=tmp_path / "md.extxyz",
                    every=5, progress=False)
    frames = read(result.trajectory, ":")
    assert [f.info["step"] for f in frames] == [0, 5, 10] == result.frame_steps.tolist()
    calc = EIP2NNCalculator.from_checkpoint(checkpoint)

    reference = atoms.copy()
    reference.calc = calc
    first = frames[0]
    de = abs(first.get_potential_energy() - reference.get_potential_energy())
    df = np.abs(first.get_forces() - reference.get_forces()).max()
    print(f"\n{backbone} {'left-handed' if left_handed else 'rotated'}: frame 0 vs ASE |dE| {de:.2e} eV, "
          f"max |dF| {df:.2e} eV/Å (max |F| {np.abs(reference.get_forces()).max():.3f})")
    assert de <= AGREEMENT and df <= AGREEMENT
    assert np.abs(first.positions - atoms.positions).max() <= 1e-7  # unwrapped, the structure's own frame
    assert np.allclose(first.cell.array, atoms.cell.array, rtol=0, atol=1e-8)
    assert abs(result.potential_energies[0] - reference.get_potential_energy()) <= 1e-9
    for frame in frames[1:]:  # moved atoms: the conversions back hold along the run
        moved = frame.copy()
        moved.calc = calc
        assert abs(frame.get_potential_energy() - moved.get_potential_energy()) <= AGREEMENT
        assert np.abs(frame.get_forces() - moved.get_forces()).max() <= AGREEMENT
        # momenta rotated back like forces: ASE's kinetic energy is LAMMPS's
        assert frame.get_kinetic_energy() == pytest.approx(frame.info["kinetic_energy"], rel=1e-6)
    assert np.abs(frames[-1].positions - atoms.positions).max() > 1e-3
    assert (tmp_path / "md.in.lammps").read_text() == result.input_text


def test_nve_conserves_energy(plugin, tmp_path):
    """64 Si atoms (cubic diamond 2x2x2, rattled 0.05 Å), SchNet depth 2, random init with head scale -100:
    rms force 0.14 eV/Å, max 0.46 eV/Å along the run, closest pair never under 2 Å, the temperature
    falls from 300 K to ~140 K as the rattled crystal shares its energy -- a crystal-like landscape.

    Bound: max |E_tot(t) - E_tot(0)| <= 1e-5 eV/atom over 300 steps of 0.5 fs. Measured 8.3e-7 eV/atom;
    it is velocity Verlet's bounded energy fluctuation, which scales as dt²: checked below by halving dt
    (measured 2.1e-7, ratio 4.0). The bound leaves 12x for platform rounding, is 0.04% of kT at 300 K,
    and is well below what forces inconsistent with the energy (a ghost atom's force dropped, a missed
    neighbour-list rebuild) would add: work error ~ 1% x 0.14 eV/Å x 0.1 Å displacement ~ 1e-4 eV/atom.
    """
    deployment, _ = deploy(tmp_path, "schnet", HEAD_SCALE["schnet"])
    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (2, 2, 2)
    atoms.rattle(0.05, seed=3)
    n = len(atoms)
    result = run_md(deployment, atoms, temperature=300.0, steps=300, timestep=0.5, out=tmp_path / "nve.extxyz",
                    every=10, ensemble="nve", seed=1, progress=False)
    frames = read(result.trajectory, ":")
    assert len(frames) == 300 // 10 + 1 == len(result.total_energies)
    assert [f.info["time"] for f in frames] == pytest.approx(np.arange(0, 150.5, 5.0))
    assert result.temperatures[0] == pytest.approx(300.0, rel=1e-9)
    e = np.array([f.get_potential_energy() + f.info["kinetic_energy"] for f in frames])
    assert np.allclose(e, result.total_energies, rtol=0, atol=1e-6)
    drift = np.abs(result.total_energies - result.total_energies[0]).max() / n
    half = run_md(deployment, atoms, temperature=300.0, steps=600, timestep=0.25, every=20, ensemble="nve", seed=1,
                  progress=False)
    drift_half = np.abs(half.total_energies - half.total_energies[0]).max() / n
    forces = np.array([f.get_forces() for f in frames])
    closest = min(f.get_all_distances(mic=True)[np.triu_indices(n, 1)].min() for f in frames)
    print(f"\nNVE {n} atoms: max |dE_tot| {drift:.2e} eV/atom at 0.5 fs, {drift_half:.2e} at 0.25 fs; "
          f"T {result.temperatures.min():.0f}-{result.temperatures.max():.0f} K, rms |F| "
          f"{np.sqrt((forces ** 2).mean()):.3f} eV/Å, max {np.abs(forces).max():.3f}; closest pair {closest:.2f} Å; "
          f"{result.atom_steps_per_second:.0f} atom-steps/s")
    assert result.temperatures.min() < 250 and closest > 1.8  # a crystal-like landscape, no collapse
    assert drift <= 1e-5
    assert drift / drift_half > 2.5  # ~4 for an O(dt²) integration error


def test_seed_reproducible_and_input_reruns(schnet, tmp_path):
    deployment, _ = schnet
    atoms = si_primitive_2x2x2(rattle=0.05, seed=2)
    runs = [run_md(deployment, atoms, 500.0, 20, out=tmp_path / f"{name}.extxyz", every=10, seed=seed,
                   progress=False) for name, seed in (("a", 3), ("b", 3), ("c", 4))]
    a, b, c = (read(r.trajectory, ":") for r in runs)
    assert all(np.array_equal(x.positions, y.positions) for x, y in zip(a, b))
    assert np.array_equal(runs[0].total_energies, runs[1].total_energies)
    assert not np.allclose(a[-1].positions, c[-1].positions)

    lammps = import_lammps()  # the written input, as a user would run it, ends where run_md ended
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        lmp.file(str(runs[0].input_file))
        assert lmp.get_thermo("step") == 20
        assert lmp.get_thermo("etotal") == pytest.approx(runs[0].total_energies[-1], rel=0, abs=1e-10)
        assert lmp.get_thermo("pe") == pytest.approx(runs[0].potential_energies[-1], rel=0, abs=1e-10)
    finally:
        lmp.close()


@pytest.mark.parametrize("backbone", ["schnet", "bispectrum"])
def test_a_cluster_runs_in_a_shrink_wrapped_box(plugin, tmp_path, backbone):
    """A structure periodic in no direction: boundary s s s, frames in the structure's own coordinates."""
    deployment, checkpoint = deploy(tmp_path, backbone, HEAD_SCALE[backbone])
    crystal = si_primitive_2x2x2(rattle=0.05)
    cluster = crystal[np.linalg.norm(crystal.positions - crystal.positions[0], axis=1) < 4.0]
    cluster.pbc, cluster.cell = False, np.zeros((3, 3))
    cluster.positions += [-7.0, 3.0, 11.0]  # anywhere: not inside any box
    result = run_md(deployment, cluster, temperature=300.0, steps=10, out=tmp_path / "c.extxyz", every=5,
                    ensemble="nve", progress=False)
    assert "boundary s s s" in result.input_text
    frames = read(result.trajectory, ":")
    assert np.abs(frames[0].positions - cluster.positions).max() <= 1e-7
    calc = EIP2NNCalculator.from_checkpoint(checkpoint)
    for frame in frames:
        moved = frame.copy()
        moved.calc = calc
        assert not moved.pbc.any()
        assert abs(frame.get_potential_energy() - moved.get_potential_energy()) <= AGREEMENT
        assert np.abs(frame.get_forces() - moved.get_forces()).max() <= AGREEMENT
    assert np.abs(frames[-1].positions - cluster.positions).max() > 1e-4


def test_refusals(schnet):
    deployment, _ = schnet
    atoms = si_primitive_2x2x2()
    cases = [({"steps": 0}, atoms, "steps must be >= 1"),
             ({}, Atoms("SiGe", positions=[[0, 0, 0], [1.2, 1.2, 1.2]], cell=[5, 5, 5], pbc=True),
              r"knows \['Si'\]; the structure also has \['Ge'\]"),
             ({}, Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]], cell=[5, 5, 5], pbc=[True, True, False]),
              "periodic along some directions only"),
             ({"ensemble": "npt"}, atoms, "ensemble 'npt'"),
             ({"temperature": 0.0}, atoms, "temperature must be > 0 K for nvt")]
    nan_cluster = Atoms("Si2", positions=[[0, 0, 0], [2.3, np.nan, 0]])
    cases.append(({}, nan_cluster, r"non-finite positions on 1 atom\(s\), first atom 1"))
    constrained = atoms.copy()
    constrained.set_constraint(FixAtoms([0]))
    cases.append(({}, constrained, "ASE constraints"))
    for kwargs, structure, message in cases:
        args = {"temperature": 300.0, "steps": 10, **kwargs}
        with pytest.raises(ValueError, match=message):
            run_md(deployment, structure, progress=False, **args)


def test_the_md_command_runs_an_export_folder(schnet, tmp_path):
    """`eip2nn md` on an `eip2nn export` folder: a trajectory with a frame every --every steps."""
    import sys
    start = si_primitive_2x2x2(rattle=0.02)
    start.write(tmp_path / "start.extxyz")
    run = subprocess.run([sys.executable, "-m", "eip2nn", "md", "--model", str(schnet[0].model_file.parent),
                          "--structure", str(tmp_path / "start.extxyz"), "--temperature", "300", "--steps", "20",
                          "--every", "5", "--ensemble", "nve", "-o", str(tmp_path / "md.extxyz"), "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "NVE drift" in run.stdout and (tmp_path / "md.in.lammps").is_file()
    frames = read(tmp_path / "md.extxyz", ":")
    assert [f.info["step"] for f in frames] == [0, 5, 10, 15, 20]
    np.testing.assert_allclose(frames[0].positions, start.positions, atol=1e-6)


def test_the_md_command_exports_a_checkpoint_beside_the_trajectory_and_its_input_reruns(plugin, tmp_path):
    """`eip2nn md --model <checkpoint>`: the export goes to <stem>.export beside the trajectory (not a temporary
    folder), so `lmp -in md.in.lammps` reruns the same MD: the same final potential energy."""
    import sys

    from eip2nn.potentials.lammps_backend import import_lammps
    deployment, checkpoint = deploy(tmp_path / "model", "schnet", HEAD_SCALE["schnet"])
    si_primitive_2x2x2(rattle=0.02).write(tmp_path / "start.extxyz")
    run = subprocess.run([sys.executable, "-m", "eip2nn", "md", "--model", str(checkpoint), "--structure",
                          str(tmp_path / "start.extxyz"), "--temperature", "300", "--steps", "10", "--every", "10",
                          "-o", str(tmp_path / "run" / "md.extxyz"), "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert (tmp_path / "run" / "md.export" / "model.pt").is_file() and "md.export" in run.stdout
    assert str(tmp_path / "run" / "md.export" / "model.pt") in (tmp_path / "run" / "md.in.lammps").read_text()
    lmp = import_lammps().lammps(cmdargs=["-screen", "none", "-log", "none"])
    try:
        lmp.file(str(tmp_path / "run" / "md.in.lammps"))
        rerun = lmp.get_thermo("pe")
    finally:
        lmp.close()
    assert rerun == pytest.approx(read(tmp_path / "run" / "md.extxyz", -1).get_potential_energy(), abs=1e-6)


def test_the_md_command_names_the_file_and_frame_of_a_bad_structure(schnet, tmp_path, capsys):
    """A NaN position in frame 1, a frame past the end, a file ASE cannot read: one line naming each, exit 2."""
    from eip2nn.cli import main
    good = Atoms("Si2", positions=[[0, 0, 0], [2.3, 0, 0]])
    bad = Atoms("Si2", positions=[[0, 0, 0], [2.3, np.nan, 0]])
    path = tmp_path / "bad.xyz"
    write(path, [good, bad])
    garbage = tmp_path / "garbage.extxyz"
    garbage.write_text("2\nnot a comment line\nSi 0 0\n")
    model = str(schnet[0].model_file.parent)
    cases = [(path, 1, f"{path} frame 1: non-finite positions on 1 atom(s), first atom 1"),
             (path, 2, f"{path} has 2 frame(s); there is no frame 2"),
             (garbage, 0, f"{garbage}: ASE cannot read it")]
    for structure, frame, message in cases:
        code = main(["md", "--model", model, "--structure", str(structure), "--frame", str(frame),
                     "--temperature", "300", "--steps", "5", "-o", str(tmp_path / "md.extxyz"), "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and message in err, err
        assert not (tmp_path / "md.extxyz").exists()
