"""A user's own DFT data: a training file, a test file or a held-out test split, checked once.

:func:`load_user_data` reads the files (:mod:`eip2nn.data.files`), checks them
(:mod:`eip2nn.data.checks`) and returns the structures with what was left out
and the hashes that identify the data (for MLflow tags and reuse). Results are
memoised per process on the files' paths, sizes and mtimes and the reading
options, so the many stages of a pipeline read and check each file once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms

from ..keys import CONFIG_TYPE
from .checks import CheckedData, DataError, check_dft_data, structure_fingerprints
from .files import BadFrame, DataKeys, read_dft_file


@dataclass(frozen=True)
class UserDataOptions:
    """How to read and check the user's files (the pipeline's ``data`` section)."""

    keys: DataKeys = field(default_factory=DataKeys)
    stress_units: str = "eV/A^3"
    stress_sign: str = "tensile"
    fmt: str = ""  # ASE format name; "" = guess from the file
    on_bad: str = "error"  # "error" | "skip"
    test_fraction: float = 0.1  # without a test file: share of the training file held out as the test set
    test_seed: int = 0  # seeds that held-out split (the same for every seed of a study)


@dataclass
class UserData:
    train: list[Atoms]  # every checked training structure (labels on all)
    test: list[Atoms]
    omitted: list[BadFrame]  # frames left out by on_bad="skip", with the reason
    sha256: dict[str, str]  # {"train": file sha256, "test": ...}
    content_sha256: dict[str, str]  # {"train": hash of the kept structures' fingerprints, "test": ...}
    test_note: str  # where the test set comes from, in words


_CACHE: dict[tuple, UserData] = {}


def _file_key(path: str) -> tuple:
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{path}: no such file")
    st = p.stat()
    return str(p.resolve()), st.st_size, st.st_mtime_ns


def content_sha256(structures: list[Atoms]) -> str:
    """sha256 over the structures' fingerprints in order (equal data, equal hash)."""
    return hashlib.sha256("\n".join(structure_fingerprints(structures)).encode()).hexdigest()


def load_user_data(train: str, test: str = "", options: UserDataOptions = UserDataOptions(),
                   supported_species: set[str] | None = None) -> UserData:
    """Read and check ``train`` (and ``test``); without ``test``, hold out a seeded test split.

    Raises :class:`DataError` naming each bad frame (file, frame index, problem)
    unless ``options.on_bad == "skip"``, which leaves them out and lists them.
    Returns copies: callers may change the structures freely.
    """
    key = (_file_key(train), _file_key(test) if test else None, options,
           frozenset(supported_species) if supported_species is not None else None)
    if key not in _CACHE:
        _CACHE[key] = _load(train, test, options, supported_species)
    data = _CACHE[key]
    return UserData([a.copy() for a in data.train], [a.copy() for a in data.test], list(data.omitted),
                    dict(data.sha256), dict(data.content_sha256), data.test_note)


def _read(path: str, options: UserDataOptions):
    return read_dft_file(path, options.keys, options.stress_units, options.stress_sign, options.fmt or None)


def _load(train: str, test: str, options: UserDataOptions, supported_species) -> UserData:
    train_file = _read(train, options)
    test_file = _read(test, options) if test else None
    checked: CheckedData = check_dft_data(train_file, test_file, supported_species, options.on_bad)
    sha = {"train": train_file.sha256}
    if test_file is not None:
        sha["test"] = test_file.sha256
        train_part, test_part = checked.train, checked.test
        note = f"the test file {test} ({len(test_part)} structures)"
    else:
        train_part, test_part = hold_out(checked.train, options.test_fraction, options.test_seed)
        note = (f"{len(test_part)} structures of {train} held out at random (data.test_fraction "
                f"{options.test_fraction:g}, data.test_seed {options.test_seed}); never trained on")
    if not test_part:
        raise DataError(f"{train}: no test structure: give data.test or a data.test_fraction that "
                        f"leaves at least one of {len(checked.train)} structures")
    if not train_part:
        raise DataError(f"{train}: no training structure left after holding out the test set")
    content = {"train": content_sha256(train_part), "test": content_sha256(test_part)}
    return UserData(train_part, test_part, checked.omitted, sha, content, note)


def hold_out(structures: list[Atoms], fraction: float, seed: int) -> tuple[list[Atoms], list[Atoms]]:
    """(kept, held out) by a seeded permutation; ``round(fraction * n)`` held out, at least 1 when n > 1."""
    if not 0.0 < fraction < 1.0:
        raise DataError(f"data.test_fraction must be in (0, 1) without a data.test file, got {fraction}")
    n = len(structures)
    n_test = min(n - 1, max(1, int(round(fraction * n)))) if n > 1 else 0
    perm = np.random.default_rng(seed).permutation(n)
    test_idx = set(perm[:n_test].tolist())
    kept = [a for i, a in enumerate(structures) if i not in test_idx]
    held = [a for i, a in enumerate(structures) if i in test_idx]
    return kept, held


def load_labelled_file(path: str, options: UserDataOptions = UserDataOptions(),
                       supported_species: set[str] | None = None) -> tuple[list[Atoms], list[BadFrame]]:
    """(checked structures, frames left out) of one labelled file, all of it (no held-out split)."""
    checked = check_dft_data(_read(path, options), None, supported_species, options.on_bad)
    return checked.train, checked.omitted


ENERGY_KEYS = ("energy", "Energy", "REF_energy", "dft_energy", "DFT_energy", "total_energy", "free_energy", "E")
FORCES_KEYS = ("forces", "force", "REF_forces", "dft_forces", "DFT_forces", "F")
STRESS_KEYS = ("stress", "REF_stress", "dft_stress", "DFT_stress")
VIRIAL_KEYS = ("virial", "REF_virial", "dft_virial", "DFT_virial")
GROUP_KEYS = (CONFIG_TYPE, "group", "configtype", "config_type_name")


def detect_keys(path: str, fmt: str = "") -> DataKeys:
    """Field names found in the file's first frame (defaults where none of the usual names is present)."""
    from ase.io import read

    if Path(path).suffix == ".json":
        return DataKeys()
    try:
        first = read(path, index=0, format=fmt or None)
    except Exception as exc:  # noqa: BLE001 — any parse error: the checks name the frame later
        raise DataError(f"{path}: frame 0: unreadable: {type(exc).__name__}: {exc}") from exc
    info, arrays = first.info, first.arrays

    def pick(names, where, default):
        return next((k for k in names if k in where), default)

    base = DataKeys()
    return DataKeys(energy=pick(ENERGY_KEYS, info, base.energy), forces=pick(FORCES_KEYS, arrays, base.forces),
                    stress=pick(STRESS_KEYS, info, base.stress), virial=pick(VIRIAL_KEYS, info, base.virial),
                    group=pick(GROUP_KEYS, info, base.group))
