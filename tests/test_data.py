"""Tests of the data layer on the real mirrored files (EIP2NN_DATA_DIR)."""

import json
import shutil
import warnings

import numpy as np
import pytest

from eip2nn.data import (
    ChecksumError,
    DataUnavailableError,
    get_dataset,
    list_datasets,
    load_dataset,
    nested_fractions,
    read_extxyz,
    read_mlearn_json,
    registry,
    resolve,
    train_val_split,
)
from eip2nn.keys import CONFIG_ID, DATASET, GROUP, REF_ENERGY, REF_FORCES, REF_STRESS

# Configurations per file: data README table; Cu/Ni train counted in the ACEData archive.
COUNTS = {
    ("Si", "train"): 214, ("Si", "test"): 25,
    ("Mo", "train"): 194, ("Mo", "test"): 23,
    ("Ge", "train"): 228, ("Ge", "test"): 25,
    ("Li", "train"): 241, ("Li", "test"): 29,
    ("Cu", "train"): 262, ("Cu", "test"): 31,
    ("Ni", "train"): 263, ("Ni", "test"): 31,
}

_loaded = {}


def _load(name):
    if name not in _loaded:
        _loaded[name] = load_dataset(name)
    return _loaded[name]


def test_registry_names():
    names = list_datasets()
    assert len(names) == 24
    for el, split in COUNTS:
        assert f"mlearn/{el}/{split}" in names and f"acedata/{el}/{split}" in names
    for name in names:
        ds = get_dataset(name)
        assert ds.source_tag == "mlearn"
        assert registry._MLEARN_COMMIT in ds.files["data"].url or registry._ACEDATA_COMMIT in ds.files["data"].url
    assert get_dataset("mlearn/Cu/train").fmt == "extxyz-in-tar"
    assert get_dataset("mlearn/Cu/train").member == "ZuoEtAl2020/Cu_train.xyz"
    with pytest.raises(ValueError, match="mlearn/Si/train"):
        get_dataset("mlearn/Xx/train")


@pytest.mark.parametrize("name", list_datasets())
def test_dataset_resolves_and_counts(data_dir, name):
    ds = get_dataset(name)
    path = resolve(ds.files["data"])
    assert path == data_dir / ds.files["data"].relpath
    assert registry.sha256_of(path) == ds.files["data"].sha256
    structures = _load(name)
    assert len(structures) == COUNTS[(ds.element, ds.split)]
    for i, atoms in enumerate(structures):
        assert atoms.calc is None
        assert set(atoms.get_chemical_symbols()) == {ds.element}
        assert isinstance(atoms.info[REF_ENERGY], float)
        assert atoms.arrays[REF_FORCES].shape == (len(atoms), 3)
        assert atoms.info[CONFIG_ID] == f"{name}/{i}"
        assert atoms.info[DATASET] == name
        assert GROUP in atoms.info
        if ds.fmt == "mlearn-json":
            assert atoms.info[REF_STRESS].shape == (6,)
            assert np.all(atoms.pbc)


def test_mlearn_and_acedata_agree_si_train(data_dir):
    a = _load("mlearn/Si/train")
    b = _load("acedata/Si/train")
    assert len(a) == len(b)
    ea = np.array([x.info[REF_ENERGY] for x in a])
    eb = np.array([x.info[REF_ENERGY] for x in b])
    order = np.arange(len(b))
    if not np.allclose(ea, eb, rtol=0, atol=1e-6):
        order = np.array([int(np.argmin(np.abs(eb - e))) for e in ea])
        warnings.warn(f"Si train: mlearn and ACEData orders differ; matched by energy "
                      f"({int(np.sum(order != np.arange(len(b))))} configurations moved)")
        assert len(set(order.tolist())) == len(b), "energy matching is not one-to-one"
    for i, j in enumerate(order):
        x, y = a[i], b[j]
        assert len(x) == len(y), f"config {i}"
        assert abs(x.info[REF_ENERGY] - y.info[REF_ENERGY]) < 1e-6, f"config {i}"
        np.testing.assert_allclose(x.arrays[REF_FORCES], y.arrays[REF_FORCES], rtol=0, atol=1e-6)
        np.testing.assert_allclose(x.cell[:], y.cell[:], rtol=0, atol=1e-6)
        np.testing.assert_allclose(x.positions, y.positions, rtol=0, atol=1e-6)


def test_corrupted_mirror_raises(data_dir, tmp_path, monkeypatch):
    ds = get_dataset("mlearn/Si/test")
    bad = tmp_path / "mirror" / ds.files["data"].relpath
    bad.parent.mkdir(parents=True)
    shutil.copyfile(data_dir / ds.files["data"].relpath, bad)
    with open(bad, "ab") as fh:
        fh.write(b" ")
    monkeypatch.setenv("EIP2NN_DATA_DIR", str(tmp_path / "mirror"))
    with pytest.raises(ChecksumError) as err:
        resolve(ds.files["data"])
    assert str(bad) in str(err.value) and ds.files["data"].sha256 in str(err.value)


def _isolate(tmp_path, monkeypatch):
    monkeypatch.setenv("EIP2NN_DATA_DIR", str(tmp_path / "empty_mirror"))
    monkeypatch.setenv("EIP2NN_CACHE_DIR", str(tmp_path / "cache"))


def test_missing_file_without_network(tmp_path, monkeypatch):
    _isolate(tmp_path, monkeypatch)

    def no_network(url, dest):
        raise OSError("network unreachable")

    monkeypatch.setattr(registry, "_download", no_network)
    datafile = get_dataset("mlearn/Si/test").files["data"]
    with pytest.raises(DataUnavailableError) as err:
        resolve(datafile)
    msg = str(err.value)
    assert datafile.url in msg and "EIP2NN_DATA_DIR" in msg and str(tmp_path / "empty_mirror") in msg
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_download_into_cache(data_dir, tmp_path, monkeypatch):
    datafile = get_dataset("mlearn/Si/test").files["data"]
    source = data_dir / datafile.relpath
    _isolate(tmp_path, monkeypatch)
    monkeypatch.setattr(registry, "_download", lambda url, dest: dest.write(source.read_bytes()))
    path = resolve(datafile)
    assert path == tmp_path / "cache" / datafile.relpath
    assert path.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in path.parent.iterdir()) == ["test.json"]


def test_bad_download_leaves_no_file(tmp_path, monkeypatch):
    _isolate(tmp_path, monkeypatch)
    monkeypatch.setattr(registry, "_download", lambda url, dest: dest.write(b"not the file"))
    datafile = get_dataset("mlearn/Si/test").files["data"]
    with pytest.raises(ChecksumError, match=datafile.url):
        resolve(datafile)
    assert [p for p in (tmp_path / "cache").rglob("*") if p.is_file()] == []


def test_malformed_mlearn_json(data_dir, tmp_path):
    items = json.loads((data_dir / "mlearn/Si/test.json").read_text())[:5]
    items[3]["outputs"]["forces"] = items[3]["outputs"]["forces"][:-1]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(items))
    with pytest.raises(ValueError, match=r"bad\.json: structure 3: forces have shape"):
        read_mlearn_json(bad, "test/bad")
    items[3]["outputs"]["forces"] = items[2]["outputs"]["forces"]  # restore a valid-shaped item
    items[1]["num_atoms"] += 1
    bad.write_text(json.dumps(items))
    with pytest.raises(ValueError, match="structure 1: num_atoms"):
        read_mlearn_json(bad, "test/bad")


def test_read_extxyz_energy_and_forces_layouts(tmp_path):
    plain = tmp_path / "plain.xyz"
    plain.write_text(
        "2\n"
        'Lattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:force:R:3 energy=-1.5 '
        "config_type=dimer pbc=\"T T T\"\n"
        "Si 0 0 0 0.1 0.2 0.3\n"
        "Si 1 1 1 -0.1 -0.2 -0.3\n"
    )
    (atoms,) = read_extxyz(plain, "test/plain")
    assert atoms.calc is None
    assert atoms.info[REF_ENERGY] == -1.5
    np.testing.assert_allclose(atoms.arrays[REF_FORCES], [[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]])
    assert atoms.info[GROUP] == "dimer"
    assert atoms.info[CONFIG_ID] == "test/plain/0" and atoms.info[DATASET] == "test/plain"
    assert "energy" not in atoms.info and "force" not in atoms.arrays

    ref = tmp_path / "ref.xyz"
    ref.write_text(
        "1\n"
        'Lattice="5 0 0 0 5 0 0 0 5" Properties=species:S:1:pos:R:3:REF_forces:R:3 REF_energy=-2.0 '
        "pbc=\"T T T\"\n"
        "Si 0 0 0 0.5 0 0\n"
    )
    (atoms,) = read_extxyz(ref, "test/ref")
    assert atoms.calc is None and atoms.info[REF_ENERGY] == -2.0 and atoms.info[GROUP] == "unknown"
    np.testing.assert_allclose(atoms.arrays[REF_FORCES], [[0.5, 0, 0]])

    missing = tmp_path / "missing.xyz"
    missing.write_text(plain.read_text() + '1\nLattice="5 0 0 0 5 0 0 0 5" '
                       'Properties=species:S:1:pos:R:3:force:R:3 pbc="T T T"\nSi 0 0 0 0 0 0\n')
    with pytest.raises(ValueError, match=r"missing\.xyz: frame 1: no energy"):
        read_extxyz(missing, "test/missing")


def test_read_extxyz_labels_on_calculator(tmp_path, monkeypatch):
    """ASE may leave energy/forces only on a SinglePointCalculator; they must move to REF_*."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    from eip2nn.data import readers

    atoms = Atoms("Si2", positions=[[0, 0, 0], [1, 1, 1]], cell=[5, 5, 5], pbc=True)
    forces = np.array([[0.1, 0.2, 0.3], [-0.1, -0.2, -0.3]])
    atoms.calc = SinglePointCalculator(atoms, energy=-3.25, forces=forces)
    path = tmp_path / "spc.xyz"
    write(path, atoms, format="extxyz")
    (back,) = read_extxyz(path, "test/spc")
    assert back.calc is None and back.info[REF_ENERGY] == -3.25
    np.testing.assert_allclose(back.arrays[REF_FORCES], forces)

    def calc_only(*args, **kwargs):
        a = atoms.copy()
        a.calc = SinglePointCalculator(a, energy=-3.25, forces=forces)
        return [a]

    monkeypatch.setattr(readers, "ase_read", calc_only)
    (back,) = read_extxyz(path, "test/spc")
    assert back.calc is None and back.info[REF_ENERGY] == -3.25
    np.testing.assert_allclose(back.arrays[REF_FORCES], forces)


def test_nested_fractions():
    fr = [0.1, 0.25, 0.5, 1.0]
    sets = nested_fractions(214, fr, seed=0)
    assert [len(sets[f]) for f in fr] == [22, 54, 107, 214]
    s = [set(sets[f].tolist()) for f in fr]
    assert s[0] < s[1] < s[2] < s[3] == set(range(214))
    for f in fr:
        assert np.all(np.diff(sets[f]) > 0)
    again = nested_fractions(214, fr, seed=0)
    assert all(np.array_equal(sets[f], again[f]) for f in fr)
    other = nested_fractions(214, fr, seed=1)
    assert not np.array_equal(sets[0.1], other[0.1])
    assert len(nested_fractions(5, [0.01], seed=0)[0.01]) == 1
    assert len(nested_fractions(30, [0.1], seed=0)[0.1]) == 3
    with pytest.raises(ValueError):
        nested_fractions(10, [0.0], seed=0)
    with pytest.raises(ValueError):
        nested_fractions(10, [1.5], seed=0)


def test_train_val_split():
    train, val = train_val_split(100, 0.2, seed=3)
    assert len(val) == 20 and len(train) == 80
    assert set(train.tolist()).isdisjoint(val.tolist())
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(100))
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    again = train_val_split(100, 0.2, seed=3)
    assert np.array_equal(val, again[1])
    assert not np.array_equal(val, train_val_split(100, 0.2, seed=4)[1])
    assert len(train_val_split(10, 0.0, seed=0)[1]) == 0
    with pytest.raises(ValueError):
        train_val_split(10, 1.0, seed=0)
