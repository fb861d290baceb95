"""Labelling through the local worker pool vs a Dask cluster of the same size, in one run.

The same job (Stillinger-Weber Si, LAMMPS ``Si.sw``, rattled diamond cells) is
labelled by ``label()`` with its own pool of W worker processes and with a
``dask.distributed`` LocalCluster of W single-thread worker processes (started
once, as a real cluster would be). Each is timed on N and on N/2 structures
(fresh stores) and the rows report the steady state, the difference of the
two, free of fixed costs (pool start-up, first evaluator set-up):

- throughput, structures/s and atoms/s, and the ratio Dask / pool;
- the parent's CPU time per structure (claims, packing, SQLite writes; with
  Dask also the client's communication thread): what one labelling process
  spends to feed the workers;
- the workers' evaluation time per structure, and from the two the number of
  workers one parent can keep busy: worker s per structure / parent CPU s per
  structure.

Runs alternate pool and Dask, ``--repeats`` times, so both see the same noise.
Usage: python benchmarks/labelling_dask.py [--atoms 64 512] [--structures 4000 1000] [--workers 2] [--repeats 3]
Prints a markdown table; docs/labelling.md quotes it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from labelling_throughput import structures as si_cells  # this folder is on sys.path when run as a script

from eip2nn.labelling.engine import label
from eip2nn.potentials.db import PotentialsDB

EIP = "lmp_Si_sw"


def structures(n: int, n_atoms: int, seed: int = 0):
    """``n`` rattled diamond-Si cells of ``n_atoms`` atoms (8·k³), as in labelling_throughput.py."""
    repeat = round((n_atoms / 8) ** (1 / 3))
    if 8 * repeat**3 != n_atoms:
        raise SystemExit(f"--atoms {n_atoms}: a diamond cell repeated k×k×k has 8·k³ atoms")
    return si_cells(n, repeat, seed)


def timed_label(frames, spec, workers: int, scheduler) -> tuple[float, float, float]:
    """(wall s, parent CPU s, summed worker evaluation s) of labelling ``frames`` into a fresh store."""
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        report = label(frames, [spec], Path(tmp) / "labels.sqlite", workers=workers, scheduler=scheduler,
                       progress=False)
        wall = time.perf_counter() - t0
    stats = report.per_eip[spec.id]
    if stats.labelled != len(frames):
        raise RuntimeError(f"labelled {stats.labelled} of {len(frames)}: {dict(stats.failed)}")
    return wall, report.parent_cpu_seconds, stats.eval_seconds


def steady(frames, spec, workers, scheduler) -> dict[str, float]:
    """Per-structure figures of the second half of a job: (N run) − (N/2 run)."""
    half = frames[: len(frames) // 2]
    wall_f, cpu_f, ev_f = timed_label(frames, spec, workers, scheduler)
    wall_h, cpu_h, ev_h = timed_label(half, spec, workers, scheduler)
    n = len(frames) - len(half)
    return {"rate": n / (wall_f - wall_h), "parent_cpu": (cpu_f - cpu_h) / n, "eval": (ev_f - ev_h) / n,
            "wall_full": wall_f}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--atoms", type=int, nargs="+", default=[64, 512], help="atoms per cell (8·k³)")
    ap.add_argument("--structures", type=int, nargs="+", default=[4000, 1000], help="N per cell size")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    if len(args.structures) != len(args.atoms):
        raise SystemExit("give one --structures value per --atoms value")

    import dask
    from distributed import LocalCluster
    spec = PotentialsDB().get(EIP)
    with dask.config.set({"distributed.worker.daemon": False}):
        cluster = LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                               dashboard_address=None, silence_logs=40)
    rows = []
    try:
        for n_atoms, n in zip(args.atoms, args.structures):
            frames = structures(n, n_atoms)
            runs = {"pool": [], "dask": []}
            for _ in range(args.repeats):  # alternated: both see the same noise
                runs["pool"].append(steady(frames, spec, args.workers, None))
                runs["dask"].append(steady(frames, spec, args.workers, cluster))
            rows.append((n_atoms, n, runs))
    finally:
        cluster.close()

    def ms(values, scale=1.0, digits=2):
        v = [scale * x for x in values]
        return f"{statistics.mean(v):.{digits}f} ± {statistics.stdev(v):.{digits}f}" if len(v) > 1 else f"{v[0]:.{digits}f}"

    print(f"\n{EIP}, {args.workers} workers, steady state (N − N/2 runs), mean ± sd over {args.repeats} repeats\n")
    print("| atoms/cell | N | where | structures/s | Dask / pool | parent CPU ms/structure | "
          "worker ms/structure | workers one parent can feed |")
    print("|---|---|---|---|---|---|---|---|")
    for n_atoms, n, runs in rows:
        pool_rate = [r["rate"] for r in runs["pool"]]
        for where in ("pool", "dask"):
            rs = runs[where]
            rate = [r["rate"] for r in rs]
            ratio = ms([d / p for d, p in zip(rate, pool_rate)]) if where == "dask" else "1"
            feed = [r["eval"] / r["parent_cpu"] for r in rs]
            print(f"| {n_atoms} | {n} | {'local pool' if where == 'pool' else 'Dask LocalCluster'} | "
                  f"{ms(rate, digits=0)} | {ratio} | {ms([r['parent_cpu'] for r in rs], 1e3, 3)} | "
                  f"{ms([r['eval'] for r in rs], 1e3, 2)} | {ms(feed, digits=0)} |")


if __name__ == "__main__":
    main()
