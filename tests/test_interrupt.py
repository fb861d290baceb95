"""Kill a real labelling process mid-way, resume, and compare with an uninterrupted run."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from ase.build import bulk
from ase.io import write

from eip2nn.labelling.store import LabelStore

EIPS = ["lmp_Si_sw", "lmp_Si_tersoff", "lmp_Si_edip", "lmp_Si_meam_spline_lenosky"]


@pytest.fixture(scope="module")
def structures_file(tmp_path_factory):
    rng = np.random.default_rng(7)
    frames = []
    for _ in range(160):
        atoms = bulk("Si", "diamond", a=5.431, cubic=True).repeat(3)  # 216 atoms
        atoms.positions += 0.1 * rng.normal(size=atoms.positions.shape)
        frames.append(atoms)
    path = tmp_path_factory.mktemp("data") / "si.extxyz"
    write(path, frames)
    return path


def label_cmd(path, store):
    return [sys.executable, "-m", "eip2nn", "label", "--file", str(path), "--eip", *EIPS,
            "--labels", str(store), "--workers", "2", "--chunk-size", "2", "--no-progress"]


def n_labels(store):
    if not store.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=5) as db:
            return db.execute("SELECT COUNT(*) FROM labels").fetchone()[0]
    except sqlite3.OperationalError:  # tables not created yet
        return 0


def start_and_wait_for_progress(path, store, min_labels=8, timeout=120):
    proc = subprocess.Popen(label_cmd(path, store), start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + timeout
    while n_labels(store) < min_labels:
        assert proc.poll() is None, f"labelling ended early: {proc.stdout.read()}"
        assert time.time() < deadline, "no progress within the time limit"
        time.sleep(0.05)
    return proc


def snapshot(store):
    with LabelStore(store) as s:
        return {(lab.structure_hash, lab.eip_id): lab.energy for lab in s.labels()}


def run_to_completion(path, store):
    done = subprocess.run(label_cmd(path, store), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, structures_file):
    store = tmp_path / "killed.sqlite"
    proc = start_and_wait_for_progress(structures_file, store)
    os.killpg(proc.pid, signal.SIGKILL)  # the parent and its workers, no chance to clean up
    proc.wait()
    partial = n_labels(store)
    assert 0 < partial < 160 * len(EIPS), "the kill did not land mid-way"
    with sqlite3.connect(store) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] > 0  # left by the dead run

    out = run_to_completion(structures_file, store)
    new = sum(int(line.split()[1]) for line in out.splitlines() if line.split()[:1] in ([e] for e in EIPS))
    assert new == 160 * len(EIPS) - partial  # the resumed run did exactly what was left
    reference = tmp_path / "clean.sqlite"
    run_to_completion(structures_file, reference)

    resumed, clean = snapshot(store), snapshot(reference)
    assert len(resumed) == len(clean) == 160 * len(EIPS)
    assert resumed.keys() == clean.keys()
    for key, energy in clean.items():
        assert resumed[key] == pytest.approx(energy, abs=1e-9)
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0


def test_sigterm_saves_what_is_done_and_releases_claims(tmp_path, structures_file):
    store = tmp_path / "term.sqlite"
    proc = start_and_wait_for_progress(structures_file, store)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "INTERRUPTED" in out
    saved = n_labels(store)
    assert 0 < saved < 160 * len(EIPS)
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT COUNT(*) FROM claims").fetchone()[0] == 0
    run_to_completion(structures_file, store)
    assert n_labels(store) == 160 * len(EIPS)


def test_two_processes_on_one_store_share_the_work(tmp_path, structures_file):
    store = tmp_path / "shared.sqlite"
    script = (
        "import json, sys\n"
        "from eip2nn.data import read_structures\n"
        "from eip2nn.labelling.engine import label\n"
        "from eip2nn.potentials.db import PotentialsDB\n"
        "db = PotentialsDB()\n"
        f"r = label(read_structures({str(structures_file)!r}), [db.get(i) for i in {EIPS!r}],\n"
        f"          {str(store)!r}, workers=1, chunk_size=2, progress=False)\n"
        "print(json.dumps({k: v.labelled for k, v in r.per_eip.items()}))\n")
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    for eip in EIPS:
        done = [r[eip] for r in results]
        assert sum(done) == 160, f"{eip}: {done} (work duplicated or lost)"
    assert min(sum(r.values()) for r in results) > 0, "one process did all the work"
    assert n_labels(store) == 160 * len(EIPS)
