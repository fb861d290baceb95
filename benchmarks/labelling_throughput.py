"""Labelling throughput: eip2nn against a naive loop and the raw-LAMMPS compute limit.

All rows use one potential (Stillinger-Weber Si, LAMMPS ``Si.sw``) on the same
structures, in one run, so the ratios are meaningful on a noisy machine:

- eip2nn ``label()`` with 1 worker and with all workers (fresh store each; the
  wall time includes hashing, claiming and writing the SQLite store, and the
  start-up of the worker processes). Each is also run on the first half of the
  structures: the difference of the two runs is the steady-state rate, free of
  the fixed cost of a call (mainly the workers' start-up), which is printed too;
- naive: ASE's ``LAMMPSlib`` calculator, one ``get_potential_energy/forces/stress``
  per structure (the usual ASE loop);
- bare LAMMPS loop: one instance, positions scattered, ``run 1 pre no`` per
  structure (the set-up skipped, as eip2nn does), no checks and no store: what
  any per-structure labeller can reach at best; and one such loop per core, all
  timed at once in separate processes: what the cores give together, the
  reference for eip2nn's scaling over workers;
- raw LAMMPS: one large cell of the same density, ``run 0`` repeated (no Python
  per structure at all): the per-core compute limit.

The LAMMPS rows use eip2nn's neighbour settings (skin ``NEIGHBOUR_SKIN`` Å), so
the limit is that of the same computation; the naive row keeps ASE's defaults.

Usage: python benchmarks/labelling_throughput.py [--structures 12000] [--repeat-cell 2] [--repeats 3]
(--repeat-cell 4 --structures 1500: the same atoms in 512-atom cells.)
Prints a markdown table; docs/labelling.md quotes it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from eip2nn.labelling.engine import default_workers, label
from eip2nn.potentials.db import PotentialsDB
from eip2nn.potentials.lammps_backend import NEIGHBOUR_SKIN, import_lammps, potentials_folder

EIP = "lmp_Si_sw"


def structures(n: int, repeat: int = 2, seed: int = 0):
    """``n`` rattled diamond-Si cells of 8·repeat³ atoms (a = 5.431 Å, 0.1 Å noise)."""
    from ase.build import bulk  # here, not on top: each spawned worker re-imports this script,
    # and ase.build (with SciPy) would add 0.2 s to its start-up that `eip2nn label` does not have
    rng = np.random.default_rng(seed)
    base = bulk("Si", "diamond", a=5.431, cubic=True).repeat(repeat)
    out = []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += 0.1 * rng.normal(size=atoms.positions.shape)
        out.append(atoms)
    return out


def eip2nn_seconds(frames, workers: int) -> float:
    """Wall time of one ``label()`` call into a fresh store, s."""
    spec = PotentialsDB().get(EIP)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        label(frames, [spec], Path(tmp) / "s.sqlite", workers=workers, progress=False)
        return time.perf_counter() - t0


def naive_ase_rate(frames) -> float:
    import_lammps()
    from ase.calculators.lammpslib import LAMMPSlib
    calc = LAMMPSlib(lmpcmds=["pair_style sw", f"pair_coeff * * {potentials_folder() / 'Si.sw'} Si"],
                     atom_types={"Si": 1}, log_file=None, keep_alive=True)
    t0 = time.perf_counter()
    for atoms in frames:
        atoms = atoms.copy()
        atoms.calc = calc
        atoms.get_potential_energy()
        atoms.get_forces()
        atoms.get_stress()
    return sum(len(a) for a in frames) / (time.perf_counter() - t0)


def bare_loop_rate(frames, before_timing=None) -> float:
    """One LAMMPS instance, positions scattered, ``run 1 pre no`` per structure (cubic cells only).
    ``before_timing``: called once set up, right before the timed loop."""
    lammps = import_lammps()
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    length = frames[0].cell[0, 0]
    n = len(frames[0])
    lmp.commands_list([
        "units metal", "atom_style atomic", "atom_modify map array sort 0 0", "boundary p p p",
        f"region b prism 0 {length} 0 {length} 0 {length} 0 0 0 units box", "create_box 1 b",
        "mass 1 28.0855", "pair_style sw", f"pair_coeff * * {potentials_folder() / 'Si.sw'} Si",
        f"neighbor {NEIGHBOUR_SKIN} bin", "neigh_modify every 1 delay 0 check no",
        "compute virial all pressure NULL virial", "thermo_style custom step pe c_virial[1]",
    ])
    lmp.create_atoms(n, list(range(1, n + 1)), [1] * n, (frames[0].positions % length).ravel().tolist())
    lmp.command("run 0 post no")  # the full set-up, once
    if before_timing is not None:
        before_timing()
    t0 = time.perf_counter()
    for atoms in frames:
        lmp.numpy.extract_atom("x")[:n] = atoms.positions % length
        lmp.command("run 1 pre no post no")
        lmp.get_thermo("pe")
        np.array(lmp.numpy.extract_atom("f")[:n])
        np.array(lmp.numpy.extract_compute("virial", 0, 1))
    rate = n * len(frames) / (time.perf_counter() - t0)
    lmp.close()
    return rate


def concurrent_bare_loops_rate(n_structures: int, repeat: int, processes: int) -> float:
    """Summed rate of ``processes`` bare loops timed at once, each in its own process: what the
    cores give together with no coordination at all (the reference for eip2nn's scaling)."""
    ctx = multiprocessing.get_context("spawn")
    barrier, rates = ctx.Barrier(processes), ctx.Queue()
    procs = [ctx.Process(target=_bare_loop_job, args=(n_structures, repeat, barrier, rates))
             for _ in range(processes)]
    for p in procs:
        p.start()
    total = sum(rates.get() for _ in procs)
    for p in procs:
        p.join()
    return total


def _bare_loop_job(n_structures, repeat, barrier, rates) -> None:
    with threadpool_limits(1, user_api="blas"):
        rates.put(bare_loop_rate(structures(n_structures, repeat), before_timing=barrier.wait))


def raw_lammps_rate(n_cells: int = 10, runs: int = 5) -> float:
    """SW on one 64,000-atom cell (20^3 conventional cells), ``run 0`` repeated."""
    lammps = import_lammps()
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    n = 20
    lmp.commands_list([
        "units metal", "atom_style atomic", "boundary p p p",
        "lattice diamond 5.431", f"region box block 0 {n} 0 {n} 0 {n}", "create_box 1 box",
        "create_atoms 1 box", "mass 1 28.0855", "displace_atoms all random 0.1 0.1 0.1 1234",
        "pair_style sw", f"pair_coeff * * {potentials_folder() / 'Si.sw'} Si",
        f"neighbor {NEIGHBOUR_SKIN} bin", "compute virial all pressure NULL virial",
        "thermo_style custom step pe c_virial[1]", "run 0 post no",
    ])
    natoms = lmp.get_natoms()
    t0 = time.perf_counter()
    for _ in range(runs):
        lmp.command("run 0 post no")
    rate = natoms * runs / (time.perf_counter() - t0)
    lmp.close()
    return rate


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--structures", type=int, default=12000)
    p.add_argument("--repeat-cell", type=int, default=2, help="cells of 8·N³ atoms (2: 64 atoms)")
    p.add_argument("--repeats", type=int, default=3, help="median over this many interleaved runs")
    args = p.parse_args()
    frames = structures(args.structures, args.repeat_cell)
    half = frames[: len(frames) // 2]
    n_atoms, n_half = sum(len(a) for a in frames), sum(len(a) for a in half)
    workers = default_workers()
    runs: dict[str, list[float]] = {}
    with threadpool_limits(1, user_api="blas"):
        for _ in range(args.repeats):  # interleaved, so machine noise hits every row alike
            runs.setdefault("raw", []).append(raw_lammps_rate())
            runs.setdefault("bare", []).append(bare_loop_rate(frames))
            runs.setdefault("bare_together", []).append(
                concurrent_bare_loops_rate(args.structures, args.repeat_cell, workers))
            for w in (1, workers):
                t_half, t_all = eip2nn_seconds(half, w), eip2nn_seconds(frames, w)
                steady = (n_atoms - n_half) / (t_all - t_half)
                runs.setdefault(f"eip{w}", []).append(n_atoms / t_all)
                runs.setdefault(f"steady{w}", []).append(steady)
                runs.setdefault(f"fixed{w}", []).append(t_all - n_atoms / steady)
            runs.setdefault("naive", []).append(naive_ase_rate(frames[: max(200, args.structures // 10)]))
    med = {k: statistics.median(v) for k, v in runs.items()}
    raw, k = med["raw"], 1e3
    print(f"SW silicon ({EIP}), {args.structures} rattled {len(frames[0])}-atom cells ({n_atoms:,} atoms); "
          f"{os.cpu_count()} cores, {workers} workers; median of {args.repeats} interleaved runs; "
          f"neighbour skin {NEIGHBOUR_SKIN} Å in every LAMMPS row but the naive one\n")
    print("| way | k atoms/s | ratio |")
    print("|---|---|---|")
    print(f"| raw LAMMPS `run 0`, one 64,000-atom cell (compute limit, 1 core) | {raw / k:.0f} | 1.00 |")
    print(f"| bare LAMMPS loop, scatter + `run 1 pre no` per structure, no checks/store (1 core) | "
          f"{med['bare'] / k:.0f} | {med['bare'] / raw:.2f} of raw |")
    print(f"| eip2nn `label`, 1 worker, whole call | {med['eip1'] / k:.0f} | {med['eip1'] / raw:.2f} of raw, "
          f"{med['eip1'] / med['bare']:.2f} of bare loop |")
    print(f"| eip2nn `label`, 1 worker, steady state | {med['steady1'] / k:.0f} | "
          f"{med['steady1'] / raw:.2f} of raw |")
    print(f"| eip2nn `label`, {workers} workers, whole call | {med[f'eip{workers}'] / k:.0f} | "
          f"{med[f'eip{workers}'] / med['eip1']:.2f}x 1 worker "
          f"({med[f'eip{workers}'] / (workers * med['eip1']):.0%} of linear) |")
    print(f"| eip2nn `label`, {workers} workers, steady state | {med[f'steady{workers}'] / k:.0f} | "
          f"{med[f'steady{workers}'] / med['steady1']:.2f}x 1 worker "
          f"({med[f'steady{workers}'] / (workers * med['steady1']):.0%} of linear) |")
    print(f"| {workers} bare loops at once, one per process (what the cores give together) | "
          f"{med['bare_together'] / k:.0f} | {med['bare_together'] / med['bare']:.2f}x one bare loop "
          f"({med['bare_together'] / (workers * med['bare']):.0%} of linear) |")
    print(f"| naive ASE `LAMMPSlib` loop, one call per structure | {med['naive'] / k:.0f} | "
          f"eip2nn 1 worker is {med['eip1'] / med['naive']:.1f}x faster |")
    print(f"\nFixed cost of one `label` call (whole-call time minus atoms / steady-state rate): "
          f"{med['fixed1']:.2f} s with 1 worker, {med[f'fixed{workers}']:.2f} s with {workers} workers "
          "(their start-up).")


if __name__ == "__main__":
    main()
