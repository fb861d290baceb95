"""Speed and peak memory of a descriptor model in LAMMPS against `pair_style eip2nn chunk N`.

A model of benchmarks/md_speed.py (Si, symmetry functions or bispectrum, random weights), exported to
TorchScript in float32 (or ``--dtype float64``);
for each chunk size a fresh process runs 10 NVE steps of a diamond Si supercell through
`eip2nn md` (run_md) and reports atom-steps/s and its own peak resident memory (MB). The energy at
step 0 must not depend on the chunk. ``--native no`` runs the descriptor in TorchScript (`pair_style eip2nn
native no`), ``both`` runs each chunk size both ways, interleaved (the bispectrum's native C++ descriptor
against TorchScript's); ``auto`` (default) leaves the plugin's choice (native where the model file allows it).

Usage: python benchmarks/lammps_chunks.py [--atoms 4096] [--chunks 0 1024 256 128 64] [--steps 10]
                                         [--backbone symmetry_functions] [--dtype float32]
                                         [--native auto|no|both]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

ONE_RUN = r"""
import json, resource, sys, tempfile
from pathlib import Path
import torch
sys.path.insert(0, sys.argv[4])
from md_speed import make_model, silicon
from eip2nn.deploy.md import run_md
chunk, n, steps, backbone, dtype = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[5], sys.argv[6]
native = "" if sys.argv[7] == "auto" else f" native {sys.argv[7]}"
torch.set_num_threads(1)
_, deployments = make_model(backbone, Path(tempfile.mkdtemp()))
deployment = deployments[dtype]
lines = deployment.commands
deployment.commands = lambda elements=None: [f"pair_style eip2nn chunk {chunk}{native}" if line == "pair_style eip2nn"
                                             else line for line in lines(elements)]
result = run_md(deployment, silicon(n), 300.0, steps, ensemble="nve", progress=False, every=steps)
print(json.dumps({"chunk": chunk, "native": sys.argv[7], "speed": result.atom_steps_per_second,
                  "e0": float(result.potential_energies[0]),
                  "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--atoms", type=int, default=4096)
    p.add_argument("--chunks", type=int, nargs="+", default=[0, 1024, 256, 128, 64])
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--backbone", choices=["symmetry_functions", "bispectrum"], default="symmetry_functions")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--native", choices=["auto", "no", "both"], default="auto")
    args = p.parse_args()
    env = dict(os.environ, OMP_NUM_THREADS="1", EIP2NN_GRAPH_CACHE_MB="0")
    rows = []
    natives = ["auto", "no"] if args.native == "both" else [args.native]
    for chunk in args.chunks:
        for native in natives:
            proc = subprocess.run([sys.executable, "-c", ONE_RUN, str(chunk), str(args.atoms), str(args.steps),
                                   str(HERE), args.backbone, args.dtype, native],
                                  capture_output=True, text=True, env=env, timeout=1800)
            if proc.returncode != 0:
                raise RuntimeError(f"chunk {chunk} native {native} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr, flush=True)
    e0 = rows[0]["e0"]
    print(f"\n{args.atoms} Si atoms, {args.backbone} model ({args.dtype}), {args.steps} NVE steps; load average "
          f"{os.getloadavg()[0]:.2f}\n")
    print("| chunk | native | atom-steps/s | peak memory of the process | step-0 energy − first row's (eV) |")
    print("|---|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['chunk']} | {r['native']} | {r['speed']:,.0f} | {r['peak_mb']:,.0f} MB | {r['e0'] - e0:.2e} |")


if __name__ == "__main__":
    main()
