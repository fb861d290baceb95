"""Read one labelled DFT file of the user's, in any format, frame by frame.

:func:`read_dft_file` maps the file's own field names (:class:`DataKeys`) and
stress units/sign to the keys of :mod:`eip2nn.keys` (energy eV, forces eV/Å,
stress eV/Å³ in ASE Voigt order, positive = tensile), once, here. A frame that
cannot be read or lacks valid labels does not stop the read: it is listed in
:attr:`FileData.bad` for :mod:`eip2nn.data.checks` to report or leave out.
Only a missing, empty or wholly unreadable file raises :class:`DataError`.

Formats: anything ``ase.io`` reads (extended XYZ, VASP OUTCAR and vasprun.xml,
ASE databases, ...) and the mlearn/maml JSON (a list of ``{structure,
outputs: {energy, forces, stress | virial_stress}, group}``; by extension
``.json``, or ``fmt="mlearn-json"``).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np
from ase import Atoms, units

from ..keys import CONFIG_ID, CONFIG_TYPE, DATASET, DESCRIPTION, GROUP, REF_ENERGY, REF_FORCES, REF_STRESS
from .readers import mlearn_structure, mlearn_virial_to_ase_stress
from .registry import sha256_of

# name -> factor from that unit to eV/Å³
STRESS_UNITS: dict[str, float] = {
    "eV/A^3": 1.0,
    "eV/Å^3": 1.0,
    "GPa": units.GPa,
    "kbar": 0.1 * units.GPa,
    "bar": 1e-4 * units.GPa,
}
STRESS_SIGNS = ("tensile", "compressive")  # which sign the file's stress calls positive
FMT_MLEARN_JSON = "mlearn-json"
_MAX_SHOWN = 20  # bad frames listed in a DataError message


@dataclass(frozen=True)
class DataKeys:
    """Field names in the user's file (a pipeline's ``data.keys``)."""

    energy: str = "energy"  # atoms.info, total energy, eV (fallback: the calculator ASE attaches)
    forces: str = "forces"  # atoms.arrays, (n, 3), eV/Å (fallbacks: arrays["force"], calculator forces)
    stress: str = "stress"  # atoms.info, 6 (ASE Voigt xx yy zz yz xz xy), 9 or 3x3, in the file's stress
    #                         units and sign (fallback: calculator stress, ASE's eV/Å³, tensile)
    virial: str = "virial"  # atoms.info, 3x3, 9 or 6 (ASE Voigt), eV; stress = -virial / volume (if no stress)
    group: str = CONFIG_TYPE  # atoms.info, the structure's group; missing -> "unknown"


@dataclass(frozen=True)
class BadFrame:
    """A frame that is left out or refused, and why."""

    file: str
    frame: int  # index of the frame in its file, from 0
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: frame {self.frame}: {self.problem}"


class DataError(ValueError):
    """The user's data cannot be used as it is; the message lists the bad frames.

    ``problems`` holds them (``BadFrame``); the message shows the first 20.
    """

    def __init__(self, message: str, problems=()):
        self.problems = list(problems)
        lines = [message] + [f"  {p}" for p in self.problems[:_MAX_SHOWN]]
        if len(self.problems) > _MAX_SHOWN:
            lines.append(f"  ... and {len(self.problems) - _MAX_SHOWN} more")
        super().__init__("\n".join(lines))


@dataclass
class FileData:
    """What :func:`read_dft_file` read: the labelled structures and the frames it could not use."""

    path: Path
    sha256: str  # of the file's bytes
    structures: list[Atoms]  # REF_* labels, GROUP, CONFIG_ID "<name>/<frame>", DATASET; calc None
    frames: list[int]  # the original frame index of each structure
    bad: list[BadFrame] = field(default_factory=list)  # frames unread or without valid labels


class _Problem(ValueError):
    """One frame's problem, in words (becomes a BadFrame)."""


def read_dft_file(path, keys: DataKeys = DataKeys(), stress_units: str = "eV/A^3", stress_sign: str = "tensile",
                  fmt: str | None = None, name: str | None = None) -> FileData:
    """Read every frame of ``path`` into atoms with REF_ENERGY, REF_FORCES and, when the file has
    stress or a virial, REF_STRESS (see :mod:`eip2nn.keys`).

    keys: the file's field names (:class:`DataKeys`). stress_units: a key of :data:`STRESS_UNITS`,
    the unit of ``info[keys.stress]`` (and of an mlearn ``outputs.stress``). stress_sign:
    ``"tensile"`` (ASE, positive = tensile) or ``"compressive"`` (VASP's "positive = compressive"),
    for that same field; a virial (eV) and a calculator's stress (ASE's eV/Å³) have fixed conventions.
    fmt: an ``ase.io`` format name overriding ASE's guess, or ``"mlearn-json"``. name: DATASET
    and CONFIG_ID prefix (default: the file name). GROUP is ``info[keys.group]`` or ``"unknown"``.

    Frames that cannot be parsed or lack valid labels are returned in ``bad``; for extended XYZ
    each frame is parsed on its own, for other formats a frame that fails ends the read there.
    Raises :class:`DataError` for a missing or empty file, or one from which no frame is read.
    """
    if stress_units not in STRESS_UNITS:
        raise ValueError(f"stress_units {stress_units!r} unknown; expected one of {', '.join(STRESS_UNITS)}")
    if stress_sign not in STRESS_SIGNS:
        raise ValueError(f"stress_sign {stress_sign!r} unknown; expected one of {', '.join(STRESS_SIGNS)}")
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    name = name or path.name
    factor = STRESS_UNITS[stress_units] * (-1.0 if stress_sign == "compressive" else 1.0)
    if fmt == FMT_MLEARN_JSON or (fmt is None and path.suffix.lower() == ".json"):
        frames = _mlearn_frames(path, keys, factor)
    else:
        frames = _ase_frames(path, keys, factor, fmt)

    structures, indices, bad = [], [], []
    for frame, item in enumerate(frames):
        if isinstance(item, _Problem):
            bad.append(BadFrame(str(path), frame, str(item)))
            continue
        atoms, labels = item
        try:
            _finish(atoms, *labels)
        except _Problem as exc:
            bad.append(BadFrame(str(path), frame, str(exc)))
            continue
        atoms.info[CONFIG_ID] = f"{name}/{frame}"
        atoms.info[DATASET] = name
        structures.append(atoms)
        indices.append(frame)
    if not structures and not bad:
        raise DataError(f"{path}: no frames in the file")
    if not structures and all(_unparsed(b) for b in bad):
        raise DataError(f"{path}: no frame could be read", bad)
    return FileData(path, sha256_of(path), structures, indices, bad)


# --- frames of each format: (atoms, (energy, forces, stress, group)) or a _Problem --------

_UNREADABLE = "could not be read"


def _unparsed(bad: BadFrame) -> bool:
    return bad.problem.startswith(_UNREADABLE)


def _mlearn_frames(path: Path, keys: DataKeys, factor: float) -> Iterator:
    try:
        items = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not valid JSON: {exc}") from exc
    if isinstance(items, dict) and "ids" in items:  # an ASE JSON database
        yield from _ase_db_frames(path, keys, factor, "json")
        return
    if not isinstance(items, list):
        raise DataError(f"{path}: expected a JSON list of mlearn structures, got {type(items).__name__}")
    for item in items:
        try:
            atoms = mlearn_structure(item)
            out = item["outputs"]
            if out.get("stress") is not None:
                stress = _stress_from_field(out["stress"], "outputs.stress", factor)
            elif out.get("virial_stress") is not None:
                stress = mlearn_virial_to_ase_stress(out["virial_stress"])
            else:
                stress = None
            if out.get("energy") is None:
                raise _Problem("no energy: looked for outputs.energy")
            if out.get("forces") is None:
                raise _Problem("no forces: looked for outputs.forces")
            group = item.get(keys.group, item.get("group", "unknown"))
            if item.get("description") is not None:
                atoms.info[DESCRIPTION] = str(item["description"])
            yield atoms, (_number(out["energy"], "outputs.energy"), out["forces"], stress, group)
        except _Problem as exc:
            yield exc
        except KeyError as exc:
            yield _Problem(f"{_UNREADABLE}: missing key {exc}")
        except (IndexError, TypeError, ValueError, AttributeError) as exc:
            yield _Problem(f"{_UNREADABLE}: {exc}")


def _ase_frames(path: Path, keys: DataKeys, factor: float, fmt: str | None) -> Iterator:
    from ase.io.formats import UnknownFileTypeError, filetype

    if fmt is None:
        try:
            fmt = filetype(str(path), guess=True)
        except UnknownFileTypeError as exc:
            raise DataError(f"{path}: unknown file format ({exc}); name it with fmt (an ase.io format)") from exc
    if fmt in ("extxyz", "xyz"):
        yield from _extxyz_frames(path, keys, factor)
    elif fmt in ("db", "json"):
        yield from _ase_db_frames(path, keys, factor, fmt)
    else:
        yield from _iread_frames(path, keys, factor, fmt)


def _extxyz_frames(path: Path, keys: DataKeys, factor: float) -> Iterator:
    """Split the text at the atom-count lines and parse each frame alone: one garbled frame costs one frame."""
    from ase.io.extxyz import read_xyz

    try:
        lines = path.read_text().splitlines(keepends=True)
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a text file: {exc}") from exc
    i, n_lines = 0, len(lines)
    while True:
        while i < n_lines and not lines[i].strip():
            i += 1
        if i == n_lines:
            return
        head = lines[i].strip()
        try:
            natoms = int(head)
            if natoms < 0:
                raise ValueError
        except ValueError:
            yield _Problem(f"{_UNREADABLE}: line {i + 1}: expected the number of atoms, got {head[:40]!r}; "
                           f"the frames after it could not be read either")
            return
        end = i + 2 + natoms
        if end > n_lines:
            yield _Problem(f"{_UNREADABLE}: line {i + 1}: {natoms} atoms announced but the file ends "
                           f"after {max(n_lines - i - 2, 0)} atom lines")
            return
        while end < n_lines and lines[end].lstrip().startswith("VEC"):  # old-style lattice lines
            end += 1
        chunk = "".join(lines[i:end])
        try:
            atoms = next(read_xyz(io.StringIO(chunk), 0))
        except Exception as exc:  # ASE raises many types for a malformed frame; it is reported, not lost
            yield _Problem(f"{_UNREADABLE} (lines {i + 1}-{end}): {type(exc).__name__}: {exc}")
        else:
            _fields_from_calc(atoms)
            yield _labels(atoms, keys, factor)
        i = end


def _ase_db_frames(path: Path, keys: DataKeys, factor: float, fmt: str) -> Iterator:
    """Rows of an ASE database; key-value pairs join ``info``, per-atom data ``arrays``."""
    import ase.db

    try:
        rows = ase.db.connect(str(path), type=fmt).select()
        for row in rows:
            atoms = row.toatoms()
            atoms.info.update(row.key_value_pairs)
            for key, value in row.data.items():
                value = np.asarray(value)
                if value.ndim >= 1 and len(value) == len(atoms):
                    atoms.arrays[key] = value
                else:
                    atoms.info[key] = value
            yield _labels(atoms, keys, factor, use_calc=True)
    except Exception as exc:  # ASE's database layer raises many types; the frame is reported
        yield _Problem(f"{_UNREADABLE}: {type(exc).__name__}: {exc}; the frames after it could not be read either")


def _iread_frames(path: Path, keys: DataKeys, factor: float, fmt: str) -> Iterator:
    from ase.io import iread

    frames = iread(str(path), index=":", format=fmt)
    while True:
        try:
            atoms = next(frames)
        except StopIteration:
            return
        except Exception as exc:  # ASE readers raise many types; the frame is reported
            yield _Problem(f"{_UNREADABLE} as {fmt}: {type(exc).__name__}: {exc}; "
                           f"the frames after it could not be read either")
            return
        yield _labels(atoms, keys, factor, use_calc=True)


# --- labels -------------------------------------------------------------------------


def _fields_from_calc(atoms: Atoms) -> None:
    """Put back into info/arrays what ASE's extxyz reader moved to a calculator: in an extxyz
    file these are the file's own fields, in the file's units, not a calculator's results."""
    if atoms.calc is None:
        return
    for key, value in atoms.calc.results.items():
        value = np.asarray(value)
        if value.ndim >= 1 and len(value) == len(atoms) and key not in ("stress",):
            atoms.arrays.setdefault(key, value)
        else:
            atoms.info.setdefault(key, value)
    atoms.calc = None


def _labels(atoms: Atoms, keys: DataKeys, factor: float, use_calc: bool = False):
    """(atoms, (energy, forces, stress or None, group)) from the fields named by ``keys``, or a _Problem."""
    results = atoms.calc.results if (use_calc and atoms.calc is not None) else {}
    info, arrays = atoms.info, atoms.arrays
    try:
        if keys.energy in info:
            energy = _number(info.pop(keys.energy), f"info[{keys.energy!r}]")
        elif results.get("energy") is not None:
            energy = _number(results["energy"], "the calculator's energy")
        else:
            raise _Problem(f"no energy: looked for info[{keys.energy!r}]"
                           + (" and the calculator's energy" if use_calc else ""))
        force_keys = [keys.forces] + (["force"] if keys.forces != "force" else [])
        found = next((k for k in force_keys if k in arrays), None)
        if found is not None:
            forces = arrays.pop(found)
        elif results.get("forces") is not None:
            forces = results["forces"]
        else:
            raise _Problem("no forces: looked for " + ", ".join(f"arrays[{k!r}]" for k in force_keys)
                           + (" and the calculator's forces" if use_calc else ""))
        if info.get(keys.stress) is not None:
            stress = _stress_from_field(info.pop(keys.stress), f"info[{keys.stress!r}]", factor)
        elif info.get(keys.virial) is not None:
            stress = _stress_from_virial(info.pop(keys.virial), f"info[{keys.virial!r}]", atoms)
        elif results.get("stress") is not None:
            stress = _stress_from_field(results["stress"], "the calculator's stress", 1.0)
        else:
            stress = None
    except _Problem as exc:
        return exc
    return atoms, (energy, forces, stress, info.get(keys.group, "unknown"))


def _number(value, what: str) -> float:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise _Problem(f"{what} is not a number: {value!r:.40}") from None
    if array.size != 1:
        raise _Problem(f"{what} has {array.size} values, expected one number")
    return float(array.reshape(()))


def _as_matrix(value, what: str, voigt_ok: bool = True) -> np.ndarray:
    """(3, 3) from 6 (ASE Voigt xx yy zz yz xz xy), 9 or 3x3 numbers; symmetrised."""
    try:
        v = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise _Problem(f"{what} is not numeric: {value!r:.60}") from None
    if v.shape == (6,) and voigt_ok:
        xx, yy, zz, yz, xz, xy = v
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if v.size == 9 and v.shape in ((9,), (3, 3)):
        m = v.reshape(3, 3)
        return 0.5 * (m + m.T)
    raise _Problem(f"{what} has shape {v.shape}; expected 6 (Voigt xx yy zz yz xz xy), 9 or 3x3 values")


def _voigt(m: np.ndarray) -> np.ndarray:
    return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])


def _stress_from_field(value, what: str, factor: float) -> np.ndarray:
    return factor * _voigt(_as_matrix(value, what))


def _stress_from_virial(value, what: str, atoms: Atoms) -> np.ndarray:
    volume = abs(np.linalg.det(atoms.cell.array))
    if not atoms.pbc.all() or not volume > 1e-9:
        raise _Problem(f"{what}: a virial needs a periodic cell with a volume (pbc {atoms.pbc.tolist()}, "
                       f"volume {volume:.3g} Å³)")
    return -_voigt(_as_matrix(value, what)) / volume


def _finish(atoms: Atoms, energy: float, forces, stress, group) -> None:
    """Check geometry and labels, then store them under the REF_* keys (in place)."""
    n = len(atoms)
    if n == 0:
        raise _Problem("no atoms")
    if not np.all(np.isfinite(atoms.positions)):
        raise _Problem("non-finite positions")
    cell = atoms.cell.array
    if not np.all(np.isfinite(cell)):
        raise _Problem("non-finite cell")
    if atoms.pbc.any() and abs(np.linalg.det(cell)) < 1e-9:
        raise _Problem(f"periodic (pbc {atoms.pbc.tolist()}) but the cell {cell.tolist()} has no volume")
    if not np.isfinite(energy):
        raise _Problem(f"non-finite energy {energy}")
    try:
        forces = np.array(forces, dtype=float)
    except (TypeError, ValueError):
        raise _Problem("forces are not numeric") from None
    if forces.shape != (n, 3):
        raise _Problem(f"forces have shape {forces.shape}, expected ({n}, 3)")
    bad = ~np.isfinite(forces).all(axis=1)
    if bad.any():
        raise _Problem(f"non-finite forces on {int(bad.sum())} atom(s), first atom {int(np.argmax(bad))}")
    if stress is not None and not np.all(np.isfinite(stress)):
        raise _Problem("non-finite stress")
    atoms.calc = None
    for key in (REF_ENERGY, REF_STRESS):
        atoms.info.pop(key, None)
    atoms.info[REF_ENERGY] = energy
    atoms.arrays[REF_FORCES] = forces
    if stress is not None:
        atoms.info[REF_STRESS] = np.asarray(stress, dtype=float)
    atoms.info[GROUP] = str(group)


def write_dft_extxyz(structures: list[Atoms], path) -> Path:
    """Write DFT-labelled structures as extended XYZ with the default :class:`DataKeys` names.

    ``energy`` (eV), per-atom ``forces`` (eV/Å), ``stress`` (3x3, eV/Å³, tensile positive, as
    ASE writes it) when present, ``config_type`` from GROUP: :func:`read_dft_file` reads it back.
    """
    from ase.io import write
    from ase.stress import voigt_6_to_full_3x3_stress

    keys = DataKeys()
    out = []
    for atoms in structures:
        copy = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
        copy.info[keys.energy] = float(atoms.info[REF_ENERGY])
        copy.info[keys.group] = str(atoms.info.get(GROUP, "unknown"))
        if REF_STRESS in atoms.info:
            copy.info[keys.stress] = voigt_6_to_full_3x3_stress(np.asarray(atoms.info[REF_STRESS]))
        copy.arrays[keys.forces] = np.asarray(atoms.arrays[REF_FORCES], dtype=float)
        out.append(copy)
    path = Path(path)
    write(path, out, format="extxyz")
    return path
