"""Export to TorchScript for LAMMPS: torch symmetry functions equal KLIFF's, the scripted model equals the model.

The exported module sees what the C++ pair style gives it: species, edges and
edge vectors; energies, forces (F[dst] -= g, F[src] += g with g = dE/dv) and
the virial (Σ v ⊗ g) are made here as the C++ side makes them, and compared
with EnergyModel's own prediction on float64 models with non-trivial heads.
"""

import copy
import itertools
import json
import math

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk
from scipy.spatial.distance import cdist

from eip2nn.nn.checkpoint import save_checkpoint
from eip2nn.nn.config import ModelConfig
from eip2nn.nn.descriptors import SymmetryFunctions
from eip2nn.nn.export import FORMAT, METADATA_FILE, export_model, load_exported
from eip2nn.nn.graph import build_graph, collate
from eip2nn.nn.model import DFT_HEAD, EnergyModel
from eip2nn.nn.sf_torch import TorchSymmetryFunctions

BACKBONES = ["schnet", "symmetry_functions", "bispectrum"]
CUTOFF = 4.0  # Å
TOL = 1e-10  # eV, eV/Å, eV/Å³; and for descriptors (absolute)
JACOBIAN_TOL = 1e-8  # 1/Å

# the LAMMPS side loads TorchScript with libtorch; this torch marks torch.jit deprecated
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:DeprecationWarning")


def si_diamond(seed=0):
    a = bulk("Si", "diamond", 5.43, cubic=True)
    a.rattle(0.1, seed=seed)
    return a


def ti_al(seed=1):
    a = bulk("Ti", "hcp", 2.95, 4.68) * (2, 2, 1)
    a.symbols[[1, 4, 6]] = "Al"
    a.rattle(0.1, seed=seed)
    return a


def cu_au_cluster(seed=2):
    """Open cluster (no cell): an fcc fragment with two Au."""
    a = bulk("Cu", "fcc", 3.6, cubic=True) * (2, 1, 1)
    a.symbols[[0, 5]] = "Au"
    a.rattle(0.1, seed=seed)
    return Atoms(a.symbols, positions=a.positions, pbc=False)


STRUCTURES = {"Si diamond": si_diamond, "Ti-Al hcp": ti_al, "Cu-Au cluster": cu_au_cluster}


def species_of(atoms):
    return sorted(set(atoms.get_chemical_symbols()))


@pytest.fixture(scope="module")
def mlearn_si(data_mirror_session):
    from eip2nn.data import load_dataset

    return load_dataset("mlearn/Si/train")[:3]


def make_model(backbone, species, atoms_for_standardisation=()):
    """Float64, width 8, depth 2, heads with scale and per-element offsets far from 1 and 0."""
    torch.manual_seed(3)
    extra = {"twojmax": 4} if backbone == "bispectrum" else {}
    config = ModelConfig(backbone=backbone, cutoff=CUTOFF, width=8, depth=2, n_rbf=8, head_hidden=8, **extra)
    model = EnergyModel(config, species, ["dft", "eip"]).double()
    with torch.no_grad():
        for name in model.head_names:
            model.head(name).scale.fill_(0.7)
            model.head(name).offsets.copy_(-3.0 - torch.arange(len(species), dtype=torch.float64))
    if backbone != "schnet" and atoms_for_standardisation:
        model.backbone.fit_standardisation([model.graph(a) for a in atoms_for_standardisation])
    return model.eval()


def edge_inputs(graph):
    """(species, edge_src, edge_dst, edge_vectors) as the C++ side gives them."""
    v = graph.positions[graph.edge_dst] - graph.positions[graph.edge_src] + graph.edge_offset
    return graph.species, graph.edge_src, graph.edge_dst, v


def exported_prediction(module, species, src, dst, v, n_local=None):
    """Per-atom energies (n,) eV, forces (n, 3) eV/Å on every atom, and Σ v ⊗ dE/dv (3, 3) eV."""
    v = v.detach().clone().requires_grad_()
    energies = module(species, src, dst, v)
    n_local = energies.shape[0] if n_local is None else n_local
    (g,) = torch.autograd.grad(energies[:n_local].sum(), v)
    forces = torch.zeros(species.shape[0], 3, dtype=v.dtype).index_add_(0, dst, -g).index_add_(0, src, g)
    return energies.detach(), forces, v.detach().T @ g


def voigt_stress(virial, cell):
    """(6,) eV/Å³ in EnergyModel's convention (ASE sign, xx yy zz yz xz xy) from Σ v ⊗ dE/dv."""
    sym = 0.5 * (virial + virial.T) / torch.linalg.det(cell).abs()
    return sym[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]


def kliff_and_torch(atoms, species, hyperparams, cutoff=CUTOFF):
    """(graph with KLIFF's G and Jacobian (E, D, 3), edge vectors requiring grad, torch G (N, D))."""
    graph = build_graph(atoms, cutoff, species, SymmetryFunctions(species, cutoff, hyperparams))
    _, src, _, v = edge_inputs(graph)
    v = v.clone().requires_grad_()
    return graph, v, TorchSymmetryFunctions.from_kliff(cutoff, hyperparams)(src, v, graph.n_atoms)


def torch_jacobian(g, v):
    """(E, D, 3) dG[src]/dv by autograd: an edge changes only its source atom's G, so d(Σ_atoms G[:, d])/dv."""
    basis = torch.eye(g.shape[1], dtype=g.dtype)[:, None, :].expand(-1, g.shape[0], -1)
    (jac,) = torch.autograd.grad(g, v, grad_outputs=basis, is_grads_batched=True)
    return jac.transpose(0, 1)


def assert_descriptors_equal(atoms, species, hyperparams, cutoff=CUTOFF):
    """Values to TOL and the full Jacobian to JACOBIAN_TOL (one backward pass per function)."""
    graph, v, g = kliff_and_torch(atoms, species, hyperparams, cutoff)
    assert graph.descriptor.abs().max() > 0.1  # the structure has neighbours
    assert (g.detach() - graph.descriptor).abs().max() < TOL
    assert (torch_jacobian(g, v) - graph.descriptor_jacobian).abs().max() < JACOBIAN_TOL


@pytest.mark.parametrize("hyperparams", ["set51", "set30"])
def test_symmetry_functions_equal_kliff_on_mlearn_si(mlearn_si, hyperparams):
    """Values, and the Jacobian contracted with random weights W (N, D): d(Σ W·G)/dv = Σ_d W[src, d] J[:, d]
    (one backward pass instead of D; the full Jacobian is checked on the smaller structures below)."""
    weights = torch.Generator().manual_seed(0)
    for atoms in mlearn_si:
        graph, v, g = kliff_and_torch(atoms, ["Si"], hyperparams, cutoff=5.0)
        assert (g.detach() - graph.descriptor).abs().max() < TOL
        for _ in range(3):
            w = torch.randn(g.shape, generator=weights, dtype=g.dtype)
            (contracted,) = torch.autograd.grad((w * g).sum(), v, retain_graph=True)
            expected = torch.einsum("edk,ed->ek", graph.descriptor_jacobian, w[graph.edge_src])
            assert (contracted - expected).abs().max() < JACOBIAN_TOL


@pytest.mark.parametrize("hyperparams", ["set51", "set30"])
@pytest.mark.parametrize("name", ["Ti-Al hcp", "Cu-Au cluster"])
def test_symmetry_functions_equal_kliff_for_two_elements(name, hyperparams):
    atoms = STRUCTURES[name]()
    assert_descriptors_equal(atoms, species_of(atoms), hyperparams)


def test_every_kliff_function_kind_in_its_order():
    """G1, G3, G5 too, with the table's order kept (not grouped by kind)."""
    hyperparams = {"g5": [{"zeta": 2, "lambda": -1, "eta": 0.01}, {"zeta": 1, "lambda": 1, "eta": 0.05}],
                   "g2": [{"eta": 0.1, "Rs": 1.0}], "g1": None, "g3": [{"kappa": 0.7}, {"kappa": 1.3}],
                   "g4": [{"zeta": 4, "lambda": -1, "eta": 0.02}]}
    atoms = ti_al()
    assert_descriptors_equal(atoms, species_of(atoms), hyperparams)


@pytest.mark.parametrize("name", list(STRUCTURES))
@pytest.mark.parametrize("backbone", BACKBONES)
def test_exported_model_equals_model(tmp_path, backbone, name):
    atoms = STRUCTURES[name]()
    model = make_model(backbone, species_of(atoms), [atoms, STRUCTURES[name](seed=7)])
    export_model(model, tmp_path / "model.pt")
    module, _ = load_exported(tmp_path / "model.pt")

    graph = model.graph(atoms)
    energies, forces, virial = exported_prediction(module, *edge_inputs(graph))
    batch = collate([graph])
    expected = model(batch, heads=["dft"], stress=graph.periodic)["dft"]
    per_atom = model.atomic_energies(batch, edge_inputs(graph)[3], ["dft"])["dft"].detach()
    assert (energies - per_atom).abs().max() < TOL
    assert abs(energies.sum() - expected.energy[0]) < TOL
    assert (forces - expected.forces).abs().max() < TOL
    if graph.periodic:
        assert (voigt_stress(virial, graph.cell) - expected.stress[0]).abs().max() < TOL


def exported_ti_al(tmp_path, backbone: str):
    """(structure, model, exported module) for the Ti–Al structure."""
    atoms = ti_al()
    model = make_model(backbone, species_of(atoms), [atoms])
    export_model(model, tmp_path / "model.pt")
    module, _ = load_exported(tmp_path / "model.pt")
    return atoms, model, module


@pytest.mark.parametrize("backbone", BACKBONES)
def test_edge_order_is_free(tmp_path, backbone):
    """The C++ side lists edges in its own order."""
    atoms, model, module = exported_ti_al(tmp_path, backbone)
    species, src, dst, v = edge_inputs(model.graph(atoms))
    shuffle = torch.randperm(src.shape[0], generator=torch.Generator().manual_seed(0))
    e_sorted, f_sorted, _ = exported_prediction(module, species, src, dst, v)
    e_shuffled, f_shuffled, _ = exported_prediction(module, species, src[shuffle], dst[shuffle], v[shuffle])
    assert (e_sorted - e_shuffled).abs().max() < TOL
    assert (f_sorted - f_shuffled).abs().max() < TOL


@pytest.mark.parametrize("backbone", BACKBONES)
def test_energies_from_the_descriptor_are_forward_s(tmp_path, backbone):
    """energies_from_descriptor(species, B): what the pair style's native descriptor path runs in torch."""
    atoms, model, module = exported_ti_al(tmp_path, backbone)
    species, src, dst, v = edge_inputs(model.graph(atoms))
    if backbone == "schnet":
        with pytest.raises(torch.jit.Error, match="no per-atom descriptor"):
            module.energies_from_descriptor(species, torch.zeros(len(atoms), 4, dtype=torch.float64))
        return
    descriptor = module.backbone.descriptor(src, v, len(atoms))
    assert (module.energies_from_descriptor(species, descriptor) - module(species, src, dst, v)).abs().max() < TOL


@pytest.mark.parametrize("members", [1, 2])
def test_schnet_layer_methods_in_turn_are_forward_s(tmp_path, members):
    """initial_features, then per layer layer_inputs and layer_update (what the pair style runs layer by layer,
    here on one graph), then energies_from_features: forward's per-atom energies, for a SchNet and a committee
    (members' features side by side)."""
    from eip2nn.nn.committee import Committee
    atoms = ti_al()
    models = [make_model("schnet", species_of(atoms), [atoms]) for _ in range(members)]
    with torch.no_grad():  # members that differ: each member's columns must go through its own layers
        for k, model in enumerate(models[1:], start=1):
            for p in model.backbone.parameters():
                p.mul_(1.0 + 0.3 * k)
    export_model(models[0] if members == 1 else Committee(models), tmp_path / "model.pt")
    module, meta = load_exported(tmp_path / "model.pt")
    species, src, dst, v = edge_inputs(models[0].graph(atoms))
    h = module.initial_features(species)
    assert h.shape == (len(atoms), meta["feature_width"])
    for layer in range(meta["message_passing_layers"]):
        h = module.layer_update(layer, h, module.layer_inputs(layer, h), src, dst, v)
    assert (module.energies_from_features(species, h) - module(species, src, dst, v)).abs().max() < TOL
    with pytest.raises(torch.jit.Error, match="no such layer"):
        module.layer_inputs(meta["message_passing_layers"], h)


def tabulated_convolution(table, spacing, inputs, src, dst, v, m):
    """The contract of the module docstring, in torch: agg (m, F) = Σ_{e: src=i} inputs[dst[e]] ⊙ w(r_e) with
    w(r) = Σ_p table[i, p] t^p, t = r / h - i (differentiable in v)."""
    s = torch.linalg.norm(v, dim=1) / spacing
    i = torch.clamp(s.detach().floor().long(), max=table.shape[0] - 1)
    t = (s - i)[:, None]
    c = table[i]
    w = sum(c[:, p] * t ** p for p in range(table.shape[1]))
    return torch.zeros(m, table.shape[2], dtype=v.dtype).index_add_(0, src, inputs[dst] * w)


@pytest.mark.parametrize("members", [1, 2])
def test_schnet_filter_table_gives_forward_s_energies_and_forces(tmp_path, members):
    """The tabulated filters (the pair style's default layer by layer), through layer_output, give forward's
    per-atom energies to 1e-12 and its forces to 1e-8 relative, for a SchNet and a committee (the members'
    tables side by side); the metadata states the spacing and errors as small."""
    from eip2nn.nn.committee import Committee
    atoms = ti_al()
    models = [make_model("schnet", species_of(atoms), [atoms]) for _ in range(members)]
    with torch.no_grad():
        for k, model in enumerate(models[1:], start=1):
            for p in model.backbone.parameters():
                p.mul_(1.0 + 0.3 * k)
    export_model(models[0] if members == 1 else Committee(models), tmp_path / "model.pt")
    module, meta = load_exported(tmp_path / "model.pt")
    spacing = meta["filter_table"]["spacing"]
    assert module.filter_spacing == spacing > 0
    assert module.filter_table.shape == (meta["message_passing_layers"], meta["filter_table"]["intervals"], 6,
                                         meta["feature_width"])
    assert meta["filter_table"]["intervals"] * spacing >= CUTOFF
    assert 0 < meta["filter_table"]["max_relative_error"]["filter"] < 1e-9
    assert 0 < meta["filter_table"]["max_relative_error"]["derivative"] < 1e-7
    species, src, dst, v = edge_inputs(models[0].graph(atoms))
    e_exact, f_exact, _ = exported_prediction(module, species, src, dst, v)
    v = v.detach().clone().requires_grad_()
    h = module.initial_features(species)
    for layer in range(meta["message_passing_layers"]):
        agg = tabulated_convolution(module.filter_table[layer], spacing, module.layer_inputs(layer, h), src, dst, v,
                                    len(atoms))
        h = module.layer_output(layer, h, agg)
    energies = module.energies_from_features(species, h)
    (g,) = torch.autograd.grad(energies.sum(), v)
    forces = torch.zeros(len(atoms), 3, dtype=v.dtype).index_add_(0, dst, -g).index_add_(0, src, g)
    assert (energies - e_exact).abs().max() < 1e-12 * e_exact.abs().max()
    assert 0 < (forces - f_exact).abs().max() < 1e-8 * f_exact.abs().max()  # 0 would be no table at all


@pytest.mark.parametrize("members", [1, 3])
def test_schnet_native_dense_weights_give_forward_s_energies(tmp_path, members):
    """The file's native_dense list, read as its documented layout (schnet_dense_weights; what the pair style's
    native SchNet computes), with the tabulated filters gives forward's per-atom energies to 1e-12 relative, for a
    SchNet and a committee (one wider network: block-diagonal weights, the heads' scales and 1 / members folded
    in); in float32 the list is float32. A file without a table has an empty list and says so."""
    from eip2nn.nn.committee import Committee
    atoms = ti_al()
    models = [make_model("schnet", species_of(atoms), [atoms]) for _ in range(members)]
    with torch.no_grad():  # members that differ, heads with a scale and offsets
        for k, model in enumerate(models):
            for p in model.parameters():
                p.mul_(1.0 + 0.3 * k)
            model.head(DFT_HEAD).scale.fill_(1.5 + k)
            model.head(DFT_HEAD).offsets.copy_(torch.tensor([-3.0, 2.0]) * (k + 1))
    meta = export_model(models[0] if members == 1 else Committee(models), tmp_path / "model.pt")
    module, saved = load_exported(tmp_path / "model.pt")
    assert meta["native_dense"] == saved["native_dense"] == "schnet"
    weights, layers, width = list(module.native_dense), meta["message_passing_layers"], meta["feature_width"]
    assert len(weights) == 1 + 5 * layers + 5 and all(w.dtype == torch.float64 for w in weights)
    species, src, dst, v = edge_inputs(models[0].graph(atoms))

    def ssp(x):
        return torch.nn.functional.softplus(x) - math.log(2.0)
    h = weights[0][species]
    assert h.shape == (len(atoms), width)
    for layer in range(layers):
        in2f, w0, b0, w2, b2 = weights[1 + 5 * layer:6 + 5 * layer]
        agg = tabulated_convolution(module.filter_table[layer], meta["filter_table"]["spacing"], h @ in2f.T, src,
                                    dst, v, len(atoms))
        h = h + ssp(agg @ w0.T + b0) @ w2.T + b2
    hw0, hb0, hw2, hb2, offsets = weights[-5:]
    energies = ssp(h @ hw0.T + hb0) @ hw2 + hb2 + offsets[species]
    e_exact = module(species, src, dst, v)
    assert (energies - e_exact).abs().max() < 1e-12 * e_exact.abs().max()

    export_model(models[0], tmp_path / "single.pt", dtype="float32")
    assert all(w.dtype == torch.float32 for w in load_exported(tmp_path / "single.pt")[0].native_dense)
    meta = export_model(models[0], tmp_path / "plain.pt", filter_spacing=0)
    assert meta["native_dense"] == "" and list(load_exported(tmp_path / "plain.pt")[0].native_dense) == []


def test_schnet_filter_table_is_quintic_hermite_of_the_network(tmp_path):
    """Each interval's quintic takes the filter's value, slope and curvature (forward-mode autograd of the network,
    on float64) at both its knots, so w is C² across knots; its error falls as spacing⁶ (halving the spacing: 50-80x
    smaller here); a cut-off that is not a whole number of intervals is matched to its inside (the last interval
    straddles it, with the filter's formula continued past it), as accurately as the others."""
    from eip2nn.nn.export import _filter_of, filter_table, filter_table_errors
    atoms = ti_al()
    backbone = make_model("schnet", species_of(atoms), [atoms]).backbone
    h = 0.05
    table = filter_table(backbone, h)
    n = table.shape[1]
    assert table.shape == (len(backbone.interactions), math.ceil(backbone.cutoff / h), 6, backbone.width)
    knots = torch.arange(1, n - 1, dtype=torch.float64) * h  # inner knots: each ends one interval, starts the next
    for k, block in enumerate(backbone.interactions):
        w = _filter_of(block, backbone.rbf_gamma, backbone.rbf_centres, backbone.cutoff)
        ones = torch.ones_like(knots)
        y, dy = torch.func.jvp(w, (knots,), (ones,))
        d2y = torch.func.jvp(lambda r: torch.func.jvp(w, (r,), (torch.ones_like(r),))[1], (knots,), (ones,))[1]
        c = table[k].double()
        right = c[1:n - 1]  # the interval starting at the knot, at t = 0
        left = c[0:n - 2]   # the interval ending at it, at t = 1
        powers = torch.arange(6, dtype=torch.float64)[None, :, None]
        for value, at_start, at_end in [
                (y, right[:, 0], left.sum(1)),
                (dy * h, right[:, 1], (powers * left).sum(1)),
                (d2y * h * h, 2 * right[:, 2], (powers * (powers - 1) * left).sum(1))]:
            scale = value.abs().max()
            assert (at_start - value).abs().max() < 1e-12 * scale
            assert (at_end - value).abs().max() < 1e-10 * scale
    coarse, fine = (filter_table_errors(backbone, filter_table(backbone, s), s) for s in (2 * h, h))
    assert 30 < coarse["filter"] / fine["filter"] < 100
    assert fine["filter"] < 1e-8
    odd = 0.037  # cutoff / odd is not a whole number
    assert backbone.cutoff / odd % 1 > 0.05
    errors = filter_table_errors(backbone, filter_table(backbone, odd), odd)
    assert errors["filter"] < 1e-8 and errors["derivative"] < 1e-6


def test_a_schnet_exported_without_a_filter_table(tmp_path):
    """filter_spacing 0: no table and no metadata key; a negative spacing is refused."""
    atoms = ti_al()
    model = make_model("schnet", species_of(atoms), [atoms])
    meta = export_model(model, tmp_path / "model.pt", filter_spacing=0)
    module, saved = load_exported(tmp_path / "model.pt")
    assert "filter_table" not in meta and "filter_table" not in saved
    assert module.filter_table.numel() == 0 and module.filter_spacing == 0
    with pytest.raises(ValueError, match="filter spacing"):
        export_model(model, tmp_path / "bad.pt", filter_spacing=-0.01)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_edges_beyond_the_cutoff_change_nothing(tmp_path, backbone):
    """A neighbour list with a skin (LAMMPS' default) gives the same energies and forces."""
    atoms, model, module = exported_ti_al(tmp_path, backbone)
    e_exact, f_exact, _ = exported_prediction(module, *edge_inputs(build_graph(atoms, CUTOFF, species_of(atoms))))
    with_skin = build_graph(atoms, CUTOFF + 1.0, species_of(atoms))
    assert with_skin.edge_src.shape[0] > model.graph(atoms).edge_src.shape[0]
    e_skin, f_skin, _ = exported_prediction(module, *edge_inputs(with_skin))
    assert (e_skin - e_exact).abs().max() < TOL
    assert (f_skin - f_exact).abs().max() < TOL


def test_a_float32_model_is_exported_in_float64(tmp_path):
    atoms = ti_al()
    model32 = make_model("schnet", species_of(atoms)).float()
    export_model(model32, tmp_path / "float32.pt")
    export_model(copy.deepcopy(model32).double(), tmp_path / "float64.pt")
    inputs = edge_inputs(build_graph(atoms, CUTOFF, species_of(atoms)))
    e64 = load_exported(tmp_path / "float64.pt")[0](*inputs)
    e32 = load_exported(tmp_path / "float32.pt")[0](*inputs)
    assert e32.dtype == torch.float64
    assert (e32 - e64).abs().max() < TOL  # float32 weights are exact in float64


def with_ghosts(atoms, reach):
    """LAMMPS' view of a periodic cell: an open structure of the local atoms, then their images within
    ``reach`` Å of a local atom (ghosts); and the owner (local index) of every atom."""
    cell = atoms.cell.array
    spacing = abs(np.linalg.det(cell)) / np.linalg.norm(np.cross(cell[[1, 2, 0]], cell[[2, 0, 1]]), axis=1)
    reps = [int(np.ceil(reach / s)) for s in spacing]
    positions, owners = [atoms.positions], [np.arange(len(atoms))]
    for shift in itertools.product(*(range(-r, r + 1) for r in reps)):
        if any(shift):
            image = atoms.positions + np.array(shift) @ cell
            near = cdist(image, atoms.positions).min(axis=1) <= reach
            positions.append(image[near])
            owners.append(np.flatnonzero(near))
    owner = np.concatenate(owners)
    symbols = np.array(atoms.get_chemical_symbols())[owner]
    return Atoms(symbols, positions=np.concatenate(positions), pbc=False), torch.from_numpy(owner)


@pytest.mark.parametrize("backbone", BACKBONES)
def test_ghost_atoms_within_interaction_range_give_the_periodic_result(tmp_path, backbone):
    """Local energies summed and ghost forces folded onto their owners, as the pair style does."""
    atoms = ti_al()
    model = make_model(backbone, species_of(atoms), [atoms])
    metadata = export_model(model, tmp_path / "model.pt")
    module, _ = load_exported(tmp_path / "model.pt")
    cluster, owner = with_ghosts(atoms, metadata["interaction_range"])
    cluster_graph = build_graph(cluster, metadata["cutoff"], metadata["species"])
    energies, forces_all, _ = exported_prediction(module, *edge_inputs(cluster_graph), n_local=len(atoms))
    expected = model(collate([model.graph(atoms)]), heads=["dft"])["dft"]
    assert abs(energies[: len(atoms)].sum() - expected.energy[0]) < TOL
    forces = torch.zeros(len(atoms), 3, dtype=torch.float64).index_add_(0, owner, forces_all)
    assert (forces - expected.forces).abs().max() < TOL


@pytest.mark.parametrize("backbone", BACKBONES)
def test_export_from_checkpoint(tmp_path, backbone):
    atoms = si_diamond()
    model = make_model(backbone, ["Si"], [atoms])
    path = save_checkpoint(tmp_path / "ckpt.pt", model)
    export_model(path, tmp_path / "model.pt", head="eip")
    module, metadata = load_exported(tmp_path / "model.pt")
    graph = model.graph(atoms)
    energies, forces, _ = exported_prediction(module, *edge_inputs(graph))
    expected = model(collate([graph]), heads=["eip"])["eip"]
    assert metadata["head"] == "eip"
    assert abs(energies.sum() - expected.energy[0]) < TOL
    assert (forces - expected.forces).abs().max() < TOL


@pytest.mark.parametrize("backbone", BACKBONES)
def test_isolated_atoms_get_their_energy(tmp_path, backbone):
    """Atoms with no edges (alone, or far from a bonded pair) still get offset + MLP of isolated features."""
    atoms = Atoms("TiAlTi", positions=[[0, 0, 0], [2.5, 0, 0], [20, 0, 0]], pbc=False)
    model = make_model(backbone, ["Al", "Ti"], [ti_al()])
    export_model(model, tmp_path / "model.pt")
    module, _ = load_exported(tmp_path / "model.pt")
    for structure in (atoms, atoms[[2]]):
        graph = model.graph(structure)
        energies, _, _ = exported_prediction(module, *edge_inputs(graph))
        expected = model.atomic_energies(collate([graph]), edge_inputs(graph)[3], ["dft"])["dft"].detach()
        assert torch.isfinite(energies).all()
        assert (energies - expected).abs().max() < TOL
    empty = torch.zeros(0, dtype=torch.long)
    alone = module(torch.tensor([1]), empty, empty, torch.zeros(0, 3, dtype=torch.float64))
    assert torch.isfinite(alone).all()


@pytest.mark.parametrize("backbone", BACKBONES)
def test_metadata_is_saved_in_the_file(tmp_path, backbone):
    model = make_model(backbone, ["Al", "Ti"])
    model.reference_eip = "EAM_Dynamo_Example__MO_000000000000_000"
    returned = export_model(model, tmp_path / "model.pt")
    extra = {METADATA_FILE: ""}
    torch.jit.load(str(tmp_path / "model.pt"), _extra_files=extra)
    metadata = json.loads(extra[METADATA_FILE])
    assert metadata == returned
    assert metadata["format"] == FORMAT
    assert metadata["species"] == ["Al", "Ti"]
    assert metadata["cutoff"] == CUTOFF
    assert metadata["interaction_range"] == (2 * CUTOFF if backbone == "schnet" else CUTOFF)
    assert metadata["backbone"] == backbone
    assert metadata["native_descriptor"] == ("" if backbone == "schnet" else backbone)
    assert (metadata["head"], metadata["dtype"], metadata["units"]) == ("dft", "float64", "metal")
    assert metadata["reference_eip"] == model.reference_eip
    assert metadata["eip2nn_version"]


def test_a_missing_head_is_refused(tmp_path):
    model = make_model("schnet", ["Si"])
    with pytest.raises(ValueError, match="no head 'EAM_missing'"):
        export_model(model, tmp_path / "model.pt", head="EAM_missing")
    assert not (tmp_path / "model.pt").exists()
