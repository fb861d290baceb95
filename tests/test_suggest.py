"""`eip2nn suggest`: rank unlabelled structures for DFT by EIP committee disagreement, domain and model gap.

Real EIPs (LAMMPS SW and Tersoff for Si), a real label store, mlearn Si DFT labels for the labelled set.
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.io import read

from eip2nn.cli import main
from eip2nn.data import load_dataset
from eip2nn.data.files import write_dft_extxyz
from eip2nn.diagnostics.suggest import _percentiles, suggest

COMMITTEE = ["lmp_Si_sw", "lmp_Si_tersoff"]


def pool_with_planted(n_bulk: int = 12, duplicate: bool = False) -> list:
    """Rattled diamond Si cells near equilibrium, then one compressed by 12% (where the EIPs part ways), and
    with ``duplicate`` an exact copy of that one."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n_bulk):
        atoms = bulk("Si", "diamond", a=5.43 * rng.uniform(0.99, 1.01), cubic=True)
        atoms.rattle(0.05, seed=i)
        atoms.info["config_id"] = f"bulk/{i}"
        out.append(atoms)
    compressed = bulk("Si", "diamond", a=5.43 * 0.88, cubic=True)
    compressed.rattle(0.05, seed=100)
    compressed.info["config_id"] = "compressed"
    out.append(compressed)
    if duplicate:
        twin = compressed.copy()
        twin.info["config_id"] = "compressed-copy"
        out.append(twin)
    return out


@pytest.fixture
def labelled(data_dir):
    return list(load_dataset("mlearn/Si/train")[::18])  # 12 structures across the groups


def test_the_structure_where_eips_disagree_most_comes_first_and_its_duplicate_last(labelled, tmp_path):
    pool = pool_with_planted(duplicate=True)
    labels = str(tmp_path / "labels.sqlite")
    result = suggest(labelled, pool, ["Si"], labels, eips=COMMITTEE, seed=0)
    print("\n" + result.table())
    assert result.eips == COMMITTEE
    assert sorted(result.picked) == list(range(len(pool)))  # every pool structure once
    spread, force = result.signals["committee_energy"], result.signals["committee_force"]
    assert spread[12] > spread[:12].max() and force[12] > force[:12].max()  # the committee parts ways
    assert spread[12] == spread[13]
    assert {result.names[result.picked[0]], result.names[result.picked[-1]]} == {"compressed", "compressed-copy"}
    assert set(result.signals) == {"committee_energy", "committee_force", "energy_novelty", "pool_density",
                                   "out_of_domain"}
    assert 0 <= result.acquisition.min() and result.acquisition.max() <= 1
    again = suggest(labelled, pool, ["Si"], labels, eips=COMMITTEE, seed=0)
    assert again.picked == result.picked  # deterministic for a seed
    np.testing.assert_array_equal(again.acquisition, result.acquisition)


def test_the_committee_signals_are_the_aligned_spread_and_force_disagreement(labelled, tmp_path):
    from eip2nn.labelling.choice import label_with
    from eip2nn.potentials.db import PotentialsDB
    from eip2nn.weak.targets import fit_alignments
    pool = pool_with_planted(3)
    labels = str(tmp_path / "labels.sqlite")
    result = suggest(labelled, pool, ["Si"], labels, eips=COMMITTEE, seed=0)
    specs = [PotentialsDB().get(e) for e in COMMITTEE]
    with_labels = label_with(labelled + pool, specs, labels, None)
    align = fit_alignments(with_labels[:len(labelled)], COMMITTEE, ["Si"])
    for i, atoms in enumerate(with_labels[len(labelled):]):
        n = len(atoms)
        e = [atoms.info[f"{x}_energy"] + n * align[x].offsets[0] for x in COMMITTEE]
        assert result.signals["committee_energy"][i] == pytest.approx(abs(e[0] - e[1]) / 2 / n * 1000, rel=1e-9)
        half = (atoms.arrays["lmp_Si_sw_forces"] - atoms.arrays["lmp_Si_tersoff_forces"]) / 2
        assert result.signals["committee_force"][i] == pytest.approx(np.linalg.norm(half, axis=1).mean(), rel=1e-9)


def test_energy_novelty_is_the_distance_to_the_nearest_labelled_energy(labelled, tmp_path):
    """The committee's mean aligned energy per atom against the labelled DFT energies per atom, both less the
    per-element reference fitted to the labelled energies (for one element: Σ E / Σ n)."""
    from eip2nn.labelling.choice import label_with
    from eip2nn.potentials.db import PotentialsDB
    from eip2nn.weak.targets import fit_alignments
    pool = pool_with_planted(5)
    labels = str(tmp_path / "labels.sqlite")
    result = suggest(labelled, pool, ["Si"], labels, eips=COMMITTEE, seed=0)
    with_labels = label_with(labelled + pool, [PotentialsDB().get(e) for e in COMMITTEE], labels, None)
    align = fit_alignments(with_labels[:len(labelled)], COMMITTEE, ["Si"])
    n_lab = np.array([len(a) for a in labelled], dtype=float)
    e_lab = np.array([a.info["REF_energy"] for a in labelled])
    reference = e_lab @ n_lab / (n_lab @ n_lab)  # eV/atom: least squares of E ≈ n μ
    for i, atoms in enumerate(with_labels[len(labelled):]):
        n = len(atoms)
        mean = np.mean([atoms.info[f"{x}_energy"] + n * align[x].offsets[0] for x in COMMITTEE]) / n
        expected = np.abs((mean - reference) - (e_lab / n_lab - reference)).min() * 1000
        assert result.signals["energy_novelty"][i] == pytest.approx(expected, rel=1e-9)
    # the cell compressed by 12% lies much further from every labelled energy than the rattled ones
    assert result.signals["energy_novelty"][5] > 2 * result.signals["energy_novelty"][:5].max()


def test_a_model_adds_its_gap_to_the_committee_and_weights_choose_the_signals(labelled, tmp_path):
    pool = pool_with_planted(6)
    labels = str(tmp_path / "labels.sqlite")
    result = suggest(labelled, pool, ["Si"], labels, eips=COMMITTEE, model=LennardJones(sigma=2.1, epsilon=1.0),
                     weights={"committee_force": 0, "out_of_domain": 0}, seed=1)
    assert np.isfinite(result.signals["model_gap"]).all()
    # only committee_energy and model_gap count: the acquisition is the mean of their percentiles
    expected = (_percentiles(result.signals["committee_energy"]) + _percentiles(result.signals["model_gap"])) / 2
    np.testing.assert_allclose(result.acquisition, expected)
    with pytest.raises(ValueError, match="unknown signal"):
        suggest(labelled, pool, ["Si"], labels, eips=COMMITTEE, weights={"disagreement": 1})


def test_a_committee_of_networks_adds_the_spread_of_its_members(labelled, tmp_path):
    """model_spread: the sample std of the members' energies per atom, where the networks part ways."""
    import torch

    from eip2nn.calculator import EIP2NNCalculator
    from eip2nn.nn.committee import Committee
    from eip2nn.nn.config import ModelConfig
    from eip2nn.nn.model import DFT_HEAD, EnergyModel
    members = []
    for k in range(3):
        torch.manual_seed(k)
        members.append(EnergyModel(ModelConfig(backbone="schnet", cutoff=4.0, width=8, depth=1), ["Si"],
                                   [DFT_HEAD]).double())
    pool = pool_with_planted(4)
    calc = EIP2NNCalculator(Committee(members))
    result = suggest(labelled, pool, ["Si"], str(tmp_path / "labels.sqlite"), eips=COMMITTEE, model=calc, seed=1)
    spread = result.signals["model_spread"]
    for i in (0, 4):
        energies = []
        for m in members:
            atoms = pool[i].copy()
            atoms.calc = EIP2NNCalculator(m)
            energies.append(atoms.get_potential_energy())
        assert spread[i] == pytest.approx(np.std(energies, ddof=1) / len(pool[i]) * 1000, rel=1e-9)
    assert "model_spread (weight 1)" in result.notes[-1]
    single = suggest(labelled, pool, ["Si"], str(tmp_path / "labels.sqlite"), eips=COMMITTEE,
                     model=EIP2NNCalculator(members[0]), seed=1)
    assert "model_spread" not in single.signals  # one network has no spread


def test_pool_density_is_minus_the_mean_distance_to_the_nearest_pool_structures():
    from eip2nn.diagnostics.suggest import DENSITY_NEIGHBOURS, pool_density
    rng = np.random.default_rng(0)
    cluster = rng.normal(0.0, 0.1, size=(8, 3))
    x = np.vstack([cluster, [[5.0, 5.0, 5.0]]])  # eight alike, one far away
    density = pool_density(x)
    assert density.argmin() == 8 and (density[:8] > density[8] + 5).all()
    d = np.linalg.norm(x[3] - np.delete(x, 3, axis=0), axis=1)
    assert density[3] == pytest.approx(-np.sort(d)[:DENSITY_NEIGHBOURS].mean(), rel=1e-12)
    np.testing.assert_array_equal(pool_density(x[:1]), [0.0])


def test_percentiles_rank_within_the_pool_and_an_uncomputed_signal_counts_as_most_uncertain():
    np.testing.assert_allclose(_percentiles(np.array([3.0, 1.0, np.nan, 2.0])), [1.0, 0.0, 1.0, 0.5])


def test_the_command_writes_the_top_n_for_the_dft_code(labelled, tmp_path, capsys):
    from ase.io import write
    train = write_dft_extxyz(labelled, tmp_path / "mine.extxyz")
    pool_file = tmp_path / "pool.extxyz"
    write(pool_file, pool_with_planted(8), format="extxyz")
    out = tmp_path / "next.extxyz"
    assert main(["suggest", str(train), str(pool_file), "--n", "3", "-o", str(out), "--eips", *COMMITTEE,
                 "--labels", str(tmp_path / "labels.sqlite")]) == 0
    frames = read(out, ":")
    assert [f.info["suggest_rank"] for f in frames] == [1, 2, 3]
    assert len({f.info["suggest_pool_index"] for f in frames}) == 3
    assert frames[0].info["suggest_pool_index"] == 8  # the compressed cell
    assert all(f.calc is None for f in frames)  # no labels to mistake for DFT
    text = capsys.readouterr().out
    assert "committee: lmp_Si_sw, lmp_Si_tersoff" in text and "wrote the top 3" in text
