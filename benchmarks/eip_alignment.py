"""How close the eligible EIPs get to DFT once aligned, on a whole mlearn training file.

For each element: every eligible empirical EIP (leakage-tagged ones
excluded) is aligned to DFT with per-element offsets on *all* training
structures (this is a look at the data, not a training protocol), then
prints the best EIPs' aligned energy and force MAE, how often each is the
closest to DFT, and the share of structures on which even the closest EIP
is further than 25, 50 and 100 meV/atom — the figures behind the selector's
default "none" threshold.

Usage: python benchmarks/eip_alignment.py [--elements Si Mo] [--top 6]
"""

from __future__ import annotations

import argparse
from collections import Counter

import numpy as np

from eip2nn.data.protocol import DataConfig, make_split
from eip2nn.keys import ENERGY, eip_key
from eip2nn.labelling.choice import eligible_eips, label_with
from eip2nn.potentials.db import PotentialsDB
from eip2nn.tables import format_table
from eip2nn.weak.targets import error_matrix, fit_alignments


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elements", nargs="+", default=["Si", "Mo"])
    p.add_argument("--top", type=int, default=6)
    p.add_argument("--labels", default="outputs/labels.sqlite")
    args = p.parse_args()
    for element in args.elements:
        split = make_split(DataConfig(dataset=f"mlearn/{element}", val_fraction=0.0))
        specs = eligible_eips(PotentialsDB(), split.species, split.source_tag)
        atoms = label_with(split.train, specs, args.labels, None)
        complete = [s.id for s in specs if all(eip_key(s.id, ENERGY) in a.info for a in atoms)]
        alignments = fit_alignments(atoms, complete, split.species)
        errors = error_matrix(atoms, alignments, split.species)
        best = errors.min(axis=1)
        closest = Counter(complete[k] for k in errors.argmin(axis=1))
        order = sorted(alignments.values(), key=lambda a: a.energy_mae)[:args.top]
        print(f"\nmlearn/{element} train: {len(atoms)} structures, {len(complete)} eligible EIPs labelled all "
              f"of them ({len(specs) - len(complete)} failed on some)")
        print(format_table([("EIP", "E MAE meV/atom", "F MAE eV/Å", "closest on")] + [
            (a.eip, f"{a.energy_mae:.1f}", f"{a.force_mae:.3f}", closest.get(a.eip, 0)) for a in order]))
        print(f"closest EIP per structure (oracle): E MAE {best.mean():.1f} meV/atom, median {np.median(best):.1f}; "
              + ", ".join(f"> {t} meV/atom on {100 * np.mean(best > t):.0f}%" for t in (25, 50, 100)))


if __name__ == "__main__":
    main()
