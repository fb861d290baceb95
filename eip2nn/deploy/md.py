"""Molecular dynamics of an exported model in LAMMPS, driven from Python.

:func:`run_md` writes a LAMMPS input and data file for an ``ase.Atoms`` and a
:class:`~eip2nn.deploy.lammps.Deployment`, runs it through the ``lammps``
module in this process (``every`` steps at a time, so a progress bar moves),
and collects frames into an extxyz trajectory that ``ase.io.read(path, ":")``
reads back with energy and forces on a SinglePointCalculator.

Frames. LAMMPS wants a lower-triangular cell; the structure's cell is
Minkowski-reduced (same lattice, small tilts) and rotated into that frame,
``x_lmp = x @ Q`` (:func:`eip2nn.potentials.frames.lammps_frame`). Every frame
is turned back, ``x = x_lmp @ Q.T`` (forces and velocities alike), so positions,
cell, forces and momenta are in the structure's own frame, atoms in its order.
Positions are unwrapped (LAMMPS ``xu``): frame 0 is the input structure, and
an atom's path is continuous across the cell boundary. A structure periodic in
no direction (a molecule, a cluster) runs in a shrink-wrapped box (``boundary
s s s``), shifted so its atoms start OPEN_MARGIN inside it; frames are shifted
back. Mixed periodicity (a slab without vacuum along its normal) is refused.

Units: LAMMPS ``metal`` inside (ps, Å/ps, bar); eV, Å, eV/Å, fs and K outside.
Temperatures are LAMMPS's ``compute temp`` (3N − 3 degrees of freedom; the
centre-of-mass motion is removed when the velocities are drawn).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.geometry import minkowski_reduce

from eip2nn.deploy.lammps import Deployment
from eip2nn.potentials.frames import inverse_3x3, lammps_frame

ENSEMBLES = ("nvt", "nve")
THERMOSTAT_DAMPING = 100  # Nosé–Hoover damping time, in timesteps
NEIGHBOUR_SKIN = 1.0  # Å; neighbour lists are checked every step and rebuilt when an atom moved skin/2
OPEN_MARGIN = 1.0  # Å between a non-periodic structure's atoms and its starting box
_LAMMPS_VELOCITY_TO_ASE = 1.0 / (1000.0 * units.fs)  # Å/ps -> Å per ASE time unit


class MDResult(NamedTuple):
    """What :func:`run_md` did. Per-frame arrays have one entry per frame written (frame 0 = the start)."""

    trajectory: Path | None  # extxyz file (None when no ``out`` was given)
    input_file: Path | None  # the LAMMPS input beside it, ``<stem>.in.lammps``
    input_text: str  # that input: rerun with ``lmp -in <stem>.in.lammps`` (LAMMPS with the eip2nn plugin)
    steps: int  # MD steps run
    n_atoms: int
    seconds: float  # wall time of the MD loop (set-up and step-0 forces excluded; frame output included)
    atom_steps_per_second: float  # n_atoms * steps / seconds
    frame_steps: np.ndarray  # (F,) int, MD step of each frame
    times: np.ndarray  # (F,) fs
    potential_energies: np.ndarray  # (F,) eV
    kinetic_energies: np.ndarray  # (F,) eV
    total_energies: np.ndarray  # (F,) eV, potential + kinetic
    temperatures: np.ndarray  # (F,) K, LAMMPS compute temp (3N - 3 degrees of freedom)


class _Frame(NamedTuple):
    """The structure's frame in LAMMPS."""

    rotation: np.ndarray  # (3, 3) Q: x_lmp = x @ Q + shift, x = (x_lmp - shift) @ Q.T
    cell: np.ndarray  # (3, 3) lower-triangular LAMMPS cell (rows), Å
    positions: np.ndarray  # (N, 3) wrapped into that cell, Å
    images: np.ndarray  # (N, 3) int: positions + images @ cell = input positions @ Q + shift
    shift: np.ndarray  # (3,) Å; zero for a periodic structure
    periodic: bool  # all three directions periodic (else none: boundary s s s)


def _check(deployment: Deployment, atoms: Atoms, temperature: float, steps: int, timestep: float, every: int,
           ensemble: str, seed: int) -> None:
    """ValueError naming what run_md cannot do with these arguments."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if every < 1:
        raise ValueError(f"every must be >= 1 (steps between frames), got {every}")
    if not timestep > 0:
        raise ValueError(f"timestep must be > 0 fs, got {timestep}")
    if ensemble not in ENSEMBLES:
        raise ValueError(f"ensemble {ensemble!r} is not one of {ENSEMBLES}")
    if not temperature >= 0 or (ensemble == "nvt" and temperature == 0):
        raise ValueError(f"temperature must be > 0 K for nvt and >= 0 K for nve, got {temperature} ({ensemble})")
    if not 0 <= seed < 2**31 - 1:
        raise ValueError(f"seed must be in [0, 2**31 - 2], got {seed}")
    if len(atoms) == 0:
        raise ValueError("the structure has no atoms")
    bad = ~np.isfinite(atoms.positions).all(axis=1)
    if bad.any():
        raise ValueError(f"non-finite positions on {int(bad.sum())} atom(s), first atom {int(np.argmax(bad))}")
    if atoms.pbc.any() and not np.isfinite(atoms.cell.array).all():
        raise ValueError(f"non-finite cell {atoms.cell.array.tolist()}")
    if atoms.pbc.any() and not atoms.pbc.all():
        raise ValueError(f"the structure is periodic along some directions only (pbc {atoms.pbc.tolist()}): make it "
                         "periodic in all three with vacuum wider than the model's interaction range "
                         f"({deployment.metadata.get('interaction_range')} Å) along the open ones, or in none")
    if atoms.pbc.all() and abs(atoms.cell.volume) < 1e-9:
        raise ValueError("the structure's cell has zero volume")
    missing = sorted(set(atoms.get_chemical_symbols()) - set(deployment.species))
    if missing:
        raise ValueError(f"the model ({deployment.model_file}) knows {deployment.species}; "
                         f"the structure also has {missing}")
    if atoms.constraints:
        raise ValueError(f"the structure has ASE constraints {atoms.constraints}, which run_md does not "
                         "translate into LAMMPS fixes; remove them (atoms.set_constraint())")


def _elements_and_masses(deployment: Deployment, atoms: Atoms) -> tuple[list[str], list[float]]:
    """LAMMPS types 1..n: the structure's elements in the model's order, and each one's mass (amu)."""
    symbols = np.array(atoms.get_chemical_symbols())
    masses = atoms.get_masses()
    elements = [s for s in deployment.species if s in set(symbols)]
    out = []
    for element in elements:
        m = np.unique(masses[symbols == element])
        if len(m) != 1:
            raise ValueError(f"atoms of {element} have different masses {m.tolist()}; LAMMPS atom_style atomic "
                             "has one mass per type")
        out.append(float(m[0]))
    return elements, out


def _lammps_frame(atoms: Atoms) -> _Frame:
    n = len(atoms)
    if not atoms.pbc.any():  # an axis-aligned box OPEN_MARGIN around the atoms, shrink-wrapped by LAMMPS
        lo = atoms.positions.min(axis=0) - OPEN_MARGIN
        extent = np.ptp(atoms.positions, axis=0) + 2 * OPEN_MARGIN
        return _Frame(np.eye(3), np.diag(extent), atoms.positions - lo, np.zeros((n, 3), dtype=int), -lo, False)
    reduced, _ = minkowski_reduce(atoms.cell.array)
    frame = lammps_frame(reduced)
    fractional = atoms.positions @ inverse_3x3(reduced)
    images = np.floor(fractional)
    return _Frame(frame.rotation, frame.cell, (fractional - images) @ frame.cell, images.astype(int), np.zeros(3),
                  True)


def write_data_file(path: Path, atoms: Atoms, frame: _Frame, elements: list[str], masses: list[float]) -> None:
    """A LAMMPS data file (atom_style atomic, image flags) of ``atoms`` in ``frame``; atom id = index + 1."""
    (lx, _, _), (xy, ly, _), (xz, yz, lz) = frame.cell.tolist()
    type_of = {e: t for t, e in enumerate(elements, start=1)}
    q = " ".join(f"{v!r}" for v in frame.rotation.ravel())
    lines = [f"LAMMPS data file by eip2nn run_md: {len(atoms)} atoms {atoms.get_chemical_formula()}; "
             f"positions = ASE positions @ Q, Q (row-major) = {q}", "",
             f"{len(atoms)} atoms", f"{len(elements)} atom types", "",
             f"0.0 {lx!r} xlo xhi", f"0.0 {ly!r} ylo yhi", f"0.0 {lz!r} zlo zhi",
             *([f"{xy!r} {xz!r} {yz!r} xy xz yz"] if frame.periodic else []), "", "Masses", ""]
    lines += [f"{t} {m!r}  # {e}" for t, (e, m) in enumerate(zip(elements, masses), start=1)]
    lines += ["", "Atoms  # atomic", ""]
    for i, (symbol, x, n) in enumerate(zip(atoms.get_chemical_symbols(), frame.positions, frame.images), start=1):
        lines.append(f"{i} {type_of[symbol]} {x[0]!r} {x[1]!r} {x[2]!r} {n[0]} {n[1]} {n[2]}")
    path.write_text("\n".join(lines) + "\n")


def md_commands(deployment: Deployment, data_file: Path, elements: list[str], temperature: float, timestep: float,
                every: int, ensemble: str, seed: int, periodic: bool = True) -> list[str]:
    """The LAMMPS commands up to (not including) ``run``."""
    dt_ps = timestep / 1000.0
    cmds = ["units metal", "atom_style atomic", "atom_modify map yes", "boundary " + ("p p p" if periodic else "s s s"),
            "newton on",
            f"read_data {data_file}", *deployment.commands(elements),
            f"neighbor {NEIGHBOUR_SKIN} bin", "neigh_modify every 1 delay 0 check yes", f"timestep {dt_ps!r}"]
    if temperature > 0:
        cmds.append(f"velocity all create {temperature!r} {seed + 1} dist gaussian mom yes rot yes")
    if ensemble == "nvt":
        cmds.append(f"fix md all nvt temp {temperature!r} {temperature!r} {THERMOSTAT_DAMPING * dt_ps!r}")
    else:
        cmds.append("fix md all nve")
    return cmds + ["compute unwrapped all property/atom xu yu zu",
                   "thermo_style custom step time temp pe ke etotal press", "thermo_modify format float %.10g",
                   f"thermo {every}"]


def lammps_input(commands: list[str], steps: int, every: int, atoms: Atoms, temperature: float, timestep: float,
                 ensemble: str, seed: int, stem: str) -> str:
    """The input file's text: a header saying what it is, ``commands``, a dump line to uncomment, ``run``."""
    what = ("NVT (Nosé–Hoover, damping %d steps)" % THERMOSTAT_DAMPING if ensemble == "nvt"
            else "NVE (velocities drawn at the temperature)")
    header = [f"# eip2nn run_md: {what} of {len(atoms)} atoms ({atoms.get_chemical_formula()}) at {temperature} K, "
              f"{steps} steps of {timestep} fs, seed {seed}",
              "# rerun: lmp -in <this file>   (LAMMPS with the eip2nn plugin; positions are in LAMMPS's rotated frame)"]
    dump = (f"# dump traj all custom {every} {stem}.lammpstrj id type xu yu zu fx fy fz  "
            "# frames as LAMMPS sees them (rotated frame)")
    return "\n".join(header + commands + [dump, f"run {steps}"]) + "\n"


def run_md(deployment: Deployment, atoms: Atoms, temperature: float, steps: int, timestep: float = 1.0,
           out: str | Path | None = None, every: int = 10, ensemble: str = "nvt", seed: int = 0,
           progress: bool = True) -> MDResult:
    """MD of ``atoms`` with the exported model ``deployment`` in LAMMPS (this process, the ``lammps`` module).

    ``temperature`` K; ``steps`` of ``timestep`` fs; ``ensemble``: "nvt" (Nosé–Hoover at ``temperature``,
    damping THERMOSTAT_DAMPING steps) or "nve"; velocities are drawn at ``temperature`` (``velocity all create
    T seed+1 dist gaussian mom yes rot yes``; LAMMPS needs a positive seed); the structure's own momenta are
    not used. A frame is taken every ``every`` steps, at step 0, and at the last step. With ``out`` (an
    ``.extxyz`` path) frames go there, the input to ``<stem>.in.lammps``, its data file to ``<stem>.data`` and
    LAMMPS's log to ``<stem>.log.lammps``; without it they go to a temporary folder, removed afterwards, and
    only the per-frame energies come back. A frame's ``info`` has step, time (fs), temperature (K) and
    kinetic_energy (eV); its calculator the potential energy (eV) and forces (eV/Å); it also has momenta.

    Refused with ValueError: steps < 1, elements the model lacks, a cell periodic along some directions only
    (a structure periodic in none runs in a shrink-wrapped box), ASE constraints, atoms of one element with
    different masses.
    """
    from tqdm import tqdm

    from eip2nn.potentials.lammps_backend import import_lammps

    _check(deployment, atoms, temperature, steps, timestep, every, ensemble, seed)
    elements, masses = _elements_and_masses(deployment, atoms)
    frame = _lammps_frame(atoms)
    with tempfile.TemporaryDirectory(prefix="eip2nn-md-") as tmp:
        if out is None:
            folder, stem, trajectory = Path(tmp), "md", None
        else:
            trajectory = Path(out).resolve()
            folder, stem = trajectory.parent, trajectory.stem
            folder.mkdir(parents=True, exist_ok=True)
        data_file = folder / f"{stem}.data"
        write_data_file(data_file, atoms, frame, elements, masses)
        commands = md_commands(deployment, data_file, elements, temperature, timestep, every, ensemble, seed,
                               frame.periodic)
        text = lammps_input(commands, steps, every, atoms, temperature, timestep, ensemble, seed, stem)
        input_file = folder / f"{stem}.in.lammps"
        input_file.write_text(text)
        log = str(folder / f"{stem}.log.lammps") if out is not None else "none"
        lammps = import_lammps()
        lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", log, "-nocite"])
        try:
            lmp.commands_list(commands + ["run 0 post no"])
            if lmp.get_natoms() != len(atoms):
                raise RuntimeError(f"LAMMPS read {lmp.get_natoms()} atoms from {data_file}, not {len(atoms)}")
            writer = _FrameWriter(trajectory, atoms, frame.rotation, frame.shift, timestep)
            try:
                writer.add(lmp, 0)
                done, bar = 0, tqdm(total=steps, unit="step", desc="MD", disable=not progress)
                start = time.perf_counter()
                while done < steps:
                    chunk = min(every, steps - done)
                    lmp.command(f"run {chunk} pre no post no")
                    done += chunk
                    writer.add(lmp, done)
                    bar.update(chunk)
                seconds = time.perf_counter() - start
                bar.close()
            finally:
                writer.close()
        finally:
            lmp.close()
        if out is None:
            input_file = None
    e = writer.energies
    return MDResult(trajectory, input_file, text, steps, len(atoms), seconds, len(atoms) * steps / seconds,
                    np.array(writer.steps), np.array(writer.steps) * timestep, e[:, 0], e[:, 1], e[:, 0] + e[:, 1],
                    e[:, 2])


class _FrameWriter:
    """Reads a frame out of LAMMPS, turns it into the structure's frame and appends it to the trajectory."""

    def __init__(self, path: Path | None, atoms: Atoms, rotation: np.ndarray, shift: np.ndarray, timestep: float):
        self.path, self.rotation, self.shift, self.timestep = path, rotation, shift, timestep
        self.numbers, self.cell, self.pbc = atoms.numbers.copy(), atoms.cell.copy(), atoms.pbc.copy()
        self.masses = atoms.get_masses()
        self.custom_masses = atoms.has("masses")
        self.steps: list[int] = []
        self._energies: list[tuple[float, float, float]] = []
        self._file = open(path, "w") if path is not None else None

    @property
    def energies(self) -> np.ndarray:
        """(F, 3): potential eV, kinetic eV, temperature K."""
        return np.array(self._energies).reshape(-1, 3)

    def add(self, lmp, step: int) -> None:
        pe, ke, temp = (lmp.get_thermo(k) for k in ("pe", "ke", "temp"))
        self.steps.append(step)
        self._energies.append((pe, ke, temp))
        if self._file is None:
            return
        from ase.io.extxyz import write_extxyz

        n = len(self.numbers)
        positions = (np.array(lmp.gather("c_unwrapped", 1, 3)).reshape(n, 3) - self.shift) @ self.rotation.T
        forces = np.array(lmp.gather_atoms("f", 1, 3)).reshape(n, 3) @ self.rotation.T
        velocities = np.array(lmp.gather_atoms("v", 1, 3)).reshape(n, 3) @ self.rotation.T * _LAMMPS_VELOCITY_TO_ASE
        atoms = Atoms(numbers=self.numbers, positions=positions, cell=self.cell, pbc=self.pbc,
                      masses=self.masses if self.custom_masses else None)
        atoms.set_momenta(self.masses[:, None] * velocities)
        atoms.info.update(step=step, time=step * self.timestep, temperature=temp, kinetic_energy=ke)
        atoms.calc = SinglePointCalculator(atoms, energy=pe, forces=forces)
        write_extxyz(self._file, [atoms])
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
