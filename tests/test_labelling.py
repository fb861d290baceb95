"""The labelling engine and its store: resumable, parallel, failures as data."""

import dataclasses
import socket
import subprocess
import sys

import numpy as np
import pytest
from ase.build import bulk
from ase.io import read
from structures import rattled_si_cells

from eip2nn.keys import eip_key
from eip2nn.labelling.engine import StaleLabelsError, label
from eip2nn.labelling.export import export_extxyz
from eip2nn.labelling.hashing import structure_hash
from eip2nn.labelling.store import LabelRow, LabelStore
from eip2nn.potentials.db import PotentialsDB
from eip2nn.potentials.evaluator import TOO_CLOSE, UNSUPPORTED_SPECIES

SW, TERSOFF = "lmp_Si_sw", "lmp_Si_tersoff"


@pytest.fixture(scope="module")
def specs():
    db = PotentialsDB()
    return [db.get(SW), db.get(TERSOFF)]


def si_structures(n=12, seed=0):
    """Rattled Si cells of two sizes; the last one has an overlapping pair."""
    out = rattled_si_cells(n, seed, noise=0.08)
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
            other.add_structures((h, len(a), a.get_chemical_formula(), "") for h, a in zip(hashes, structures))
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
        np.testing.assert_allclose(atoms.arrays[eip_key(SW, "local_energies")], lab.local_energies, atol=1e-8)
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


# Label store schema 1 as shipped before 2026-11-21: rows keyed by the structure hash.
SCHEMA_1 = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE structures (hash TEXT PRIMARY KEY, n_atoms INTEGER NOT NULL, formula TEXT NOT NULL,
    first_source TEXT NOT NULL);
CREATE TABLE provenance (id INTEGER PRIMARY KEY, eip_id TEXT NOT NULL, spec_hash TEXT NOT NULL,
    info TEXT NOT NULL, UNIQUE (eip_id, spec_hash, info));
CREATE TABLE labels (structure_hash TEXT NOT NULL, eip_id TEXT NOT NULL, energy REAL NOT NULL,
    forces BLOB NOT NULL, stress BLOB, seconds REAL NOT NULL,
    provenance_id INTEGER NOT NULL REFERENCES provenance(id), created_at REAL NOT NULL,
    PRIMARY KEY (structure_hash, eip_id));
CREATE TABLE failures (structure_hash TEXT NOT NULL, eip_id TEXT NOT NULL, kind TEXT NOT NULL,
    reason TEXT NOT NULL, provenance_id INTEGER REFERENCES provenance(id), created_at REAL NOT NULL,
    PRIMARY KEY (structure_hash, eip_id));
CREATE TABLE alignments (eip_id TEXT NOT NULL, reference TEXT NOT NULL, structures_hash TEXT NOT NULL,
    info TEXT NOT NULL, created_at REAL NOT NULL, PRIMARY KEY (eip_id, reference, structures_hash));
CREATE TABLE claims (structure_hash TEXT NOT NULL, eip_id TEXT NOT NULL, owner TEXT NOT NULL,
    claimed_at REAL NOT NULL, PRIMARY KEY (structure_hash, eip_id));
"""


def _schema_1_copy(source, target, drop_structure=None):
    """The rows of the store ``source`` written into a new schema-1 store at ``target``."""
    import sqlite3
    src, dst = sqlite3.connect(source), sqlite3.connect(target)
    dst.executescript(SCHEMA_1)
    hash_of = dict(src.execute("SELECT id, hash FROM structures"))
    dst.executemany("INSERT INTO meta VALUES (?, ?)",
                    [(k, "1" if k == "schema_version" else v) for k, v in src.execute("SELECT * FROM meta")])
    dst.executemany("INSERT INTO structures VALUES (?, ?, ?, ?)",
                    [r for r in src.execute("SELECT hash, n_atoms, formula, first_source FROM structures "
                                            "ORDER BY id") if r[0] != drop_structure])
    for table in ("provenance", "alignments"):
        rows = src.execute(f"SELECT * FROM {table}").fetchall()
        if rows:
            dst.executemany(f"INSERT INTO {table} VALUES ({','.join('?' * len(rows[0]))})", rows)
    dst.executemany("INSERT INTO labels VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [(hash_of[sid], eip, *rest) for eip, sid, *rest in src.execute(
                        "SELECT eip_id, structure_id, energy, forces, stress, seconds, provenance_id, created_at "
                        "FROM labels ORDER BY rowid")])
    dst.executemany("INSERT INTO failures VALUES (?, ?, ?, ?, ?, ?)",
                    [(hash_of[sid], eip, *rest) for eip, sid, *rest in src.execute("SELECT * FROM failures")])
    dst.execute("INSERT INTO claims VALUES (?, ?, 'somehost:1:0', 0.0)", (next(iter(hash_of.values())), SW))
    dst.commit()
    src.close()
    dst.close()


def test_a_schema_1_store_is_migrated_with_every_row(tmp_path, specs):
    structures = si_structures()
    label(structures, specs, tmp_path / "now.sqlite", workers=1, progress=False)
    _schema_1_copy(tmp_path / "now.sqlite", tmp_path / "old.sqlite")
    with LabelStore(tmp_path / "old.sqlite") as store:
        assert store.counts()[SW] == {"labels": len(structures) - 1, "failed:atoms_too_close": 1, "claimed": 1}
        old_order = [(lab.structure_hash, lab.eip_id) for lab in store.labels()]
    (old, old_failures), (now, now_failures) = snapshot(tmp_path / "old.sqlite"), snapshot(tmp_path / "now.sqlite")
    assert old.keys() == now.keys() and old_failures == now_failures
    for key, (energy, forces, stress) in now.items():
        assert old[key][0] == energy
        assert np.array_equal(old[key][1], forces) and np.array_equal(old[key][2], stress)
    with LabelStore(tmp_path / "now.sqlite") as store:
        assert old_order == [(lab.structure_hash, lab.eip_id) for lab in store.labels()]
    report = label(structures, specs, tmp_path / "old.sqlite", workers=1, progress=False)
    assert all(s.labelled == 0 and s.already_done == len(structures) for s in report.per_eip.values())


def test_a_schema_1_store_naming_an_unknown_structure_is_refused_unchanged(tmp_path, specs):
    import sqlite3
    structures = si_structures(3)
    label(structures, specs[:1], tmp_path / "now.sqlite", workers=1, progress=False)
    _schema_1_copy(tmp_path / "now.sqlite", tmp_path / "old.sqlite", drop_structure=structure_hash(structures[0]))
    with pytest.raises(RuntimeError, match="1 labels rows of label store schema 1 name a structure hash missing"):
        LabelStore(tmp_path / "old.sqlite")
    with sqlite3.connect(tmp_path / "old.sqlite") as db:
        assert db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone() == ("1",)
        assert db.execute("SELECT COUNT(*) FROM labels").fetchone() == (2,)  # the third overlaps


def test_what_crosses_to_workers_and_back_is_unchanged():
    """Chunks travel to workers as arrays per run of equal atom counts, labels back as a few arrays."""
    from eip2nn.labelling.packing import pack_geometries, pack_labels, unpack_geometries, unpack_labels
    structures = si_structures(5) + [bulk("Cu", "fcc", a=3.6), bulk("Si", "diamond", a=5.431, cubic=True)]
    structures[-1].pbc = [True, False, True]
    back = unpack_geometries(pack_geometries(structures))
    assert len(back) == len(structures)
    for g, atoms in zip(back, structures):
        assert np.array_equal(g.numbers, atoms.numbers) and np.array_equal(g.positions, atoms.positions)
        assert np.array_equal(g.cell, atoms.cell.array) and np.array_equal(g.pbc, atoms.pbc)
    rng = np.random.default_rng(0)
    labels = [LabelRow(f"h{k}", float(rng.normal()), rng.normal(size=(n, 3)), None if k == 1 else rng.normal(size=6),
                       float(k), None if k == 2 else rng.normal(size=n)) for k, n in enumerate((8, 16, 2, 8))]
    for got, want in zip(unpack_labels(pack_labels(labels)), labels, strict=True):
        assert got[0] == want[0] and got[1] == want[1] and got[4] == want[4]
        assert np.array_equal(got[2], want[2])
        for k in (3, 5):  # stress, local energies
            assert (got[k] is None) if want[k] is None else np.array_equal(got[k], want[k])
    assert unpack_labels(pack_labels([])) == []


def _schema_2_copy(source, target):
    """The store ``source`` as label store schema 2 (before local energies) at ``target``."""
    import shutil
    import sqlite3
    shutil.copy(source, target)
    with sqlite3.connect(target) as db:
        db.execute("ALTER TABLE labels DROP COLUMN local_energies")
        db.execute("UPDATE meta SET value = '2' WHERE key = 'schema_version'")


def local_energies(path, eip_id=None):
    with LabelStore(path) as store:
        return {(lab.structure_hash, lab.eip_id): lab.local_energies for lab in store.labels(eip_id)}


def test_a_schema_2_store_keeps_every_row_and_gains_local_energies_when_asked(tmp_path, specs):
    """Migrating adds the column and keeps each label bit for bit; labelling as before evaluates nothing;
    asking for local energies evaluates only the labels without them, fills those in, leaves the rest."""
    structures = si_structures()
    label(structures, specs, tmp_path / "now.sqlite", workers=1, progress=False)
    _schema_2_copy(tmp_path / "now.sqlite", tmp_path / "old.sqlite")
    (old, old_failures), (now, now_failures) = snapshot(tmp_path / "old.sqlite"), snapshot(tmp_path / "now.sqlite")
    assert old.keys() == now.keys() and old_failures == now_failures and len(old) == 2 * (len(structures) - 1)
    for key, (energy, forces, stress) in now.items():
        assert old[key][0] == energy and np.array_equal(old[key][1], forces) and np.array_equal(old[key][2], stress)
    assert all(v is None for v in local_energies(tmp_path / "old.sqlite").values())
    report = label(structures, specs, tmp_path / "old.sqlite", workers=1, progress=False)
    assert all(s.labelled == 0 for s in report.per_eip.values())

    report = label(structures, specs, tmp_path / "old.sqlite", workers=2, chunk_size=3, progress=False,
                   local_energies=True)
    assert all(s.labelled == len(structures) - 1 and not s.new_failures for s in report.per_eip.values())
    filled, fresh = local_energies(tmp_path / "old.sqlite"), local_energies(tmp_path / "now.sqlite")
    assert filled.keys() == fresh.keys()
    for key, energies in fresh.items():
        assert energies.shape == (len(now[key][1]),)
        np.testing.assert_allclose(filled[key], energies, rtol=0, atol=1e-10)  # other chunks: other round-off
        assert abs(energies.sum() - now[key][0]) < 1e-9
    assert snapshot(tmp_path / "old.sqlite")[0].keys() == now.keys()
    again = label(structures, specs, tmp_path / "old.sqlite", workers=1, progress=False, local_energies=True)
    assert all(s.labelled == 0 for s in again.per_eip.values())


def test_an_eip_without_local_energies_is_not_asked_again(tmp_path):
    """A KIM model without partialParticleEnergy: labels without local energies, stored as asked."""
    db = PotentialsDB()
    eip = "Tersoff_LAMMPS_Tersoff_1988T3_Si"
    if eip not in db.specs:
        pytest.skip(f"{eip} not installed")
    structures = si_structures(4)[:3]
    first = label(structures, [db.get(eip)], tmp_path / "s.sqlite", workers=1, progress=False, local_energies=True)
    assert first.per_eip[eip].labelled == 3
    assert list(local_energies(tmp_path / "s.sqlite").values()) == [None] * 3
    again = label(structures, [db.get(eip)], tmp_path / "s.sqlite", workers=1, progress=False, local_energies=True)
    assert again.per_eip[eip].labelled == 0 and again.per_eip[eip].already_done == 3
