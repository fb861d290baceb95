"""How long reading and checking a user's DFT file takes, against plain ASE reading of the same file.

Writes N rattled copies of a 64-atom Si cell (random energies and forces as
labels, one per frame) as one extxyz file, then times, in one run:
- ``ase.io.read(path, ":")``: the reference a user would otherwise run;
- :func:`eip2nn.data.files.read_dft_file`: frame-by-frame parsing with labels mapped;
- :func:`eip2nn.data.checks.check_dft_data`: unreadable/unlabelled frames, atoms
  closer than 0.5 Å, unsupported elements, duplicates within the training file,
  and a 10% test file checked for leakage against it.
Median of ``--repeats`` runs each; the ratio is to ASE's read.

Usage: python benchmarks/data_checks.py [--structures 10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.io import read, write

from eip2nn.data.checks import check_dft_data
from eip2nn.data.files import DataKeys, read_dft_file
from eip2nn.tables import format_table


def make_file(path: Path, n: int, seed: int = 0) -> Path:
    """``n`` rattled 64-atom Si cells (0.05 Å rattle) with random labels, as extxyz."""
    rng = np.random.default_rng(seed)
    base = bulk("Si", "diamond", a=5.43, cubic=True).repeat(2)
    frames = []
    for _ in range(n):
        atoms = base.copy()
        atoms.positions += rng.normal(scale=0.05, size=atoms.positions.shape)
        atoms.info["energy"] = float(-5.4 * len(atoms) + rng.normal())
        atoms.arrays["forces"] = rng.normal(scale=0.5, size=(len(atoms), 3))
        frames.append(atoms)
    write(path, frames, format="extxyz")
    return path


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--structures", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        train = make_file(Path(tmp) / "train.xyz", args.structures, seed=0)
        test = make_file(Path(tmp) / "test.xyz", max(1, args.structures // 10), seed=1)
        t_ase, _ = timed(lambda: read(train, ":", format="extxyz"), args.repeats)
        t_read, train_data = timed(lambda: read_dft_file(train, DataKeys()), args.repeats)
        test_data = read_dft_file(test, DataKeys())
        t_check, checked = timed(lambda: check_dft_data(train_data, test_data, {"Si"}), args.repeats)
    n = args.structures
    rows = [("step", "structures", "seconds", "µs per structure", "vs ASE read"),
            ("ase.io.read (reference)", str(n), f"{t_ase:.2f}", f"{1e6 * t_ase / n:.0f}", "1.00"),
            ("read_dft_file", str(n), f"{t_read:.2f}", f"{1e6 * t_read / n:.0f}", f"{t_read / t_ase:.2f}"),
            ("check_dft_data (+ test file)", f"{n} + {len(test_data.structures)}", f"{t_check:.2f}",
             f"{1e6 * t_check / n:.0f}", f"{t_check / t_ase:.2f}")]
    print(format_table(rows))
    print(f"kept {len(checked.train)} training and {len(checked.test)} test structures, "
          f"{len(checked.omitted)} frame(s) left out; median of {args.repeats} runs")


if __name__ == "__main__":
    main()
