"""SNAP design rows of a structure from LAMMPS's ``compute snap``.

For coefficients β (eV) of one element block, ``pair_style snap`` gives
``E = Σ_i β0 + β · B_i`` (plus ``½ B_i^T α B_i`` when quadratic). ``compute snap``
returns, per element (LAMMPS type), the linear rows of that energy in β:
one energy row ``Σ_i B_i`` (with quadraticflag also ``½ B_k²`` and ``B_k B_l``,
k < l, upper-triangular, as pair_style snap counts them), 3N force rows and
6 virial rows. Its force rows are ``-Σ_i ∂B_i/∂r_j``, so forces are ``+rows · β``;
its virial rows ``W`` (xx yy zz yz xz xy, eV per unit β) give the stress
``-W · β / V`` (eV/Å³, positive = tensile). Both conventions are checked
against ``pair_style snap`` in tests/test_snap.py.

The reference potential is ``pair_style zero``, so the reference column is 0
and dropped. One LAMMPS instance serves every structure, with a new
``compute snap`` for each (the compute sizes its array by the atom count at
its creation and leaks that array at every further run set-up) and a
timestep of its own (or the compute would reuse the previous structure's
neighbour list). A structure that is not periodic in some direction is
put in a cell whose vector there is vacuum longer than the cut-off plus the
atoms' extent: no atom sees an image across it, so its rows are exact
(stress is then undefined: ``None``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers
from ase.geometry import minkowski_reduce

from eip2nn.keys import structure_name
from eip2nn.potentials.frames import inverse_3x3, lammps_frame, matrix_to_voigt, voigt_to_matrix
from eip2nn.potentials.lammps_backend import _LAMMPS_ARGS, NEIGHBOUR_SKIN, import_lammps
from eip2nn.snap.config import SnapConfig

ELEMENT_RADIUS = 0.5  # R of every element in compute snap and the .snapcoeff file; cut-off = rcutfac · 2R = rcutfac Å
ELEMENT_WEIGHT = 1.0  # neighbour weight w of every element
BZEROFLAG = 1  # subtract the isolated atom's bispectrum: β0 is then the isolated atom's energy (pair_style snap default)
SWITCHFLAG = 1  # smooth radial cut-off function (pair_style snap default)
VACUUM_MARGIN = 1.0  # Å of vacuum beyond cut-off + extent along a non-periodic direction
_COMPUTE_ID = "snap"
_PRESSURE_ID = "snap_press"  # the pressure compute that compute snap adds at every run set-up


def n_bispectrum(twojmax: int) -> int:
    """K, the number of bispectrum components for band limit ``twojmax`` (LAMMPS's ordering and count)."""
    return sum(1 for j1 in range(twojmax + 1) for j2 in range(j1 + 1)
               for j in range(j1 - j2, min(twojmax, j1 + j2) + 1, 2) if j >= j1)


def n_per_element(twojmax: int, quadratic: bool) -> int:
    """Columns of one element block (without β0): K, plus K(K+1)/2 products when quadratic."""
    k = n_bispectrum(twojmax)
    return k + k * (k + 1) // 2 if quadratic else k


class DesignRows(NamedTuple):
    """Rows linear in the per-element coefficients β (without β0); columns are element blocks in species order.

    With p columns: energy (eV) = counts · β0 + energy · β; forces (eV/Å) = (forces · β).reshape(n, 3);
    stress (eV/Å³, ASE Voigt, positive = tensile) = stress · β.
    """

    counts: np.ndarray  # (n_species,) atoms of each element
    energy: np.ndarray  # (p,) Σ_i B_i of each element's atoms, per unit β
    forces: np.ndarray  # (3n, p) rows 3j..3j+2 are atom j's x, y, z, in the structure's frame
    stress: np.ndarray | None  # (6,  p) ASE Voigt order, 1/Å³; None unless fully periodic


class BispectrumCalculator:
    """One in-process LAMMPS instance computing :class:`DesignRows` for any number of structures."""

    def __init__(self, species: list[str], cfg: SnapConfig, quadratic: bool):
        unknown = [s for s in species if s not in atomic_numbers]
        if not species or unknown or len(set(species)) != len(species):
            raise ValueError(f"species {species!r}: need distinct chemical symbols")
        self.species = list(species)
        self.cfg = cfg
        self.quadratic = bool(quadratic)
        self.n_columns = n_per_element(cfg.twojmax, quadratic) * len(species)  # p of DesignRows
        self._type_of = {atomic_numbers[s]: t for t, s in enumerate(self.species, start=1)}
        self._lmp = None
        self._has_compute = False  # _COMPUTE_ID is defined
        self._ran = False  # a run has created _PRESSURE_ID
        self._step = 0  # LAMMPS timestep of the next structure

    # -- LAMMPS instance ------------------------------------------------------------
    def _start(self) -> None:
        lmp = empty_lammps(self.species, self.cutoff, [
            "thermo_style custom step pe"])  # tallies the energy compute snap reads as its reference
        self._lmp, self._has_compute, self._ran, self._step = lmp, False, False, 0

    def close(self) -> None:
        if self._lmp is not None:
            self._lmp.close()
            self._lmp = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    @property
    def cutoff(self) -> float:
        """Pair cut-off, Å."""
        return self.cfg.rcutfac * 2 * ELEMENT_RADIUS

    def compute_command(self) -> str:
        cfg, nt = self.cfg, len(self.species)
        return (f"compute {_COMPUTE_ID} all snap {float(cfg.rcutfac)!r} {float(cfg.rfac0)!r} {int(cfg.twojmax)} "
                f"{' '.join([repr(ELEMENT_RADIUS)] * nt)} {' '.join([repr(ELEMENT_WEIGHT)] * nt)} "
                f"rmin0 {float(cfg.rmin0)!r} bzeroflag {BZEROFLAG} switchflag {SWITCHFLAG} quadraticflag {int(self.quadratic)}")

    # -- rows -------------------------------------------------------------------------
    def rows(self, atoms: Atoms, name: str | None = None) -> DesignRows:
        """The design rows of ``atoms``; ValueError/RuntimeError name the structure (``name`` or its CONFIG_ID)."""
        name = name or structure_name(atoms, 0)
        types = self._types(atoms, name)
        cell = _periodic_cell(atoms, self.cutoff, name)
        rcell, _ = minkowski_reduce(cell)
        frame = lammps_frame(rcell)
        frac = atoms.positions @ inverse_3x3(rcell)
        x_lmp = (frac - np.floor(frac)) @ frame.cell
        try:
            array = self._run(frame, x_lmp, types)
        except Exception as e:  # LAMMPS raises plain Exception subclasses
            self.close()  # a failed instance may be in any state: start afresh next time
            raise RuntimeError(f"{name}: LAMMPS compute snap failed: {e}") from e
        return self._split(array, frame.rotation, abs(np.linalg.det(cell)) if atoms.pbc.all() else None, types)

    def _types(self, atoms: Atoms, name: str) -> np.ndarray:
        if len(atoms) == 0:
            raise ValueError(f"{name}: no atoms")
        types = np.array([self._type_of.get(z, 0) for z in atoms.numbers], dtype=np.int64)
        if not types.all():
            missing = sorted(set(atoms[types == 0].get_chemical_symbols()))
            raise ValueError(f"{name}: element(s) {missing} not in the SNAP species {self.species}")
        return types

    def _run(self, frame, x_lmp: np.ndarray, types: np.ndarray) -> np.ndarray:
        """compute snap's global array, (1 + 3n + 6, p + 1), for atoms ``x_lmp`` (Å, LAMMPS frame) in ``frame``."""
        if self._lmp is None:
            self._start()
        lmp, n = self._lmp, len(types)
        (lx, ly, lz), (xy, xz, yz) = map(float, frame.boxhi), map(float, frame.tilts)  # repr: plain numbers
        lmp.command("delete_atoms group all")
        lmp.command(f"change_box all x final 0 {lx!r} y final 0 {ly!r} z final 0 {lz!r} "
                    f"xy final {xy!r} xz final {xz!r} yz final {yz!r} units box")
        lmp.create_atoms(n, list(range(1, n + 1)), types.tolist(), x_lmp.ravel().tolist())
        if lmp.get_natoms() != n:
            raise RuntimeError(f"created {lmp.get_natoms()} atoms instead of {n}")
        # a fresh compute per structure: compute snap sizes its array by the atom count at its creation, and
        # allocates it anew at every run set-up (freeing it only when deleted); the set-up also adds _PRESSURE_ID
        if self._ran:
            lmp.command(f"uncompute {_PRESSURE_ID}")
            self._ran = False
        if self._has_compute:
            lmp.command(f"uncompute {_COMPUTE_ID}")
            self._has_compute = False
        lmp.command(self.compute_command())
        self._has_compute = True
        # a new timestep per structure: LAMMPS rebuilds compute snap's occasional neighbour list
        # only when it is older than the last set-up's step
        self._step += 1
        lmp.command(f"reset_timestep {self._step}")
        lmp.command("run 0 post no")
        self._ran = True
        array = np.array(lmp.numpy.extract_compute(_COMPUTE_ID, 0, 2))  # global style, array type; a copy
        expected = (1 + 3 * n + 6, self.n_columns + 1)
        if array.shape != expected:
            raise RuntimeError(f"compute snap array has shape {array.shape}, expected {expected}")
        return array

    def _split(self, array: np.ndarray, rotation: np.ndarray, volume: float | None, types: np.ndarray) -> DesignRows:
        """DesignRows in the structure's frame from compute snap's array in LAMMPS's (x_lmp = x @ rotation)."""
        n = len(types)
        array = array[:, :-1]  # reference column: pair_style zero
        forces = np.einsum("nkp,jk->njp", array[1:1 + 3 * n].reshape(n, 3, -1), rotation).reshape(3 * n, -1)
        stress = None
        if volume is not None:
            stress = _voigt_rotation(rotation) @ (-array[1 + 3 * n:] / volume)
        counts = np.bincount(types - 1, minlength=len(self.species)).astype(float)
        return DesignRows(counts, array[0].copy(), forces, stress)


def empty_lammps(type_elements: list[str], cutoff: float, extra: list[str] = ()):
    """An in-process LAMMPS (metal units) with an empty periodic box, type t+1 of element ``type_elements[t]``,
    ``pair_style zero`` to ``cutoff`` Å (neighbour lists for computes, no forces), and the ``extra`` commands."""
    lmp = import_lammps().lammps(cmdargs=_LAMMPS_ARGS)
    try:
        lmp.commands_list([
            "units metal", "atom_style atomic", "atom_modify map array sort 0 0", "boundary p p p",
            "region cell prism 0 1 0 1 0 1 0 0 0 units box", f"create_box {len(type_elements)} cell",
            *(f"mass {t} {atomic_masses[atomic_numbers[s]]}" for t, s in enumerate(type_elements, start=1)),
            f"pair_style zero {float(cutoff)!r}", "pair_coeff * *",
            f"neighbor {NEIGHBOUR_SKIN} bin", "neigh_modify every 1 delay 0 check no", *extra])
    except Exception:
        lmp.close()
        raise
    return lmp


def _periodic_cell(atoms: Atoms, cutoff: float, name: str) -> np.ndarray:
    """(3, 3) cell to put ``atoms`` in, Å: its own when fully periodic; else its periodic vectors and,
    along each non-periodic direction, a vacuum vector orthogonal to them, longer than cut-off + the atoms' extent."""
    pbc = np.asarray(atoms.pbc, dtype=bool)
    cell = atoms.cell.array.copy()
    if not pbc.all():
        periodic = cell[pbc]
        # rows of vt beyond the periodic vectors' rank span their orthogonal complement
        normals = np.linalg.svd(periodic)[2][len(periodic):] if len(periodic) else np.eye(3)
        for axis, normal in zip(np.flatnonzero(~pbc), normals):
            extent = np.ptp(atoms.positions @ normal)
            cell[axis] = normal * (extent + cutoff + VACUUM_MARGIN)
    try:
        inverse_3x3(cell)
    except ValueError as e:
        raise ValueError(f"{name}: cell {cell.tolist()} (pbc {pbc.tolist()}): {e}") from None
    return cell


def _voigt_rotation(rotation: np.ndarray) -> np.ndarray:
    """(6, 6) map of ASE Voigt vectors from the LAMMPS frame to the structure's: S = Q S_lmp Q^T."""
    columns = []
    for k in range(6):
        unit = np.zeros(6)
        unit[k] = 1.0
        columns.append(matrix_to_voigt(rotation @ voigt_to_matrix(unit) @ rotation.T))
    return np.array(columns).T
