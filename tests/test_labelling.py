"""The labelling engine and its store: resumable, parallel, failures as data."""

import dataclasses
import socket
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read

from eip2nn.keys import eip_key
from eip2nn.labelling.engine import StaleLabelsError, label
from eip2nn.labelling.export import export_extxyz
from eip2nn.labelling.hashing import structure_hash
from eip2nn.labelling.store import LabelStore
from eip2nn.potentials.db import PotentialsDB
from eip2nn.potentials.evaluator import TOO_CLOSE, UNSUPPORTED_SPECIES

SW, TERSOFF = "lmp_Si_sw", "lmp_Si_tersoff"


@pytest.fixture(scope="module")
def specs():
    db = PotentialsDB()
    return [db.get(SW), db.get(TERSOFF)]


def si_structures(n=12, seed=0):
    """Rattled Si cells of two sizes; the last one has an overlapping pair."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat((1, 1, 1 + i % 2))
        atoms.positions += 0.08 * rng.normal(size=atoms.positions.shape)
        atoms.info["config_id"] = f"test/{i}"
        out.append(atoms)
    out[-1].positions[1] = out[-1].positions[0] + [0.2, 0, 0]
    return out


def snapshot(path):
    with LabelStore(path) as store:
        labels = {(lab.structure_hash, lab.eip_id): (lab.energy, lab.forces, lab.stress)
                  for lab in store.labels()}
        failures = {(f.structure_hash, f.eip_id): f.kind for f in store.failures()}
    return labels, failures


def test_labels_everything_once_and_resumes_without_work(tmp_path, specs):
    structures = si_structures()
    report = label(structures, specs, tmp_path / "s.sqlite", workers=1, progress=False)
    assert report.per_eip[SW].labelled == len(structures) - 1
    assert report.per_eip[SW].failed == {TOO_CLOSE: 1}
    again = label(structures, specs, tmp_path / "s.sqlite", workers=1, progress=False)
    assert all(s.labelled == 0 and s.already_done == len(structures) for s in again.per_eip.values())
    labels, failures = snapshot(tmp_path / "s.sqlite")
    assert len(labels) == 2 * (len(structures) - 1) and len(failures) == 2


def test_parallel_equals_serial_and_duplicates_are_labelled_once(tmp_path, specs):
    structures = si_structures()
    structures.append(structures[0].copy())  # same geometry again
    serial = label(structures, specs, tmp_path / "a.sqlite", workers=1, progress=False)
    parallel = label(structures, specs, tmp_path / "b.sqlite", workers=2, chunk_size=2, progress=False)
    assert serial.n_duplicates == parallel.n_duplicates == 1
    a, fa = snapshot(tmp_path / "a.sqlite")
    b, fb = snapshot(tmp_path / "b.sqlite")
    assert a.keys() == b.keys() and fa == fb
    for key in a:
        assert a[key][0] == pytest.approx(b[key][0], abs=1e-10)
        np.testing.assert_allclose(a[key][1], b[key][1], atol=1e-10)


def test_unsupported_species_recorded_with_reason_not_dropped(tmp_path, specs):
    structures = si_structures(3)
    structures[1][0].symbol = "Ge"
    label(structures, specs, tmp_path / "s.sqlite", workers=1, progress=False)
    with LabelStore(tmp_path / "s.sqlite") as store:
        fails = [f for f in store.failures(SW) if f.kind == UNSUPPORTED_SPECIES]
    assert [f.structure_hash for f in fails] == [structure_hash(structures[1])]
    assert "Ge" in fails[0].reason and SW in fails[0].reason


def test_claims_of_live_processes_are_respected_and_dead_ones_taken_over(tmp_path, specs):
    structures = si_structures(4)[:3]
    path = tmp_path / "s.sqlite"
    hashes = [structure_hash(a) for a in structures]
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        with LabelStore(path) as other:
            other.owner = f"{host}:{live.pid}:0"
            assert other.claim(SW, hashes[:1]) == hashes[:1]
            other.owner = f"{host}:{dead.pid}:0"
            assert other.claim(SW, hashes[1:2]) == hashes[1:2]
        report = label(structures, specs[:1], path, workers=1, progress=False)
    finally:
        live.kill()
        live.wait()
    assert report.per_eip[SW].left_to_others == 1  # the live claim
    assert report.per_eip[SW].labelled == 2  # the free one and the dead process's one


def test_changed_definition_under_same_id_is_refused(tmp_path, specs):
    structures = si_structures(2)
    label(structures, specs[:1], tmp_path / "s.sqlite", workers=1, progress=False)
    changed = dataclasses.replace(specs[0], cutoff=specs[0].cutoff + 1.0)
    with pytest.raises(StaleLabelsError, match=f"eip2nn labels forget-stale .*--eip {SW}"):
        label(structures, [changed], tmp_path / "s.sqlite", workers=1, progress=False)
    with LabelStore(tmp_path / "s.sqlite") as store:
        assert store.forget_stale(TERSOFF, specs[1].content_hash()) == 0  # nothing stale: nothing dropped
        assert store.forget_stale(SW, changed.content_hash()) == 1  # the second structure overlaps: a failure
        assert not list(store.labels(SW)) and not store.failures(SW)
    report = label(structures, [changed], tmp_path / "s.sqlite", workers=1, progress=False)
    assert report.per_eip[SW].labelled == 1 and sum(report.per_eip[SW].failed.values()) == 1


def test_export_roundtrip_has_one_key_per_eip(tmp_path, specs):
    structures = si_structures(4)
    label(structures, specs, tmp_path / "s.sqlite", workers=1, progress=False)
    with LabelStore(tmp_path / "s.sqlite") as store:
        path = export_extxyz(structures, store, [SW, TERSOFF], tmp_path / "out.extxyz")
        stored = {lab.structure_hash: lab for lab in store.labels(SW)}
    frames = read(path, index=":")
    assert len(frames) == len(structures)
    for atoms, original in zip(frames[:-1], structures[:-1]):
        lab = stored[structure_hash(original)]
        assert atoms.info[eip_key(SW, "energy")] == pytest.approx(lab.energy, abs=1e-8)
        np.testing.assert_allclose(atoms.arrays[eip_key(SW, "forces")], lab.forces, atol=1e-8)
        assert eip_key(TERSOFF, "energy") in atoms.info
    assert frames[-1].info[f"{SW}_failure"].startswith(TOO_CLOSE)
    assert structure_hash(frames[0]) == structure_hash(structures[0])  # survives the text round trip


def test_failure_of_a_backend_is_recorded_per_structure(tmp_path, specs):
    broken = dataclasses.replace(specs[0], id="lmp_broken", backend=dataclasses.replace(
        specs[0].backend, pair_style="sw/nonexistent"))
    structures = si_structures(3)[:2]
    report = label(structures, [broken], tmp_path / "s.sqlite", workers=1, progress=False)
    assert report.per_eip["lmp_broken"].failed["backend_error"] == 2
    with LabelStore(tmp_path / "s.sqlite") as store:
        reasons = {f.reason for f in store.failures("lmp_broken")}
    assert any("sw/nonexistent" in r for r in reasons), reasons


def test_main_job_excludes_potentials_fitted_to_the_benchmark(tmp_path, data_dir):
    from eip2nn.labelling.benchmark_job import label_benchmark
    result = label_benchmark("Si", tmp_path / "s.sqlite", workers=1, progress=False,
                             splits=("test",), eip_ids=[SW, TERSOFF])
    assert {s.id for s in result.eligible} == {SW, TERSOFF}
    assert "lmp_Si_snap_zuo2020" in {s.id for s, why in result.excluded if "leakage" in why}
    agreement = result.agreement[SW]
    assert agreement.n_structures == 25
    assert 1.0 < agreement.energy_mae < 1000.0  # meV/atom: an EIP, not DFT
    with pytest.raises(ValueError, match="lmp_Si_snap_zuo2020"):
        label_benchmark("Si", tmp_path / "t.sqlite", workers=1, progress=False,
                        splits=("test",), eip_ids=["lmp_Si_snap_zuo2020"])


def test_structure_hashes_follow_their_definition_in_any_batch():
    """The store's key: sha256 of int64 numbers, positions and cell rounded to 1e-8 Å (-0.0 as 0.0)
    and uint8 pbc, first 32 hex digits, whatever the batch it is computed in (sizes mixed)."""
    import hashlib

    from eip2nn.labelling.hashing import structure_hashes

    def by_definition(atoms):
        h = hashlib.sha256(atoms.numbers.astype(np.int64).tobytes())
        for a in (atoms.positions, atoms.cell.array):
            h.update((np.round(a, 8) + 0.0).tobytes())
        h.update(atoms.pbc.astype(np.uint8).tobytes())
        return h.hexdigest()[:32]

    rng = np.random.default_rng(1)
    frames = []
    for k in range(12):
        atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(1 + k % 2)
        atoms.positions += 0.1 * rng.normal(size=atoms.positions.shape)
        if k % 3 == 0:
            atoms.positions[0] = [-0.0, 1e-10, 0.0]
        if k % 4 == 1:
            atoms.pbc = [True, False, True]
            atoms.numbers[::2] = 32
        frames.append(atoms)
    frames.append(frames[0].copy())
    batch = structure_hashes(frames)
    assert batch == [by_definition(a) for a in frames]
    assert batch == [structure_hash(a) for a in frames]
    assert len(set(batch)) == 12 and batch[0] == batch[-1]
