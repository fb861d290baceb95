"""A user's own DFT files: every format reads alike, units and keys are mapped once, bad frames are named."""

import json
import re
import shutil
import tarfile

import ase.db
import numpy as np
import pytest
from ase import Atoms, units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write

from eip2nn.data import (
    BadFrame,
    DataError,
    DataKeys,
    check_dft_data,
    close_pairs,
    load_dataset,
    read_dft_file,
    structure_fingerprints,
)
from eip2nn.keys import CONFIG_ID, DATASET, GROUP, REF_ENERGY, REF_FORCES, REF_STRESS

TIAL = "acedata/TiAl_tutorial.tar.gz"


# --- the same structures in every format ------------------------------------------------------


def _rounded_items(data_dir):
    """mlearn Si test items with positions and forces rounded to the 8 decimals extxyz writes, so that
    every format holds exactly the same numbers."""
    items = json.loads((data_dir / "mlearn/Si/test.json").read_text())
    for item in items:
        for site in item["structure"]["sites"]:
            site["xyz"] = [round(x, 8) for x in site["xyz"]]
        item["outputs"]["forces"] = [[round(f, 8) for f in row] for row in item["outputs"]["forces"]]
    return items


def _bare(atoms, energy_key="energy", forces_key="forces", group_key="config_type"):
    """A fresh Atoms with only geometry and the labels under the given names."""
    out = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
    out.info[energy_key] = atoms.info[REF_ENERGY]
    out.info[group_key] = atoms.info[GROUP]
    out.arrays[forces_key] = atoms.arrays[REF_FORCES].copy()
    return out


def test_the_same_structures_read_alike_from_every_format(data_dir, tmp_path):
    copy = tmp_path / "Si_test.json"
    shutil.copy(data_dir / "mlearn/Si/test.json", copy)
    registry = load_dataset("mlearn/Si/test")
    direct = read_dft_file(copy)
    assert direct.bad == [] and len(direct.structures) == len(registry) == 25
    for a, b in zip(direct.structures, registry):  # the registry's reader and this one agree exactly
        assert a.info[REF_ENERGY] == b.info[REF_ENERGY] and a.info[GROUP] == b.info[GROUP]
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.arrays[REF_FORCES], b.arrays[REF_FORCES])
        np.testing.assert_array_equal(a.info[REF_STRESS], b.info[REF_STRESS])
    assert direct.structures[3].info[CONFIG_ID] == "Si_test.json/3"

    (tmp_path / "rounded.json").write_text(json.dumps(_rounded_items(data_dir)))
    reference = read_dft_file(tmp_path / "rounded.json").structures
    write(tmp_path / "plain.xyz", [_bare(a) for a in reference], format="extxyz")
    write(tmp_path / "renamed.xyz", [_bare(a, "E_dft", "F_dft", "kind") for a in reference], format="extxyz")
    with ase.db.connect(tmp_path / "si.db") as db:
        for a in reference:
            atoms = Atoms(a.numbers, a.positions, cell=a.cell, pbc=True)
            atoms.calc = SinglePointCalculator(atoms, energy=a.info[REF_ENERGY], forces=a.arrays[REF_FORCES])
            db.write(atoms, config_type=a.info[GROUP])

    readings = {
        "extxyz": read_dft_file(tmp_path / "plain.xyz"),
        "extxyz, renamed keys": read_dft_file(tmp_path / "renamed.xyz",
                                              DataKeys(energy="E_dft", forces="F_dft", group="kind")),
        "ASE db": read_dft_file(tmp_path / "si.db"),
    }
    for fmt, data in readings.items():
        assert data.bad == [] and data.frames == list(range(25)), fmt
        assert len(data.structures) == len(reference), fmt
        for a, b in zip(data.structures, reference):
            assert a.calc is None, fmt
            np.testing.assert_array_equal(a.numbers, b.numbers, err_msg=fmt)
            np.testing.assert_array_equal(a.cell.array, b.cell.array, err_msg=fmt)
            np.testing.assert_array_equal(a.positions, b.positions, err_msg=fmt)
            np.testing.assert_array_equal(a.arrays[REF_FORCES], b.arrays[REF_FORCES], err_msg=fmt)
            assert a.info[REF_ENERGY] == b.info[REF_ENERGY], fmt
            assert a.info[GROUP] == b.info[GROUP], fmt
            assert REF_STRESS not in a.info, fmt  # none in these files
    for a, b in zip(reference, registry):  # and the rounding only moved positions/forces by 5e-9
        np.testing.assert_allclose(a.positions, b.positions, rtol=0, atol=5.1e-9)


# --- TiAl: per-atom "force" and a virial in eV --------------------------------------------------


def test_tial_virial_becomes_ase_stress(data_dir, tmp_path):
    path = tmp_path / "TiAl_tutorial.xyz"
    with tarfile.open(data_dir / TIAL) as tar:
        path.write_bytes(tar.extractfile("TiAl_tutorial.xyz").read())
    data = read_dft_file(path, DataKeys(forces="force"))
    assert data.bad == [] and len(data.structures) == 329
    assert set().union(*(set(a.get_chemical_symbols()) for a in data.structures)) == {"Ti", "Al"}
    assert all(a.info[DATASET] == "TiAl_tutorial.xyz" for a in data.structures)

    first = data.structures[0]  # by hand, from the file's first frame
    volume = 2.614036117884091 * 2.6528336296738044 * 3.8250280122051756
    assert first.info[REF_ENERGY] == -1703.64063822
    np.testing.assert_array_equal(first.arrays[REF_FORCES][0], [0.86219, 0.78737, 2.65969])
    assert first.info[GROUP] == "FLD_TiAl"
    xx, yy, zz, yz, xz, xy = first.info[REF_STRESS]
    assert xx == pytest.approx(-5.072173561696366 / volume, rel=1e-12)
    assert yz == pytest.approx(-0.5969893898844183 / volume, rel=1e-12)
    assert xz == pytest.approx(-0.6518229755809941 / volume, rel=1e-12)
    assert xy == pytest.approx(-0.1220123768779895 / volume, rel=1e-12)

    for a, raw in zip(data.structures, read(path, ":")):  # every frame: stress = -virial / volume
        v = raw.info["virial"]
        expected = -np.array([v[0, 0], v[1, 1], v[2, 2], v[1, 2], v[0, 2], v[0, 1]]) / raw.get_volume()
        np.testing.assert_allclose(a.info[REF_STRESS], expected, rtol=1e-12, atol=1e-15)


# --- stress units and sign ------------------------------------------------------------------------


def test_stress_in_gpa_compressive_becomes_ase_tensile_ev_per_a3(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.5)  # squeezed (EMT's lattice constant is ~3.59 Å): ASE stress < 0
    atoms.calc = EMT()
    sigma = atoms.get_stress()  # eV/Å³, ASE Voigt, tensile positive
    assert np.all(sigma[:3] < 0)
    energy, forces = atoms.get_potential_energy(), atoms.get_forces()
    file_gpa = -sigma / units.GPa  # what a "positive = compressive" code prints, in GPa
    xx, yy, zz, yz, xz, xy = file_gpa
    matrix = f"{xx!r} {xy!r} {xz!r} {xy!r} {yy!r} {yz!r} {xz!r} {yz!r} {zz!r}"
    cell = " ".join(repr(x) for x in atoms.cell.array.ravel())
    text = (f"1\nLattice=\"{cell}\" Properties=species:S:1:pos:R:3:forces:R:3 energy={energy!r} "
            f"stress=\"{matrix}\" S_kbar=\"{' '.join(repr(10 * x) for x in file_gpa)}\" pbc=\"T T T\"\n"
            f"Cu 0.0 0.0 0.0 {forces[0, 0]!r} {forces[0, 1]!r} {forces[0, 2]!r}\n")
    (tmp_path / "cu.xyz").write_text(text)

    gpa = read_dft_file(tmp_path / "cu.xyz", stress_units="GPa", stress_sign="compressive").structures[0]
    np.testing.assert_allclose(gpa.info[REF_STRESS], sigma, rtol=1e-12)
    kbar = read_dft_file(tmp_path / "cu.xyz", DataKeys(stress="S_kbar"), stress_units="kbar",
                         stress_sign="compressive").structures[0]  # 6 numbers, ASE Voigt order
    np.testing.assert_allclose(kbar.info[REF_STRESS], sigma, rtol=1e-12)
    as_is = read_dft_file(tmp_path / "cu.xyz").structures[0]  # the default (eV/Å³, tensile) changes nothing
    np.testing.assert_allclose(as_is.info[REF_STRESS], file_gpa, rtol=1e-12)

    item = {"structure": {"lattice": {"matrix": atoms.cell.array.tolist()},
                          "sites": [{"species": [{"element": "Cu"}], "xyz": [0.0, 0.0, 0.0]}]},
            "outputs": {"energy": energy, "forces": forces.tolist(), "stress": (10 * file_gpa).tolist()}}
    (tmp_path / "cu.json").write_text(json.dumps([item]))
    from_json = read_dft_file(tmp_path / "cu.json", stress_units="kbar", stress_sign="compressive").structures[0]
    np.testing.assert_allclose(from_json.info[REF_STRESS], sigma, rtol=1e-12)
    with pytest.raises(ValueError, match="stress_units 'MPa' unknown"):
        read_dft_file(tmp_path / "cu.xyz", stress_units="MPa")


# --- bad data: each problem named by file, frame and what is wrong ----------------------------------


def _si_frames(n=6, seed=0):
    """n rattled 8-atom Si cells with made-up labels (energy eV, forces eV/Å)."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(n):
        atoms = bulk("Si", "diamond", a=5.43, cubic=True)
        atoms.positions += 0.05 * rng.normal(size=atoms.positions.shape)
        atoms.info["energy"] = -43.0 + 0.1 * k
        atoms.info["config_type"] = "rattled"
        atoms.arrays["forces"] = 0.1 * rng.normal(size=(len(atoms), 3))
        frames.append(atoms)
    return frames


def _permuted_and_wrapped_copy(atoms):
    out = atoms[[5, 2, 7, 0, 1, 3, 6, 4]]
    out.positions[0] += out.cell[0]  # the same structure, one atom in the next periodic image
    return out


def _garbled(path):
    lines = path.read_text().splitlines(keepends=True)
    cols = lines[2 * 10 + 3].split()  # frame 2 (10 lines a frame), its second atom
    cols[2] = "1.2.3"
    lines[2 * 10 + 3] = " ".join(cols) + "\n"
    path.write_text("".join(lines))


def _case(name, tmp_path):
    """(train path, test path or None, supported species, file named, frame, problem pattern)."""
    frames, test = _si_frames(), None
    train = tmp_path / "train.xyz"
    supported = None
    if name == "unreadable frame":
        write(train, frames, format="extxyz")
        _garbled(train)
        return train, None, None, train, 2, r"could not be read \(lines 21-30\)"
    if name == "wrong force shape":
        items = []
        for a in frames:
            items.append({"structure": {"lattice": {"matrix": a.cell.array.tolist()},
                                        "sites": [{"species": [{"element": s}], "xyz": p.tolist()}
                                                  for s, p in zip(a.get_chemical_symbols(), a.positions)]},
                          "outputs": {"energy": a.info["energy"], "forces": a.arrays["forces"].tolist()}})
        items[4]["outputs"]["forces"] = items[4]["outputs"]["forces"][:-1]
        train = tmp_path / "train.json"
        train.write_text(json.dumps(items))
        return train, None, None, train, 4, r"forces have shape \(7, 3\), expected \(8, 3\)"
    if name == "missing energy":
        del frames[1].info["energy"]
        frame, problem = 1, r"no energy: looked for info\['energy'\]"
    elif name == "NaN force":
        frames[3].arrays["forces"][2, 1] = np.nan
        frame, problem = 3, r"non-finite forces on 1 atom\(s\), first atom 2"
    elif name == "atoms too close":
        frames[5].positions[1] = frames[5].positions[0] + [0.3, 0.0, 0.0]
        frame, problem = 5, r"atoms [01] and [01] are 0\.300 Å apart \(< 0\.5 Å\)"
    elif name == "unsupported element":
        frames[2].symbols[6] = "Ge"
        supported = {"Si"}
        frame, problem = 2, "element Ge: no candidate EIP supports it"
    elif name == "duplicate":
        frames[4] = _permuted_and_wrapped_copy(frames[1])
        frame, problem = 4, "duplicate of frame 1"
    elif name == "leakage":
        test = tmp_path / "test.xyz"
        write(test, [_si_frames(1, seed=9)[0], _permuted_and_wrapped_copy(frames[2])], format="extxyz")
        write(train, frames, format="extxyz")
        return train, test, None, test, 1, "also in the training file as frame 2: train/test leakage"
    write(train, frames, format="extxyz")
    return train, test, supported, train, frame, problem


CASES = ["unreadable frame", "missing energy", "NaN force", "wrong force shape", "atoms too close",
         "unsupported element", "duplicate", "leakage"]


@pytest.mark.parametrize("name", CASES)
def test_a_bad_frame_is_named_and_refused_or_left_out(name, tmp_path):
    train_path, test_path, supported, bad_file, bad_frame, problem = _case(name, tmp_path)

    def check(on_bad):
        train = read_dft_file(train_path)
        test = read_dft_file(test_path) if test_path else None
        return check_dft_data(train, test, supported, on_bad=on_bad)

    with pytest.raises(DataError) as refused:
        check("error")
    message = str(refused.value)
    assert "1 bad frame(s)" in message
    assert refused.match(f"{re.escape(str(bad_file))}: frame {bad_frame}: {problem}")

    kept = check("skip")
    assert len(kept.omitted) == 1
    omitted = kept.omitted[0]
    assert isinstance(omitted, BadFrame) and (omitted.file, omitted.frame) == (str(bad_file), bad_frame)
    assert str(omitted).startswith(f"{bad_file}: frame {bad_frame}: ")
    kept_train = [a.info[CONFIG_ID] for a in kept.train]
    if test_path is None:
        assert kept_train == [f"{train_path.name}/{k}" for k in range(6) if k != bad_frame]
        assert kept.test == []
    else:  # leakage: the test copy goes, the training one stays
        assert kept_train == [f"train.xyz/{k}" for k in range(6)]
        assert [a.info[CONFIG_ID] for a in kept.test] == ["test.xyz/0"]


def test_empty_missing_and_unreadable_files_are_refused(tmp_path):
    empty = tmp_path / "empty.xyz"
    empty.write_text("")
    with pytest.raises(DataError, match="empty.xyz: the file is empty"):
        read_dft_file(empty)
    blank = tmp_path / "blank.xyz"
    blank.write_text("\n\n")
    with pytest.raises(DataError, match="blank.xyz: no frames in the file"):
        read_dft_file(blank)
    with pytest.raises(DataError, match="nowhere.xyz: no such file"):
        read_dft_file(tmp_path / "nowhere.xyz")
    garbage = tmp_path / "garbage.xyz"
    garbage.write_text("this is not a structure\n")
    with pytest.raises(DataError, match=r"garbage.xyz: frame 0: could not be read: line 1: expected the number"):
        read_dft_file(garbage)


def test_a_broken_count_line_ends_the_read_there(tmp_path):
    path = tmp_path / "cut.xyz"
    write(path, _si_frames(4), format="extxyz")
    lines = path.read_text().splitlines(keepends=True)
    lines[20] = "eight\n"  # frame 2's atom count
    path.write_text("".join(lines))
    data = read_dft_file(path)
    assert data.frames == [0, 1]
    assert [str(b) for b in data.bad] == [
        f"{path}: frame 2: could not be read: line 21: expected the number of atoms, got 'eight'; "
        "the frames after it could not be read either"]


def test_every_problem_is_listed_before_refusing_and_nothing_left_is_an_error(tmp_path):
    frames = _si_frames()
    del frames[0].info["energy"]
    frames[3].positions[2] = frames[3].positions[5] + [0.0, 0.2, 0.0]
    frames[5] = frames[4].copy()
    write(tmp_path / "t.xyz", frames, format="extxyz")
    data = read_dft_file(tmp_path / "t.xyz")
    with pytest.raises(DataError) as refused:
        check_dft_data(data)
    found = [(b.frame, b.problem) for b in refused.value.problems]
    assert [frame for frame, _ in found] == [0, 3, 5]
    assert found[0][1].startswith("no energy") and "Å apart" in found[1][1] and found[2][1] == "duplicate of frame 4"
    assert "3 bad frame(s)" in str(refused.value)
    assert len(check_dft_data(data, on_bad="skip").train) == 3
    with pytest.raises(DataError, match="no training structure left"):
        check_dft_data(data, supported_species={"C"}, on_bad="skip")
    with pytest.raises(ValueError, match="on_bad must be one of"):
        check_dft_data(data, on_bad="ignore")


# --- the two checks on their own ---------------------------------------------------------------------


def test_fingerprints_see_through_order_and_wrapping_but_not_a_real_displacement():
    base = _si_frames(1)[0]
    copy = _permuted_and_wrapped_copy(base)
    copy.positions += 1e-9  # text-format noise
    moved = base.copy()
    moved.positions[3] += [0.0, 0.0, 1e-3]
    strained = base.copy()
    strained.set_cell(base.cell.array * 1.001, scale_atoms=False)
    other_element = base.copy()
    other_element.symbols[0] = "Ge"
    fps = structure_fingerprints([base, copy, moved, strained, other_element, bulk("Si")])
    assert fps[0] == fps[1]
    assert len(set(fps)) == 5 and len(set(fps[1:])) == 5


def test_close_pairs_finds_periodic_images_too():
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    across = atoms.copy()  # atom 0 at the origin; atom 6 0.3 Å from it through the x boundary
    across.positions[6] = [5.43 - 0.3, 0.0, 0.0]
    inside = atoms.copy()
    inside.positions[1] = inside.positions[0] + [0.0, 0.0, 0.4]
    assert close_pairs([atoms, across, inside, atoms]) == [1, 2]
    assert close_pairs([across, inside], min_distance=0.35) == [0]
