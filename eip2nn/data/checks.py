"""Checks of a user's DFT data before any training, all at once and vectorised where it counts.

:func:`check_dft_data` collects every problem of the training and test files
(frames that could not be read, atoms too close, elements no candidate EIP
supports, repeated structures, test structures also in the training file) and
either refuses the data with one :class:`DataError` naming each bad frame, or
leaves those frames out and says which.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers, chemical_symbols

from eip2nn.potentials.evaluator import TOO_CLOSE, EvaluationError
from eip2nn.potentials.overlap import check_min_distance

from .files import BadFrame, DataError, FileData

__all__ = ["BadFrame", "CheckedData", "DataError", "check_dft_data", "close_pairs", "structure_fingerprints"]

ON_BAD = ("error", "skip")
FINGERPRINT_GRID = 1e-5  # Å: positions and cell are rounded to this before fingerprinting


@dataclass
class CheckedData:
    """The structures that passed :func:`check_dft_data` and the frames left out (``on_bad="skip"``)."""

    train: list[Atoms]
    test: list[Atoms]
    omitted: list[BadFrame] = field(default_factory=list)  # every problem of every frame left out


def close_pairs(structures: list[Atoms], min_distance: float = 0.5) -> list[int]:
    """Indices of the structures with two atoms (periodic images included) closer than ``min_distance`` Å."""
    return [k for k, (kind, _) in _overlaps(structures, min_distance).items() if kind == TOO_CLOSE]


def _overlaps(structures: list[Atoms], min_distance: float) -> dict[int, tuple[str, str]]:
    """{index: (kind, reason)} of the structures that fail matscipy's C neighbour search (or cannot be searched)."""
    out = {}
    for k, atoms in enumerate(structures):
        try:
            check_min_distance(atoms, min_distance)
        except EvaluationError as exc:
            out[k] = (exc.kind, exc.reason)
    return out


def structure_fingerprints(structures: list[Atoms]) -> list[str]:
    """A 32-hex-digit fingerprint of each structure's geometry, equal for the same structure.

    Same = same elements, pbc and cell (rounded to ``FINGERPRINT_GRID`` Å), and the same
    positions up to the order of the atoms and wrapping into the cell (periodic axes),
    rounded to about ``FINGERPRINT_GRID`` Å along each cell vector. A real displacement
    (1e-3 Å) changes it. Rounding is a hash, not a tolerance: a copy written with fewer
    than ~7 decimals can land on the other side of a rounding step and look different.
    Structures of one size are fingerprinted together.
    """
    by_size: dict[int, list[int]] = defaultdict(list)
    for k, atoms in enumerate(structures):
        by_size[len(atoms)].append(k)
    out = [""] * len(structures)
    for n, members in by_size.items():
        group = [structures[k] for k in members]
        m = len(members)
        numbers = np.array([a.numbers for a in group], dtype=np.int64).reshape(m, n)
        positions = np.array([a.positions for a in group], dtype=float).reshape(m, n, 3)
        cells = np.array([a.cell.array for a in group], dtype=float).reshape(m, 3, 3)
        pbc = np.array([a.pbc for a in group], dtype=bool).reshape(m, 3)
        q = _grid_positions(positions, cells, pbc)
        order = np.lexsort((q[..., 2], q[..., 1], q[..., 0], numbers), axis=-1)
        rows = np.concatenate([
            np.take_along_axis(numbers, order, axis=1),
            np.take_along_axis(q, order[..., None], axis=1).reshape(m, 3 * n),
            np.round(cells / FINGERPRINT_GRID).astype(np.int64).reshape(m, 9),
            pbc.astype(np.int64),
        ], axis=1)
        for k, row in zip(members, rows):
            out[k] = hashlib.sha256(row.tobytes()).hexdigest()[:32]
    return out


def _grid_positions(positions: np.ndarray, cells: np.ndarray, pbc: np.ndarray) -> np.ndarray:
    """(m, n, 3) integer positions: along each cell vector in steps of ~FINGERPRINT_GRID Å, wrapped on
    periodic axes (an atom at fractional 1 − ε and one at 0 land on the same step); Cartesian steps
    for a cell without volume."""
    q = np.round(positions / FINGERPRINT_GRID)
    has_volume = np.abs(np.linalg.det(cells)) > 1e-9
    if has_volume.any():
        cell = cells[has_volume]
        steps = np.maximum(np.round(np.linalg.norm(cell, axis=2) / FINGERPRINT_GRID), 1.0)[:, None, :]
        frac = np.einsum("mni,mij->mnj", positions[has_volume], np.linalg.inv(cell))
        t = np.round(frac * steps)
        t = np.where(pbc[has_volume][:, None, :], np.mod(t, steps), t)
        q[has_volume] = t
    return q.astype(np.int64)


def check_dft_data(train: FileData, test: FileData | None = None, supported_species: set[str] | None = None,
                   on_bad: str = "error", min_distance: float = 0.5) -> CheckedData:
    """Check the training (and test) file before any training.

    A frame is bad if it could not be read or lacks valid labels (``FileData.bad``), has two
    atoms closer than ``min_distance`` Å, has an element no candidate EIP supports (when
    ``supported_species`` is given), repeats an earlier structure of its own file (the first
    copy is kept), or — in the test file — is also in the training file (train/test leakage).

    on_bad: ``"error"`` raises one :class:`DataError` listing every problem found;
    ``"skip"`` leaves the bad frames out and lists them in ``omitted``. A test structure
    that leaks is left out of the test set; its training copy stays. DataError also when
    no training (or, with a test file, no test) structure is left.
    """
    if on_bad not in ON_BAD:
        raise ValueError(f"on_bad must be one of {ON_BAD}, got {on_bad!r}")
    train_fp = structure_fingerprints(train.structures)
    train_bad = _problems(train, train_fp, supported_species, min_distance)
    problems = _bad_frames(train, train_bad)
    test_bad: dict[int, list[str]] = {}
    if test is not None:
        test_fp = structure_fingerprints(test.structures)
        test_bad = _problems(test, test_fp, supported_species, min_distance)
        first_in_train: dict[str, int] = {}
        for pos, fp in enumerate(train_fp):
            first_in_train.setdefault(fp, pos)
        for pos, fp in enumerate(test_fp):
            if fp in first_in_train:
                test_bad[pos].append(f"also in the training file as frame {train.frames[first_in_train[fp]]}: "
                                     f"train/test leakage")
        problems += _bad_frames(test, test_bad)
    if problems and on_bad == "error":
        n_frames = len({(p.file, p.frame) for p in problems})
        raise DataError(f"{n_frames} bad frame(s) in the DFT data; fix them, or leave them out "
                        f"(pipeline: data.on_bad: skip; command line: --on-bad skip)", problems)
    kept_train = [a for pos, a in enumerate(train.structures) if not train_bad[pos]]
    if not kept_train:
        raise DataError(f"{train.path}: no training structure left after leaving out the bad frames", problems)
    kept_test = [] if test is None else [a for pos, a in enumerate(test.structures) if not test_bad[pos]]
    if test is not None and not kept_test:
        raise DataError(f"{test.path}: no test structure left after leaving out the bad frames", problems)
    return CheckedData(kept_train, kept_test, problems)


def _problems(data: FileData, fingerprints: list[str], supported_species: set[str] | None,
              min_distance: float) -> dict[int, list[str]]:
    """{position in data.structures: problems} for every structure (an empty list when fine)."""
    structures = data.structures
    out: dict[int, list[str]] = {pos: [] for pos in range(len(structures))}
    for pos, (_, reason) in _overlaps(structures, min_distance).items():
        out[pos].append(reason)
    if supported_species is not None and structures:
        for pos, elements in _unsupported(structures, supported_species).items():
            out[pos] += [f"element {el}: no candidate EIP supports it" for el in elements]
    first: dict[str, int] = {}
    for pos, fp in enumerate(fingerprints):
        if fp in first:
            out[pos].append(f"duplicate of frame {data.frames[first[fp]]}")
        else:
            first[fp] = pos
    return out


def _unsupported(structures: list[Atoms], supported_species: set[str]) -> dict[int, list[str]]:
    """{index: sorted unsupported element symbols} of the structures holding any."""
    unknown = sorted(set(supported_species) - set(atomic_numbers))
    if unknown:
        raise ValueError(f"supported_species: unknown element(s) {unknown}")
    ok = np.zeros(len(chemical_symbols), dtype=bool)
    ok[[atomic_numbers[s] for s in supported_species]] = True
    numbers = np.concatenate([a.numbers for a in structures])
    owner = np.repeat(np.arange(len(structures)), [len(a) for a in structures])
    bad = ~ok[numbers]
    pairs = np.unique(owner[bad] * len(chemical_symbols) + numbers[bad])  # (structure, element) once each
    out: dict[int, list[str]] = defaultdict(list)
    for k, z in zip(*np.divmod(pairs, len(chemical_symbols))):
        out[int(k)].append(chemical_symbols[z])
    return {k: sorted(els) for k, els in out.items()}


def _bad_frames(data: FileData, found: dict[int, list[str]]) -> list[BadFrame]:
    """The file's reading problems and ``found``, as BadFrames in frame order."""
    file = str(data.path)
    out = list(data.bad) + [BadFrame(file, data.frames[pos], problem)
                            for pos, problems in found.items() for problem in problems]
    return sorted(out, key=lambda b: b.frame)
