"""The bispectrum backbone's descriptor: LAMMPS's own per-atom bispectrum, exact edge Jacobians, any cell;
and its torch twin, which an exported model carries into LAMMPS.

The physics every backbone must satisfy (forces, stress, invariances) is in
tests/test_nn_physics.py, which runs the bispectrum backbone too.
"""

import numpy as np
import pytest
import torch
from ase.build import bulk

import eip2nn.nn.bispectrum as bispectrum
from eip2nn.nn.bispectrum import BispectrumDescriptor
from eip2nn.nn.bispectrum_torch import TorchBispectrum
from eip2nn.nn.config import ModelConfig
from eip2nn.nn.graph import build_graph
from eip2nn.nn.model import EnergyModel
from eip2nn.potentials.frames import lammps_frame
from eip2nn.potentials.lammps_backend import import_lammps
from eip2nn.snap.bispectrum import n_bispectrum

CUTOFF = 4.5


def small_triclinic_cell():
    """A 4-atom triclinic SiGe cell, thinner than twice the cut-off: atoms see several images of each other."""
    a = bulk("Si", "diamond", 5.43).repeat((1, 1, 2))
    a.symbols[1] = "Ge"
    a.rattle(0.05, seed=2)
    return a


def lammps_sna_atom(atoms, species, twojmax):
    """B_i from LAMMPS ``compute sna/atom`` on the periodic cell itself: an independent route to the values."""
    frame = lammps_frame(atoms.cell.array)
    (lx, ly, lz), (xy, xz, yz) = map(float, frame.boxhi), map(float, frame.tilts)
    lmp = import_lammps().lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        lmp.commands_list(["units metal", "atom_style atomic", "atom_modify map array sort 0 0",
                           f"region c prism 0 {lx} 0 {ly} 0 {lz} {xy} {xz} {yz} units box",
                           f"create_box {len(species)} c", *(f"mass {t} 1.0" for t in range(1, len(species) + 1)),
                           "pair_style zero 6.0", "pair_coeff * *"])
        types = [species.index(s) + 1 for s in atoms.get_chemical_symbols()]
        lmp.create_atoms(len(atoms), list(range(1, len(atoms) + 1)), types,
                         (atoms.positions @ frame.rotation).ravel().tolist())
        radii, weights = " ".join(["0.5"] * len(species)), " ".join(["1.0"] * len(species))
        lmp.command(f"compute b all sna/atom {CUTOFF} {bispectrum.RFAC0} {twojmax} {radii} {weights} "
                    "rmin0 0.0 bzeroflag 1 switchflag 1")
        lmp.command("run 0")
        return np.array(lmp.numpy.extract_compute("b", 1, 2))
    finally:
        lmp.close()


def descriptors(atoms, descriptor):
    g = build_graph(atoms, CUTOFF, descriptor.species, descriptor)
    return g.descriptor.numpy(), g


def test_values_equal_lammps_sna_atom_on_a_small_triclinic_cell():
    atoms = small_triclinic_cell()
    d = BispectrumDescriptor(["Ge", "Si"], CUTOFF, twojmax=6)
    g, _ = descriptors(atoms, d)
    assert g.shape == (4, 30) and d.size == 30
    expected = lammps_sna_atom(atoms, ["Ge", "Si"], 6)
    np.testing.assert_allclose(g, expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def test_edge_jacobians_equal_finite_differences():
    atoms = small_triclinic_cell()
    d = BispectrumDescriptor(["Ge", "Si"], CUTOFF, twojmax=4)
    _, graph = descriptors(atoms, d)
    src, dst, jac = graph.edge_src.numpy(), graph.edge_dst.numpy(), graph.descriptor_jacobian.numpy()
    n, k = len(atoms), d.size
    analytic = np.zeros((n, k, n, 3))  # dB_i/dr_a: + J on the neighbour's images, − J on the centre
    for e, (i, j) in enumerate(zip(src, dst)):
        analytic[i, :, j] += jac[e]
        analytic[i, :, i] -= jac[e]
    h = 1e-5
    for a in range(n):
        for c in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[a, c] += h
            minus.positions[a, c] -= h
            numeric = (descriptors(plus, d)[0] - descriptors(minus, d)[0]) / (2 * h)
            np.testing.assert_allclose(analytic[:, :, a, c], numeric, atol=1e-7 * np.abs(analytic).max())


def test_batches_of_clusters_do_not_change_the_result(monkeypatch):
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    atoms.rattle(0.05, seed=4)
    one_call = BispectrumDescriptor(["Si"], CUTOFF, twojmax=4)
    g1, graph1 = descriptors(atoms, one_call)
    monkeypatch.setattr(bispectrum, "BATCH_ATOMS", 1)  # one cluster per LAMMPS call
    many_calls = BispectrumDescriptor(["Si"], CUTOFF, twojmax=4)
    g2, graph2 = descriptors(atoms, many_calls)
    # equal to round-off: the clusters sit at other places of the LAMMPS box
    np.testing.assert_allclose(g2, g1, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(graph2.descriptor_jacobian.numpy(), graph1.descriptor_jacobian.numpy(),
                               rtol=1e-12, atol=1e-12)


def test_a_model_on_the_bispectrum_backbone_survives_a_copy():
    import copy

    torch.manual_seed(0)
    model = EnergyModel(ModelConfig(backbone="bispectrum", cutoff=CUTOFF, twojmax=4, width=8, depth=1),
                        ["Si"], ["dft"]).double()
    atoms = bulk("Si", "diamond", 5.43, cubic=True)
    twin = copy.deepcopy(model)  # the EMA copy: its LAMMPS instance is not copied, it starts its own
    np.testing.assert_array_equal(twin.graph(atoms).descriptor.numpy(), model.graph(atoms).descriptor.numpy())


@pytest.mark.parametrize("twojmax", [0, 1, 3, 6, 8])
def test_the_torch_bispectrum_equals_lammps_values_and_jacobians(twojmax):
    """TorchBispectrum (what an exported model computes in LAMMPS) against compute snap's B and dB/dv, on the
    small triclinic Ge-Si cell; every band limit's component order and count."""
    atoms = small_triclinic_cell()
    d = BispectrumDescriptor(["Ge", "Si"], CUTOFF, twojmax=twojmax)
    g, graph = descriptors(atoms, d)
    v = (graph.positions[graph.edge_dst] - graph.positions[graph.edge_src] + graph.edge_offset).requires_grad_()
    module = torch.jit.script(TorchBispectrum(CUTOFF, twojmax, bispectrum.RFAC0))
    expected = graph.descriptor_jacobian.numpy()  # (E, K, 3): an edge moves only its source atom's B
    for _ in range(3):  # TorchScript optimises the graph after the first calls: later calls must agree too
        b = module(graph.edge_src, v, graph.n_atoms)
        assert b.shape == g.shape == (4, n_bispectrum(twojmax))
        np.testing.assert_allclose(b.detach().numpy(), g, rtol=0, atol=1e-10 * np.abs(g).max())
        jac = torch.stack([torch.autograd.grad(b[:, k].sum(), v, retain_graph=True)[0] for k in range(b.shape[1])], 1)
        np.testing.assert_allclose(jac.numpy(), expected, rtol=0, atol=1e-10 * np.abs(expected).max())


def test_an_atom_without_neighbours_has_zero_bispectrum_and_far_edges_count_nothing():
    module = TorchBispectrum(CUTOFF, 4, bispectrum.RFAC0)
    v = torch.tensor([[CUTOFF, 0.0, 0.0], [0.0, 0.0, CUTOFF + 1.0]], dtype=torch.float64)
    b = module(torch.tensor([1, 1]), v, 3)
    assert b.shape == (3, n_bispectrum(4)) and b.abs().max() < 1e-12  # round-off of Σ CG² = j + 1


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="twojmax"):
        ModelConfig(backbone="bispectrum", twojmax=-2)
    with pytest.raises(ValueError, match="distinct chemical symbols"):
        BispectrumDescriptor(["Si", "Si"], CUTOFF)
