"""No structure can stop a labelling job: bad geometry is refused before any backend sees it,
and a structure that kills its worker process is found, recorded and skipped."""

import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write
from structures import rattled_si_cells

from eip2nn.labelling.engine import label
from eip2nn.labelling.hashing import structure_hashes
from eip2nn.labelling.store import LabelStore
from eip2nn.labelling.worker import CRASH_ENV, CRASH_ONCE_ENV
from eip2nn.potentials.db import PotentialsDB
from eip2nn.potentials.evaluator import (
    BACKEND_CRASHED,
    INVALID_GEOMETRY,
    SINGULAR_CELL,
    EvaluationError,
    Geometry,
    check_geometry,
)

KIM_W = "EAM_Dynamo_Ackland_2003_W"
SW = "lmp_Si_sw"


def si_cells(n=12):
    return rattled_si_cells(n, seed=3, noise=0.05, tag="si")


def snapshot(path):
    with LabelStore(path) as store:
        labels = {(lab.structure_hash, lab.eip_id): (lab.energy, lab.forces, lab.stress) for lab in store.labels()}
        failures = {(f.structure_hash, f.eip_id): (f.kind, f.reason) for f in store.failures()}
    return labels, failures


def assert_same_labels(a, b):
    """Equal to rounding: LAMMPS sums forces in an order that depends on the batch a structure is in."""
    assert a.keys() == b.keys()
    for key in a:
        assert a[key][0] == pytest.approx(b[key][0], rel=1e-12)
        np.testing.assert_allclose(a[key][1], b[key][1], rtol=0, atol=1e-12)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Labels of si_cells() by SW from an uninterrupted run."""
    path = tmp_path_factory.mktemp("ref") / "labels.sqlite"
    report = label(si_cells(), [PotentialsDB().get(SW)], path, workers=2, chunk_size=4, progress=False)
    assert report.chunks_lost == 0
    return snapshot(path)[0]


def test_geometry_checks_name_the_problem():
    ok = bulk("Si", "diamond", a=5.431)
    check_geometry(Geometry.of(ok))
    slab = bulk("Cu", "fcc", a=3.6, cubic=True)
    slab.pbc = (True, True, False)
    slab.cell[2] = 0.0  # an unused non-periodic axis may be zero
    check_geometry(Geometry.of(slab))
    cases = []
    nan = ok.copy()
    nan.positions[1, 2] = np.nan
    cases.append((nan, INVALID_GEOMETRY, "atom(s) [1]"))
    inf_cell = ok.copy()
    inf_cell.cell[0, 0] = np.inf
    cases.append((inf_cell, INVALID_GEOMETRY, "non-finite cell"))
    flat = ok.copy()
    flat.cell[2] = flat.cell[0] + flat.cell[1]
    cases.append((flat, SINGULAR_CELL, "periodic axis"))
    far = ok.copy()
    far.positions[0] = [1e6, 0, 0]
    cases.append((far, INVALID_GEOMETRY, "1e+06 Å"))
    for atoms, kind, words in cases:
        with pytest.raises(EvaluationError) as err:
            check_geometry(Geometry.of(atoms))
        assert err.value.kind == kind and words in err.value.reason, err.value


@pytest.mark.parametrize("workers", [1, 2])
def test_bad_structures_are_failures_and_the_others_are_labelled(tmp_path, workers):
    """The issue's case: a NaN position crashed the KIM model (exit code 139) and lost every label."""
    frames = []
    for k in range(5):
        atoms = bulk("W", "bcc", a=3.16, cubic=True).repeat(2)
        atoms.rattle(0.05, seed=k)
        frames.append(atoms)
    frames[1].positions[3, 0] = np.nan
    frames[2].positions[0, 1] = np.inf
    frames[3].cell[2] = frames[3].cell[0]  # singular
    path = tmp_path / "bad.xyz"
    write(path, frames)
    store = tmp_path / "labels.sqlite"
    run = subprocess.run([sys.executable, "-m", "eip2nn", "label", "--file", str(path), "--eip", KIM_W,
                          "--labels", str(store), "--workers", str(workers), "--no-progress"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    labels, failures = snapshot(store)
    hashes = structure_hashes(frames)
    assert {h for h, _ in labels} == {hashes[0], hashes[4]}
    assert {h: kind for (h, _), (kind, _) in failures.items()} == {
        hashes[1]: INVALID_GEOMETRY, hashes[2]: INVALID_GEOMETRY, hashes[3]: SINGULAR_CELL}
    for frame in (1, 2, 3):  # the console names the file and the frame
        assert f"bad.xyz/{frame} with {KIM_W}" in run.stdout


@pytest.mark.parametrize("signal_name", ["SIGSEGV", "SIGKILL"])
def test_a_structure_that_kills_its_worker_is_found_and_nothing_else_is_lost(tmp_path, monkeypatch, reference,
                                                                          signal_name):
    structures = si_cells()
    hashes = structure_hashes(structures)
    culprit = hashes[6]
    monkeypatch.setenv(CRASH_ENV, f"{signal_name}:{culprit}")
    spec = PotentialsDB().get(SW)
    report = label(structures, [spec], tmp_path / "labels.sqlite", workers=2, chunk_size=4, progress=False)
    labels, failures = snapshot(tmp_path / "labels.sqlite")
    assert set(failures) == {(culprit, SW)}
    kind, reason = failures[(culprit, SW)]
    assert kind == BACKEND_CRASHED and signal_name in reason and SW in reason
    assert report.per_eip[SW].failed == {BACKEND_CRASHED: 1} and report.chunks_lost >= 2
    assert_same_labels(labels, {k: v for k, v in reference.items() if k[0] != culprit})

    # a resume leaves the recorded crash alone; --retry-failed tries it again
    monkeypatch.delenv(CRASH_ENV)
    again = label(structures, [spec], tmp_path / "labels.sqlite", workers=1, progress=False)
    assert again.per_eip[SW].labelled == 0 and again.per_eip[SW].already_done == len(structures)
    retried = label(structures, [spec], tmp_path / "labels.sqlite", workers=1, retry_failed=True, progress=False)
    assert retried.per_eip[SW].labelled == 1
    labels, failures = snapshot(tmp_path / "labels.sqlite")
    assert not failures
    assert_same_labels(labels, reference)


def test_a_worker_lost_once_brands_no_structure(tmp_path, monkeypatch, reference):
    """A worker killed once (kill -9, a lost machine) costs a re-run of its chunk, not a label."""
    structures = si_cells()
    monkeypatch.setenv(CRASH_ENV, f"SIGKILL:{structure_hashes(structures)[0]}")
    monkeypatch.setenv(CRASH_ONCE_ENV, str(tmp_path / "crashed-once"))
    report = label(structures, [PotentialsDB().get(SW)], tmp_path / "labels.sqlite", workers=2, chunk_size=12,
                   progress=False)
    assert report.chunks_lost == 1 and (tmp_path / "crashed-once").exists()
    labels, failures = snapshot(tmp_path / "labels.sqlite")
    assert not failures
    assert_same_labels(labels, reference)


# --- the same on a Dask cluster (a real LocalCluster of two worker processes) ---

@pytest.fixture
def dask_cluster(request):
    """A LocalCluster of 2 single-thread worker processes; ``request.param`` is their extra environment.
    Dask gives a task up after its first worker death (allowed-failures 0), the strictest setting."""
    dask = pytest.importorskip("dask")
    from distributed import LocalCluster
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                               env=getattr(request, "param", None) or {})
    yield cluster
    cluster.close()


def test_a_dask_cluster_gives_the_pool_s_store_through_the_cli(tmp_path, dask_cluster):
    path = tmp_path / "si.xyz"
    write(path, si_cells())

    def cli(store, *where):
        run = subprocess.run([sys.executable, "-m", "eip2nn", "label", "--file", str(path), "--eip", SW,
                              "--labels", str(store), *where, "--chunk-size", "2", "--no-progress"],
                             capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr
        return run.stdout

    assert f"Dask cluster {dask_cluster.scheduler_address}" in cli(
        tmp_path / "dask.sqlite", "--scheduler", dask_cluster.scheduler_address)
    assert "local pool" in cli(tmp_path / "pool.sqlite", "--workers", "2")
    on_dask, pool = snapshot(tmp_path / "dask.sqlite"), snapshot(tmp_path / "pool.sqlite")
    assert len(pool[0]) == len(si_cells()) and not pool[1] and not on_dask[1]
    assert_same_labels(on_dask[0], pool[0])


def _crash_env(tag):
    """Environment for the Dask workers: crash on structure 6 of si_cells() (``tag`` = "SIGSEGV" or
    "SIGKILL once")."""
    name, _, once = tag.partition(" ")
    env = {CRASH_ENV: f"{name}:{structure_hashes(si_cells())[6]}"}
    if once:
        import tempfile
        env[CRASH_ONCE_ENV] = str(tempfile.mktemp(prefix="eip2nn-crash-once-"))
    return env


@pytest.mark.parametrize("dask_cluster", [_crash_env("SIGSEGV")], indirect=True)
def test_a_dask_worker_killed_by_a_structure_records_it(tmp_path, dask_cluster, reference):
    structures = si_cells()
    culprit = structure_hashes(structures)[6]
    report = label(structures, [PotentialsDB().get(SW)], tmp_path / "labels.sqlite", chunk_size=4,
                   scheduler=dask_cluster, progress=False)
    labels, failures = snapshot(tmp_path / "labels.sqlite")
    assert {k: v[0] for k, v in failures.items()} == {(culprit, SW): BACKEND_CRASHED}
    assert "KilledWorker" in failures[(culprit, SW)][1] and report.chunks_lost >= 2
    assert_same_labels(labels, {k: v for k, v in reference.items() if k[0] != culprit})


@pytest.mark.parametrize("dask_cluster", [_crash_env("SIGKILL once")], indirect=True)
def test_a_dask_job_survives_a_worker_lost_mid_job(tmp_path, dask_cluster, reference):
    report = label(si_cells(), [PotentialsDB().get(SW)], tmp_path / "labels.sqlite", chunk_size=4,
                   scheduler=dask_cluster, progress=False)
    assert report.chunks_lost >= 1  # the dead worker's running chunk, and any queued there
    labels, failures = snapshot(tmp_path / "labels.sqlite")
    assert not failures
    assert_same_labels(labels, reference)


def test_a_dft_file_with_a_nan_position_is_refused_naming_the_frame(tmp_path):
    """A user's DFT file never gets as far as labelling with such a frame."""
    from ase.calculators.singlepoint import SinglePointCalculator

    from eip2nn.data.files import DataError
    from eip2nn.data.user import load_user_data
    frames = si_cells(6)
    for atoms in frames:
        atoms.calc = SinglePointCalculator(atoms, energy=-5.0 * len(atoms), forces=np.zeros((len(atoms), 3)))
    frames[4].positions[2] = np.nan
    write(tmp_path / "dft.xyz", frames)
    with pytest.raises(DataError) as err:
        load_user_data(str(tmp_path / "dft.xyz"))
    assert "dft.xyz: frame 4: non-finite positions" in str(err.value)


def test_scoring_eips_against_dft_runs_on_the_cluster(tmp_path, dask_cluster):
    """`eip2nn score-eips --scheduler`: the labelling job behind it labels on Dask and compares with DFT."""
    from eip2nn.keys import REF_ENERGY, REF_FORCES
    from eip2nn.labelling.benchmark_job import label_against_dft
    structures = si_cells()
    for k, atoms in enumerate(structures):  # stand-in DFT labels: any numbers serve to compare with
        atoms.info[REF_ENERGY] = -5.4 * len(atoms) + 0.01 * k
        atoms.arrays[REF_FORCES] = np.zeros((len(atoms), 3))
    result = label_against_dft(structures, ["si"], "test", tmp_path / "labels.sqlite", eip_ids=[SW],
                               progress=False, scheduler=dask_cluster.scheduler_address)
    assert result.report.scheduler == dask_cluster.scheduler_address
    assert result.report.per_eip[SW].labelled == len(structures)
    assert result.agreement[SW].n_structures == len(structures)
