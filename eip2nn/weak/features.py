"""Structure-level features for the selector: what the structure is, and where the EIPs disagree.

Two blocks, computed separately because only the second depends on the
alignment (and so is recomputed per cross-validation fold):

- structure block: atom-centred symmetry functions pooled over atoms (mean
  and standard deviation), composition fractions, volume per atom (Å³,
  0 for open structures), periodicity, log(number of atoms);
- EIP block: each EIP's aligned energy relative to the median over EIPs
  (meV/atom), the spread of the aligned energies over EIPs (meV/atom), their
  mean (meV/atom, relative to the aligned EIPs' lowest energy per atom on
  the labelled set), each EIP's RMS force (eV/Å), and the mean over atoms of
  the EIPs' force disagreement (eV/Å).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from eip2nn.keys import FORCES, eip_key, structure_name
from eip2nn.nn.descriptors import SymmetryFunctions
from eip2nn.nn.graph import build_graph
from eip2nn.weak.targets import Alignment, element_counts


class StructureFeatures:
    """Featuriser for structures of ``species``; descriptor is a KLIFF set name, cutoff in Å."""

    def __init__(self, species: list[str], descriptor: str = "set30", cutoff: float = 5.0):
        self.species = list(species)
        self.descriptor = SymmetryFunctions(self.species, cutoff, descriptor)
        self.cutoff = cutoff

    def structure_block(self, structures: list[Atoms]) -> tuple[np.ndarray, list[str]]:
        """(S, 2D + n_species + 3) features that do not involve any EIP, and their names."""
        d = self.descriptor.size
        rows = []
        for k, atoms in enumerate(structures):
            where = structure_name(atoms, k)
            g = build_graph(atoms, self.cutoff, self.species, None, where)
            src, dst = g.edge_src.numpy(), g.edge_dst.numpy()
            vectors = (g.positions[g.edge_dst] - g.positions[g.edge_src] + g.edge_offset).numpy()
            desc, _ = self.descriptor.compute(g.species.numpy(), src, dst, vectors, jacobian=False)
            periodic = bool(atoms.pbc.all())
            rows.append(np.concatenate([
                desc.mean(axis=0), desc.std(axis=0),
                element_counts([atoms], self.species)[0] / len(atoms),
                [atoms.get_volume() / len(atoms) if periodic else 0.0, float(periodic), np.log(len(atoms))]]))
        names = ([f"G{i}_mean" for i in range(d)] + [f"G{i}_std" for i in range(d)]
                 + [f"x_{s}" for s in self.species] + ["volume_per_atom", "periodic", "log_n_atoms"])
        return np.array(rows).reshape(len(structures), len(names)), names

    def eip_block(self, structures: list[Atoms], alignments: dict[str, Alignment], reference_energy: float
                  ) -> tuple[np.ndarray, list[str]]:
        """(S, 2K + 3) EIP features, and their names; every structure must carry every EIP's labels.

        reference_energy: eV/atom subtracted from the mean aligned energy (the
        aligned EIPs' lowest energy per atom on the labelled set).
        """
        eips = list(alignments)
        counts = element_counts(structures, self.species)
        rows = []
        for i, atoms in enumerate(structures):
            n = len(atoms)
            e = np.array([alignments[x].aligned_energy(atoms, counts[i]) / n for x in eips]) * 1000.0
            forces = np.stack([atoms.arrays[eip_key(x, FORCES)] for x in eips])  # (K, n, 3)
            rms = np.sqrt((forces ** 2).mean(axis=(1, 2)))
            disagreement = np.linalg.norm(forces - forces.mean(axis=0), axis=2).mean() if len(eips) > 1 else 0.0
            rows.append(np.concatenate([e - np.median(e), [e.std(), e.mean() - reference_energy * 1000.0],
                                        rms, [disagreement]]))
        names = ([f"dE_{x}" for x in eips] + ["eip_energy_spread", "eip_energy_mean"]
                 + [f"rmsF_{x}" for x in eips] + ["eip_force_disagreement"])
        return np.array(rows).reshape(len(structures), len(names)), names


def lowest_aligned_energy(structures: list[Atoms], alignments: dict[str, Alignment], species: list[str]) -> float:
    """The lowest per-atom aligned energy of any EIP on ``structures``, eV/atom."""
    counts = element_counts(structures, species)
    return min(alignments[x].aligned_energy(a, counts[i]) / len(a)
               for i, a in enumerate(structures) for x in alignments)
