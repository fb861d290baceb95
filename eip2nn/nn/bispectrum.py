"""Per-atom SNAP bispectrum descriptors and their edge Jacobians, computed by LAMMPS.

The same interface as :class:`eip2nn.nn.descriptors.SymmetryFunctions`: from
a graph's edges, each atom's K bispectrum components B_i (Thompson et al.
2015, LAMMPS ``compute snap``) and their derivatives with respect to each
edge vector, ``dB[src]/d(edge vector)`` of shape (E, K, 3) in 1/Å.

LAMMPS resolves derivatives per *atom*, summing periodic images; a small
cell's atom may be seen by its own centre through several images, so a
periodic structure cannot give per-edge derivatives directly. Instead each
atom's environment is laid out as an isolated cluster: the centre, and one
atom per edge at ``centre + edge vector``. The clusters sit on a grid far
enough apart that no centre sees another cluster, so the derivative with
respect to an edge atom is the derivative with respect to that edge vector,
for any cell (triclinic, smaller than the cut-off, or non-periodic).

The descriptor is ``compute snap ... bikflag 1 dgradflag 1`` with the
element radius 0.5 and weight 1 of :mod:`eip2nn.snap.bispectrum` for every
element, so the cut-off is ``rcutfac`` Å for every pair, and bzeroflag 1
(the isolated atom's bispectrum subtracted: an atom with no neighbour has
B = 0).
"""

from __future__ import annotations

import math

import numpy as np
from ase.data import atomic_numbers

from eip2nn.snap.bispectrum import BZEROFLAG, ELEMENT_RADIUS, ELEMENT_WEIGHT, SWITCHFLAG, empty_lammps, n_bispectrum

RFAC0 = 0.99363  # distance-to-angle factor, as in the mlearn SNAP files
CLUSTER_GAP = 1.0  # Å of space between two clusters beyond twice the cut-off
# atoms per LAMMPS call: compute snap's derivative array has a row for every pair of atoms (dense), so many
# small calls beat one large one
BATCH_ATOMS = 64
_COMPUTE_ID = "bisp"
_PRESSURE_ID = "bisp_press"  # the pressure compute that compute snap adds at every run set-up


class BispectrumDescriptor:
    """SNAP bispectrum descriptor of band limit ``twojmax`` for ``species``, cut-off ``cutoff`` Å.

    One in-process LAMMPS instance serves every call. ``size`` is K, the
    number of bispectrum components (30 for twojmax 6, 55 for 8).
    """

    def __init__(self, species: list[str], cutoff: float, twojmax: int = 6):
        unknown = [s for s in species if s not in atomic_numbers]
        if not species or unknown or len(set(species)) != len(species):
            raise ValueError(f"species {species!r}: need distinct chemical symbols")
        self.species = list(species)
        self.cutoff = float(cutoff)
        self.twojmax = int(twojmax)
        self.size = n_bispectrum(self.twojmax)
        self._lmp = None
        self._ran = False  # a run has created _PRESSURE_ID
        self._step = 0

    def __getstate__(self):  # a LAMMPS instance does not pickle: a copy starts its own when used
        return {**self.__dict__, "_lmp": None, "_ran": False, "_step": 0}

    def _start(self) -> None:
        ns = len(self.species)  # types 1..ns: centres; ns+1..2ns: the same elements as edge atoms
        # edge atoms (types ns+1..2ns) need not see each other: fewer pairs, a smaller array
        exclude = [f"neigh_modify exclude type {a} {b}" for a in range(ns + 1, 2 * ns + 1) for b in range(a, 2 * ns + 1)]
        self._lmp, self._ran, self._step = empty_lammps(self.species * 2, self.cutoff, exclude), False, 0

    def close(self) -> None:
        if getattr(self, "_lmp", None) is not None:  # also when __init__ refused its arguments
            self._lmp.close()
            self._lmp = None

    def __del__(self):
        self.close()

    def compute_command(self) -> str:
        nt = 2 * len(self.species)  # centre and edge-atom types, all of radius 0.5 and weight 1
        return (f"compute {_COMPUTE_ID} centres snap {self.cutoff!r} {RFAC0!r} {self.twojmax} "
                f"{' '.join([repr(ELEMENT_RADIUS)] * nt)} {' '.join([repr(ELEMENT_WEIGHT)] * nt)} "
                f"rmin0 0.0 bzeroflag {BZEROFLAG} switchflag {SWITCHFLAG} bikflag 1 dgradflag 1")

    def compute(self, species_index: np.ndarray, edge_src: np.ndarray, edge_dst: np.ndarray,
                edge_vectors: np.ndarray, jacobian: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Descriptors (N, K) and Jacobians (E, K, 3) in 1/Å (None unless ``jacobian``); edges sorted by ``edge_src``."""
        if np.any(np.diff(edge_src) < 0):
            raise ValueError("edges must be sorted by source atom")
        n, k = len(species_index), self.size
        g, jac = np.zeros((n, k)), (np.zeros((len(edge_src), k, 3)) if jacobian else None)
        bounds = np.searchsorted(edge_src, np.arange(n + 1))
        atoms_before = bounds + np.arange(n + 1)  # cluster atoms (centres and edge atoms) before each centre
        start = 0
        while start < n:  # batches of whole clusters of at most BATCH_ATOMS atoms (at least one cluster)
            last = int(np.searchsorted(atoms_before, atoms_before[start] + BATCH_ATOMS, side="right")) - 1
            stop = min(max(start + 1, last), n)
            lo, hi = bounds[start], bounds[stop]
            g[start:stop], batch_jac = self._clusters(species_index, edge_src[lo:hi] - start, edge_dst[lo:hi],
                                                      edge_vectors[lo:hi], start, stop)
            if jacobian:
                jac[lo:hi] = batch_jac
            start = stop
        return g, jac

    def _clusters(self, species_index, src, dst, vectors, start, stop):
        """B (c, K) and dB/d(edge vector) (e, K, 3) of centres ``start:stop``, their edges given with local ``src``."""
        c, e = stop - start, len(src)
        spacing = 3.0 * self.cutoff + CLUSTER_GAP  # a cluster's atoms lie within the cut-off of its centre
        m = max(1, math.ceil(c ** (1.0 / 3.0) - 1e-9))
        grid = np.stack(np.unravel_index(np.arange(c), (m, m, m)), axis=1) * spacing + spacing / 2
        positions = np.concatenate([grid, grid[src] + vectors])
        types = np.concatenate([species_index[start:stop] + 1, species_index[dst] + 1 + len(self.species)])
        array = self._run(positions, types, c, m * spacing)
        # rows (centre i, atom j, direction) after one row of B per atom hold -dB_i/dr_j; keep those of j an
        # edge atom of i's own cluster (the rest are dB_i/dr_i and zero padding: LAMMPS allocates all pairs)
        rows = array[c + e:-1]
        centre, atom, direction = (rows[:, col].astype(np.int64) for col in range(3))
        edge = np.where(atom >= c, atom - c, 0)
        own = (atom >= c) & (centre == src[edge]) if e else np.zeros(len(rows), dtype=bool)
        if np.any(rows[~own & (atom >= c), 3:]):
            raise RuntimeError("compute snap gave a derivative with respect to another cluster's atom")
        jac = np.zeros((e, self.size, 3))
        jac[edge[own], :, direction[own]] = -rows[own, 3:]
        return array[:c, 3:].copy(), jac

    def _run(self, positions: np.ndarray, types: np.ndarray, n_centres: int, box: float) -> np.ndarray:
        """compute snap's array for the clusters: (atoms + 3 n_pairs + 1, 3 + K)."""
        if self._lmp is None:
            self._start()
        lmp, total = self._lmp, len(types)
        try:
            lmp.command("delete_atoms group all")
            lmp.command(f"change_box all x final 0 {box!r} y final 0 {box!r} z final 0 {box!r} units box")
            lmp.create_atoms(total, list(range(1, total + 1)), types.tolist(), positions.ravel().tolist())
            lmp.command(f"group centres id 1:{n_centres}")
            # a fresh compute per call: compute snap sizes its array by the atom count at its creation
            if self._ran:
                lmp.command(f"uncompute {_PRESSURE_ID}")
                lmp.command(f"uncompute {_COMPUTE_ID}")
                self._ran = False
            lmp.command(self.compute_command())
            self._step += 1  # a new timestep, or the compute reuses the previous call's neighbour list
            lmp.command(f"reset_timestep {self._step}")
            lmp.command("run 0 post no")
            self._ran = True
            array = np.array(lmp.numpy.extract_compute(_COMPUTE_ID, 0, 2))
        except Exception as err:  # LAMMPS raises plain Exception subclasses
            self.close()  # a failed instance may be in any state: start afresh next time
            raise RuntimeError(f"LAMMPS compute snap (bispectrum descriptor) failed: {err}") from err
        if array.shape[0] < total + 1 or array.shape[1] != 3 + self.size:
            raise RuntimeError(f"compute snap array has shape {array.shape}, expected ({total} + 3 pairs + 1, "
                               f"{3 + self.size})")
        return array
