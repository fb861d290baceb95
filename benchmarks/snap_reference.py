"""SNAP reference fit (eip2nn.snap) on the mlearn benchmark, next to published potentials' test errors.

For each element and seed: the whole mlearn training file split 90/10 into
train/validation (``train_val_split(n, 0.1, seed)``), Zuo et al.'s published
(twojmax, rcutfac) for linear SNAP and for quadratic SNAP, α chosen on the
validation structures; test-set energy and force MAE. Next to them: the
SNAP/qSNAP potentials Zuo et al. shipped with LAMMPS, evaluated here on the
same test set through ``pair_style snap`` (they were fitted to this
training data: their test errors are the published fits'), and the GAP and
MTP test errors quoted in the data README.

Usage: python benchmarks/snap_reference.py [--elements Si Mo Cu Ni] [--seeds 0 1] [--variants linear quadratic]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from eip2nn.data.registry import load_dataset
from eip2nn.data.splits import train_val_split
from eip2nn.keys import REF_ENERGY, REF_FORCES
from eip2nn.potentials.lammps_backend import LAMMPSEvaluator
from eip2nn.potentials.spec import LAMMPSBackend, PotentialSpec
from eip2nn.snap.config import published_config
from eip2nn.snap.fit import fit_snap
from eip2nn.tables import format_table

# Test-set MAE (energy meV/atom, force eV/Å) quoted in /work/shared/data/README.md (ACEpotentials.jl, from Zuo et al.)
README_ERRORS = {  # element: (GAP E, MTP E, GAP F, MTP F)
    "Ni": (0.42, 0.48, 0.02, 0.01), "Cu": (0.46, 0.41, 0.01, 0.01), "Li": (0.49, 0.49, 0.01, 0.01),
    "Mo": (2.24, 2.83, 0.09, 0.09), "Si": (2.91, 2.21, 0.07, 0.06), "Ge": (2.06, 1.79, 0.05, 0.05),
}


def mae_on(predict, structures) -> tuple[float, float]:
    """(energy MAE meV/atom, force MAE eV/Å) of ``predict(atoms) -> (E, F, ...)`` on labelled ``structures``."""
    e, f = [], []
    for atoms in structures:
        energy, forces = predict(atoms)[:2]
        e.append(abs(energy - atoms.info[REF_ENERGY]) / len(atoms))
        f.append(np.abs(forces - atoms.arrays[REF_FORCES]).ravel())
    return 1e3 * float(np.mean(e)), float(np.mean(np.concatenate(f)))


def zuo_errors(element: str, quadratic: bool, test) -> tuple[float, float]:
    """Test errors of the ``<El>_Zuo_JPCA2020[.quadratic]`` files shipped with LAMMPS, through pair_style snap."""
    stem = f"{element}_Zuo_JPCA2020{'.quadratic' if quadratic else ''}"
    files = (f"{stem}.snapcoeff", f"{stem}.snapparam")
    spec = PotentialSpec(id=stem, name=stem, species=(element,), kind="machine-learned", family="SNAP",
                         backend=LAMMPSBackend("snap", f"* * {{file:{files[0]}}} {{file:{files[1]}}} {{elements}}", files),
                         cutoff=6.0, citation="Zuo et al., J. Phys. Chem. A 124, 731 (2020)")
    evaluator = LAMMPSEvaluator(spec)
    try:
        return mae_on(evaluator.evaluate, test)
    finally:
        evaluator.close()


def run_element(element: str, seeds: list[int], variants: list[str]) -> list[tuple]:
    train_all, test = load_dataset(f"mlearn/{element}/train"), load_dataset(f"mlearn/{element}/test")
    gap_e, mtp_e, gap_f, mtp_f = README_ERRORS[element]
    rows = []
    for variant in variants:
        quadratic = variant == "quadratic"
        zuo_e, zuo_f = zuo_errors(element, quadratic, test)
        for seed in seeds:
            train_idx, val_idx = train_val_split(len(train_all), 0.1, seed)
            cfg = published_config(element, quadratic)
            t0 = time.perf_counter()
            fit = fit_snap([train_all[i] for i in train_idx], [train_all[i] for i in val_idx], [element], cfg)
            seconds = time.perf_counter() - t0
            e, f = mae_on(fit.model.predict, test)
            fit.model.close()
            rows.append((element, variant, seed, f"{cfg.twojmax}/{cfg.rcutfac}", len(train_idx), len(val_idx),
                         f"{e:.2f}", f"{f:.3f}", f"{fit.choice['alpha']:g}", fit.choice["n_coefficients"],
                         f"{seconds:.1f}", f"{zuo_e:.2f} / {zuo_f:.3f}", f"{gap_e} / {gap_f}", f"{mtp_e} / {mtp_f}"))
            print(f"{element} {variant} seed {seed}: {e:.2f} meV/atom, {f:.3f} eV/Å, {seconds:.1f} s; "
                  + "; ".join(fit.notes), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elements", nargs="+", default=["Si", "Mo", "Cu", "Ni"])
    p.add_argument("--seeds", nargs="+", type=int, default=[0])
    p.add_argument("--variants", nargs="+", choices=["linear", "quadratic"], default=["linear", "quadratic"])
    args = p.parse_args()
    rows = []
    for element in args.elements:
        rows += run_element(element, args.seeds, args.variants)
    print()
    print(format_table([("El", "SNAP", "seed", "2J/rcut Å", "train", "val", "E MAE meV/atom", "F MAE eV/Å", "alpha",
                         "coeffs", "fit s", "Zuo files E / F", "GAP E / F", "MTP E / F")] + rows))
    print("\nZuo files: the published SNAP (linear rows) or qSNAP (quadratic rows) of Zuo et al., J. Phys. Chem. A "
          "124, 731 (2020), shipped with LAMMPS, evaluated here on the same test set; GAP/MTP: data README.")


if __name__ == "__main__":
    main()
