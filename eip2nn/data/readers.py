"""Readers turning source files into ``ase.Atoms`` with REF_* labels and metadata.

Every reader returns atoms with ``atoms.calc is None``; labels live under the keys
of :mod:`eip2nn.keys` (energy eV, forces eV/Å, stress eV/Å³ ASE Voigt, tensile > 0).
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from ase import Atoms, units
from ase.data import chemical_symbols
from ase.io import read as ase_read

from ..keys import CONFIG_ID, CONFIG_TYPE, DATASET, DESCRIPTION, GROUP, REF_ENERGY, REF_FORCES, REF_STRESS

# --- stress convention ---------------------------------------------------------
# Assumed convention of mlearn's ``outputs.virial_stress`` (VASP's "in kB" line).
MLEARN_STRESS_UNIT = 0.1 * units.GPa  # 1 kbar in eV/Å³
MLEARN_STRESS_ORDER = ("xx", "yy", "zz", "xy", "yz", "zx")
MLEARN_STRESS_SIGN = -1.0  # mlearn positive = compressive; ASE positive = tensile
_ASE_VOIGT = ("xx", "yy", "zz", "yz", "zx", "xy")  # ASE: xx yy zz yz xz xy
_MLEARN_TO_ASE = np.array([MLEARN_STRESS_ORDER.index(c) for c in _ASE_VOIGT])  # [0, 1, 2, 4, 5, 3]


def mlearn_virial_to_ase_stress(v6) -> np.ndarray:
    """Convert mlearn ``virial_stress`` (6,) to ASE stress (6,) in eV/Å³.

    Input: kbar, order (xx, yy, zz, xy, yz, zx), positive = compressive.
    Output: eV/Å³, Voigt (xx, yy, zz, yz, xz, xy), positive = tensile.
    Verified in tests/test_stress_convention.py.
    """
    v = np.asarray(v6, dtype=float)
    if v.shape != (6,):
        raise ValueError(f"virial_stress must have 6 components, got shape {v.shape}")
    return MLEARN_STRESS_SIGN * MLEARN_STRESS_UNIT * v[_MLEARN_TO_ASE]


# --- mlearn JSON -----------------------------------------------------------------


def mlearn_structure(item: dict) -> Atoms:
    """The geometry of one mlearn item: symbols, Cartesian positions (Å) and cell (Å), pbc.

    ``item["structure"]`` is a pymatgen Structure dict (``lattice.matrix``,
    ``sites[*].species[0].element``, ``sites[*].xyz``). No labels are read here.
    Raises KeyError/IndexError/TypeError/ValueError for a malformed item.
    """
    sites = item["structure"]["sites"]
    cell = np.asarray(item["structure"]["lattice"]["matrix"], dtype=float)
    positions = np.asarray([s["xyz"] for s in sites], dtype=float)
    symbols = [s["species"][0]["element"] for s in sites]
    n = len(sites)
    if "num_atoms" in item and int(item["num_atoms"]) != n:
        raise ValueError(f"num_atoms = {item['num_atoms']} but {n} sites")
    unknown = sorted(set(symbols) - set(chemical_symbols[1:]))
    if unknown:
        raise ValueError(f"unknown element(s) {unknown}")
    if cell.shape != (3, 3):
        raise ValueError(f"lattice matrix has shape {cell.shape}, expected (3, 3)")
    if positions.shape != (n, 3):
        raise ValueError(f"positions have shape {positions.shape}, expected ({n}, 3)")
    for label, value in (("cell", cell), ("positions", positions)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"non-finite {label}")
    return Atoms(symbols=symbols, positions=positions, cell=cell, pbc=True)


def _mlearn_item_to_atoms(item: dict, dataset_name: str, index: int) -> Atoms:
    atoms = mlearn_structure(item)
    out = item["outputs"]
    energy = float(out["energy"])
    forces = np.asarray(out["forces"], dtype=float)
    n = len(atoms)
    if forces.shape != (n, 3):
        raise ValueError(f"forces have shape {forces.shape}, expected ({n}, 3)")
    stress = mlearn_virial_to_ase_stress(out["virial_stress"])
    for label, value in (("energy", energy), ("forces", forces), ("virial_stress", stress)):
        if not np.all(np.isfinite(value)):
            raise ValueError(f"non-finite {label}")
    atoms.info[REF_ENERGY] = energy
    atoms.arrays[REF_FORCES] = forces
    atoms.info[REF_STRESS] = stress
    atoms.info[GROUP] = str(item.get("group", "unknown"))
    atoms.info[DESCRIPTION] = str(item.get("description", ""))
    atoms.info[CONFIG_ID] = f"{dataset_name}/{index}"
    atoms.info[DATASET] = dataset_name
    return atoms


def read_mlearn_json(path, dataset_name: str) -> list[Atoms]:
    """Read an mlearn ``training.json``/``test.json`` (list of pymatgen-style dicts).

    Sets REF_ENERGY (total, eV), REF_FORCES ((n, 3), eV/Å), REF_STRESS ((6,), eV/Å³),
    GROUP, DESCRIPTION, CONFIG_ID ``"<dataset_name>/<index>"`` and DATASET.
    Raises ValueError naming the file, the structure index and the problem.
    """
    path = Path(path)
    with open(path) as fh:
        items = json.load(fh)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list, got {type(items).__name__}")
    structures = []
    for index, item in enumerate(items):
        try:
            structures.append(_mlearn_item_to_atoms(item, dataset_name, index))
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            problem = f"missing key {exc}" if isinstance(exc, KeyError) else str(exc)
            raise ValueError(f"{path}: structure {index}: {problem}") from exc
    return structures


# --- extended XYZ ----------------------------------------------------------------


def _move_labels(atoms: Atoms, energy_key: str, forces_key: str) -> None:
    """Move energy/forces from info, arrays or a SinglePointCalculator to REF_* keys."""
    results = atoms.calc.results if atoms.calc is not None else {}
    if REF_ENERGY not in atoms.info:
        if energy_key in atoms.info:
            atoms.info[REF_ENERGY] = float(atoms.info.pop(energy_key))
        elif results.get("energy") is not None:
            atoms.info[REF_ENERGY] = float(results["energy"])
        else:
            raise ValueError(f"no energy (looked for info[{energy_key!r}] and calc energy)")
    if REF_FORCES not in atoms.arrays:
        for key in (forces_key, "forces"):
            if key in atoms.arrays:
                atoms.arrays[REF_FORCES] = np.array(atoms.arrays.pop(key), dtype=float)
                break
        else:
            if results.get("forces") is None:
                raise ValueError(f"no forces (looked for arrays[{forces_key!r}] and calc forces)")
            atoms.arrays[REF_FORCES] = np.array(results["forces"], dtype=float)
    atoms.calc = None
    forces = atoms.arrays[REF_FORCES]
    if forces.shape != (len(atoms), 3):
        raise ValueError(f"forces have shape {forces.shape}, expected ({len(atoms)}, 3)")
    if not (np.isfinite(atoms.info[REF_ENERGY]) and np.all(np.isfinite(forces))):
        raise ValueError("non-finite energy or forces")


def _read_extxyz(fileobj_or_path, source: str, dataset_name: str, energy_key: str,
                 forces_key: str) -> list[Atoms]:
    frames = ase_read(fileobj_or_path, index=":", format="extxyz")
    for index, atoms in enumerate(frames):
        try:
            _move_labels(atoms, energy_key, forces_key)
        except ValueError as exc:
            raise ValueError(f"{source}: frame {index}: {exc}") from exc
        atoms.info.setdefault(GROUP, str(atoms.info.get(CONFIG_TYPE, "unknown")))
        atoms.info.setdefault(CONFIG_ID, f"{dataset_name}/{index}")
        atoms.info.setdefault(DATASET, dataset_name)
    return frames


def read_extxyz(path_or_fileobj, dataset_name: str, energy_key: str = "energy",
                forces_key: str = "force") -> list[Atoms]:
    """Read an extended XYZ file into atoms with REF_ENERGY (eV) and REF_FORCES (eV/Å).

    Energy is taken from ``info[energy_key]`` or the calculator ASE attaches; forces
    from ``arrays[forces_key]``/``arrays["forces"]`` or the calculator. Frames already
    carrying REF_* keys are kept as they are; existing CONFIG_ID/DATASET are kept,
    otherwise set to ``"<dataset_name>/<index>"`` and ``dataset_name``. GROUP is
    ``info["config_type"]`` or ``"unknown"``. Missing energy or forces: ValueError
    naming the file and frame index.
    """
    source = getattr(path_or_fileobj, "name", None) or str(path_or_fileobj)
    return _read_extxyz(path_or_fileobj, source, dataset_name, energy_key, forces_key)


def read_extxyz_from_tar(tar_path, member: str, dataset_name: str, energy_key: str = "energy",
                         forces_key: str = "force") -> list[Atoms]:
    """Read extended XYZ member ``member`` of the tar archive ``tar_path`` (in memory)."""
    with tarfile.open(tar_path, "r:*") as tar:
        try:
            fh = tar.extractfile(member)
        except KeyError:
            raise ValueError(f"{tar_path}: no member {member!r}; members: {tar.getnames()}") from None
        if fh is None:
            raise ValueError(f"{tar_path}: member {member!r} is not a regular file")
        text = fh.read().decode()
    return _read_extxyz(io.StringIO(text), f"{tar_path}:{member}", dataset_name, energy_key, forces_key)


# --- any file ASE reads (labels optional) --------------------------------------------


def read_structures(path) -> list[Atoms]:
    """Read every frame of any file ASE can read, for labelling.

    Labels are optional here: energy/forces found in ``info``/``arrays`` or on
    an attached calculator move to REF_* keys (as in :func:`read_extxyz`);
    frames without them stay unlabelled. CONFIG_ID is ``"<file name>/<index>"``
    unless the file has one.
    """
    path = Path(path)
    try:
        frames = ase_read(path, index=":")
    except Exception as exc:  # ASE raises many types; name the file and re-raise
        raise ValueError(f"{path}: could not read structures: {type(exc).__name__}: {exc}") from exc
    for index, atoms in enumerate(frames):
        has_energy = "energy" in atoms.info or REF_ENERGY in atoms.info or (
            atoms.calc is not None and atoms.calc.results.get("energy") is not None)
        if has_energy:
            try:
                _move_labels(atoms, "energy", "force")
            except ValueError as exc:
                raise ValueError(f"{path}: frame {index}: {exc}") from exc
        atoms.calc = None
        atoms.info.setdefault(CONFIG_ID, f"{path.name}/{index}")
        atoms.info.setdefault(DATASET, path.name)
    return frames


def hide_dft_labels(atoms: Atoms) -> Atoms:
    """A copy of ``atoms`` without calculator or REF_* (DFT) labels: an unlabelled structure."""
    out = atoms.copy()
    out.calc = None
    out.info.pop(REF_ENERGY, None)
    out.info.pop(REF_STRESS, None)
    out.arrays.pop(REF_FORCES, None)
    return out
