"""Does pretraining on the EIPs' local (per-atom) energies change the low-data test errors?

For a pipeline (default pipelines/si.yaml), each seed and each low DFT fraction: the baseline
cell, the transfer cell pretrained on EIP totals and forces (the pipeline as it is), and the
transfer cell pretrained with ``pretrain.w_local`` as well (each atom's energy from LAMMPS
pe/atom or KIM partialParticleEnergy, where the EIP gives one). Stages are the pipeline's own
(pipeline.runner), run or reused from its stage folder; no pipeline report is written.
Prints the test energy and force MAE (mean ± sample std over seeds), and, per seed, how closely each
pretrained model's EIP heads share a validation structure's energy among its atoms as their EIP
does: mean |Δe_i − ⟨Δe⟩| over the validation atoms (eV, each structure's mean error taken out).

Usage: python benchmarks/local_pretraining.py [--pipeline pipelines/si.yaml] [--w-local 10]
                                              [--fractions 0.05 0.1] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse

import numpy as np
from stats import mean_spread

from eip2nn.data.protocol import make_split
from eip2nn.keys import LOCAL_ENERGIES, eip_key
from eip2nn.labelling.choice import label_with, resolve_eips
from eip2nn.nn.checkpoint import load_model
from eip2nn.nn.graph import collate
from eip2nn.pipeline.config import load_pipeline
from eip2nn.pipeline.runner import cell_config, pretrain_config, run_or_reuse
from eip2nn.potentials.db import PotentialsDB


def local_share_error(model, structures, eip: str) -> float:
    """Mean |Δe_i − ⟨Δe⟩_structure| over the atoms carrying ``eip``'s local energies, eV (nan: none do)."""
    model.eval()
    errors = []
    for k, atoms in enumerate(structures):
        reference = atoms.arrays.get(eip_key(eip, LOCAL_ENERGIES))
        if reference is None:
            continue
        pred = model(collate([model.graph(atoms, where=str(k))]), heads=[eip], forces=False)[eip]
        diff = pred.atom_energies.detach().cpu().numpy() - reference
        errors.append(np.abs(diff - diff.mean()))
    return float(np.concatenate(errors).mean()) if errors else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--pipeline", default="pipelines/si.yaml")
    p.add_argument("--w-local", type=float, default=10.0,
                   help="pretrain.w_local of the local arm (the weight on each atom's Δe², eV²)")
    p.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1])
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a pipeline value (both pretrainings)")
    args = p.parse_args()
    pipes = {"totals": load_pipeline(args.pipeline, args.overrides),
             "local": load_pipeline(args.pipeline, [*args.overrides, f"pretrain.w_local={args.w_local}"])}
    errors: dict[tuple[str, float], list[tuple[float, float]]] = {}
    shares = []
    for seed in pipes["totals"].study.seeds:
        models = {}
        for kind, pipe in pipes.items():
            pre, _ = run_or_reuse(pretrain_config(pipe, seed), log=lambda s: None)
            models[kind] = pre.model_path
            for fraction in args.fractions:
                arms = ["transfer"] if kind == "local" else ["baseline", "transfer"]
                for arm in arms:
                    pretrained = str(pre.model_path) if arm == "transfer" else ""
                    done, _ = run_or_reuse(cell_config(pipe, arm, fraction, seed, pretrained), log=lambda s: None)
                    test = done.metrics["test"]
                    name = arm if arm == "baseline" else f"transfer ({kind})"
                    errors.setdefault((name, fraction), []).append((test.energy_mae, test.force_mae))
                    print(f"seed {seed} f={fraction:g} {name}: {test.energy_mae:.2f} meV/atom, "
                          f"{test.force_mae:.3f} eV/Å", flush=True)
        cfg = pretrain_config(pipes["local"], seed)
        split = make_split(cfg.data)
        heads = [h for h in load_model(models["local"]).head_names if h != "dft"]
        specs = resolve_eips(PotentialsDB(), heads, split.species, split.source_tag)
        val = label_with(split.val, specs, cfg.data.labels, cfg.data.workers or None, local_energies=True)
        for eip in heads:
            row = {kind: local_share_error(load_model(path), val, eip) for kind, path in models.items()}
            shares.append((seed, eip, row))
            print(f"seed {seed} head {eip}: local share error {row['totals']:.3f} eV (totals) vs "
                  f"{row['local']:.3f} eV (local)", flush=True)

    print(f"\n{args.pipeline}: test errors, mean ± sample std over seeds {pipes['totals'].study.seeds} "
          f"(energy meV/atom / force eV/Å); local pretraining with pretrain.w_local={args.w_local:g}\n")
    names = ["baseline", "transfer (totals)", "transfer (local)"]
    print("| DFT fraction | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for fraction in args.fractions:
        cells = []
        for name in names:
            rows = errors.get((name, fraction), [])
            cells.append(f"{mean_spread([e for e, _ in rows])} / {mean_spread([f for _, f in rows], digits=3)}"
                         if rows else "-")
        print(f"| {fraction:g} | " + " | ".join(cells) + " |")
    print("\nHow each pretrained head shares a validation structure's energy among its atoms, against its EIP "
          "(mean |Δe_i − ⟨Δe⟩|, eV; nan: the EIP gives no local energies)\n")
    print("| seed | head | pretrained on totals | with local energies |")
    print("|---|---|---|---|")
    for seed, eip, row in shares:
        print(f"| {seed} | {eip} | {row['totals']:.3f} | {row['local']:.3f} |")


if __name__ == "__main__":
    main()
