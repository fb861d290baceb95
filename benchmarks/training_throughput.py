"""Training throughput of eip2nn's SchNet against schnetpack's SchNet, same run.

Both models: width 64, 3 interactions, 20 Gaussian RBFs, cosine cut-off 5 Å,
a 64→32→1 atomwise head, float32, energy + force loss (forces by autograd,
double backward), Adam, batch size 8, on the same mlearn Si training
structures in the same order. Neighbour lists are built once before timing
for both (eip2nn graphs; schnetpack ``AtomsConverter`` with its matscipy
neighbour list), so the figure is the training step itself; the one-off
preparation time is printed separately. Structures per second over whole
epochs, median of ``--epochs`` epochs.

Needs schnetpack: ``scripts/install_bench_deps.sh`` (installs into .bench-site/).
Usage: python benchmarks/training_throughput.py [--element Si] [--epochs 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

BENCH_SITE = Path(__file__).resolve().parents[1] / ".bench-site"


def import_schnetpack():
    if BENCH_SITE.is_dir():
        sys.path.insert(0, str(BENCH_SITE))
    import torch.utils.data.dataloader as dataloader

    if not hasattr(dataloader, "T_co"):  # schnetpack <= 2.1.1 imports a name torch 2.13 renamed
        dataloader.T_co = dataloader._T_co
    try:
        import schnetpack
        import schnetpack.transform
    except ImportError as exc:
        raise SystemExit(f"schnetpack is not importable ({exc}); run scripts/install_bench_deps.sh") from exc
    return schnetpack


def batches(n: int, size: int, seed: int) -> list[list[int]]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    return [order[k:k + size] for k in range(0, n, size)]


def time_eip2nn(structures, args) -> tuple[float, list[float]]:
    from eip2nn.nn.config import ModelConfig
    from eip2nn.nn.model import EnergyModel
    from eip2nn.training.config import LossWeights
    from eip2nn.training.loss import batch_loss
    from eip2nn.training.samples import make_samples

    torch.manual_seed(0)
    model = EnergyModel(ModelConfig(backbone="schnet", cutoff=args.cutoff, width=64, depth=3, n_rbf=20,
                                    head_hidden=32), ["Si"], ["dft"])
    t = time.perf_counter()
    samples = make_samples(model, structures, ["dft"])
    prep = time.perf_counter() - t
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    weights = LossWeights(1.0, 0.1)
    rates = []
    for epoch in range(args.epochs):
        t = time.perf_counter()
        for idx in batches(len(samples), args.batch_size, epoch):
            opt.zero_grad()
            loss, _ = batch_loss(model, [samples[i] for i in idx], {"dft": 1.0}, weights)
            loss.backward()
            opt.step()
        rates.append(len(samples) / (time.perf_counter() - t))
    return prep, rates


def time_schnetpack(structures, args) -> tuple[float, list[float]]:
    spk = import_schnetpack()
    from eip2nn.keys import REF_ENERGY, REF_FORCES

    torch.manual_seed(0)
    rep = spk.representation.SchNet(n_atom_basis=64, n_interactions=3,
                                     radial_basis=spk.nn.GaussianRBF(n_rbf=20, cutoff=args.cutoff),
                                     cutoff_fn=spk.nn.CosineCutoff(args.cutoff))
    model = spk.model.NeuralNetworkPotential(
        representation=rep, input_modules=[spk.atomistic.PairwiseDistances()],
        output_modules=[spk.atomistic.Atomwise(n_in=64, output_key="energy"),
                        spk.atomistic.Forces(energy_key="energy", force_key="forces")])
    model.train()
    converter = spk.interfaces.AtomsConverter(neighbor_list=spk.transform.MatScipyNeighborList(cutoff=args.cutoff),
                                              dtype=torch.float32, device="cpu")
    t = time.perf_counter()
    prepared = {}
    for epoch in range(args.epochs):
        for idx in batches(len(structures), args.batch_size, epoch):
            key = tuple(idx)
            if key not in prepared:
                chunk = [structures[i] for i in idx]
                inputs = converter(chunk)
                e_ref = torch.tensor([a.info[REF_ENERGY] for a in chunk], dtype=torch.float32)
                n = torch.tensor([len(a) for a in chunk], dtype=torch.float32)
                f_ref = torch.cat([torch.as_tensor(a.arrays[REF_FORCES], dtype=torch.float32) for a in chunk])
                prepared[key] = (inputs, e_ref, n, f_ref)
    prep = (time.perf_counter() - t) / args.epochs
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    rates = []
    for epoch in range(args.epochs):
        t = time.perf_counter()
        for idx in batches(len(structures), args.batch_size, epoch):
            inputs, e_ref, n, f_ref = prepared[tuple(idx)]
            inputs = {k: v.clone() for k, v in inputs.items()}  # the model sets requires_grad in place
            opt.zero_grad()
            out = model(inputs)
            loss = (((out["energy"] - e_ref) / n) ** 2).mean() + 0.1 * ((out["forces"] - f_ref) ** 2).mean()
            loss.backward()
            opt.step()
        rates.append(len(structures) / (time.perf_counter() - t))
    return prep, rates


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--element", default="Si")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cutoff", type=float, default=5.0)
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from eip2nn.data import load_dataset

    structures = load_dataset(f"mlearn/{args.element}/train")
    spk_prep, spk_rates = time_schnetpack(structures, args)
    ours_prep, ours_rates = time_eip2nn(structures, args)
    ours, theirs = statistics.median(ours_rates), statistics.median(spk_rates)
    n_atoms = sum(len(a) for a in structures)
    print(f"\nmlearn/{args.element}/train: {len(structures)} structures, {n_atoms} atoms; batch {args.batch_size}; "
          f"{args.threads} torch threads; median of {args.epochs} epochs\n")
    print("| SchNet (64 wide, 3 interactions, 5 Å) | structures/s | ratio | one-off preparation s |")
    print("|---|---|---|---|")
    print(f"| schnetpack 2.1.1 | {theirs:.1f} | 1.00 | {spk_prep:.2f} |")
    print(f"| eip2nn | {ours:.1f} | {ours / theirs:.2f} | {ours_prep:.2f} |")


if __name__ == "__main__":
    main()
