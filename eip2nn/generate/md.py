"""Molecular dynamics with an EIP inside LAMMPS, for new structures at a temperature.

NVT with a Nosé–Hoover thermostat (damping 100 time steps), velocities drawn
from the Maxwell–Boltzmann distribution at the target temperature (seeded,
zero total momentum). Snapshots every ``every`` steps after ``equilibrate``
steps. LAMMPS ``metal`` units: time step in ps (we take fs), T in K.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from eip2nn.potentials.backends import backend, make_evaluator, md_backends
from eip2nn.potentials.spec import PotentialSpec


def require_md(spec: PotentialSpec, key: str = "") -> None:
    """Raise ValueError (prefixed by the config ``key``, if given) unless ``spec``'s backend runs MD."""
    if not backend(spec.backend_type).runs_md:
        names = "/".join(md_backends())
        raise ValueError(f"{key + ': ' if key else ''}MD runs inside LAMMPS; {spec.id} is a {spec.backend_type} "
                         f"potential. Choose a {names} entry (eip2nn potentials list --backend {names})")


def lammps_md(atoms: Atoms, spec: PotentialSpec, temperature: float, snapshots: int, every: int,
              equilibrate: int, timestep_fs: float, seed: int) -> list[tuple[int, Atoms]]:
    """[(MD step, structure)] of ``snapshots`` snapshots; the seed ``atoms`` is untouched.

    ``spec``'s backend must run MD (:func:`require_md`). Raises if LAMMPS fails (e.g. lost atoms).
    """
    require_md(spec)
    if not 1 <= seed < 2 ** 31 or temperature <= 0:
        raise ValueError(f"MD needs a seed in [1, 2^31) and T > 0 K, got seed {seed}, T {temperature}")
    evaluator = make_evaluator(spec)
    try:
        lmp = evaluator.load(atoms)
        dt_ps = timestep_fs / 1000.0
        lmp.commands_list([
            "neighbor 1.0 bin", "neigh_modify every 1 delay 0 check yes",  # a skin for dynamics
            f"timestep {dt_ps!r}",
            f"velocity all create {temperature!r} {seed} dist gaussian mom yes rot no",
            f"fix eip2nn_nvt all nvt temp {temperature!r} {temperature!r} {100 * dt_ps!r}",
        ])
        if equilibrate:
            lmp.command(f"run {equilibrate} post no")
        out = []
        for k in range(snapshots):
            lmp.command(f"run {every} post no")
            snap = atoms.copy()
            snap.calc = None
            snap.positions = evaluator.positions()
            snap.wrap()
            out.append((equilibrate + (k + 1) * every, snap))
        return out
    finally:
        evaluator.close()


def mean_displacement(a: Atoms, b: Atoms) -> float:
    """Mean minimum-image displacement between two snapshots of the same atoms, Å."""
    from ase.geometry import find_mic

    d, _ = find_mic(b.positions - a.positions, a.cell, a.pbc)
    return float(np.linalg.norm(d, axis=1).mean())
