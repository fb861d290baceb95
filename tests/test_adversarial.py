"""Adversarial validation: a classifier separating two structure sets, out of fold."""

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from eip2nn.diagnostics import AdversarialResult, adversarial_validation
from eip2nn.diagnostics.adversarial import AUC_INDISTINGUISHABLE, AUC_OUT_OF_DOMAIN


def si_family(n: int, seed: int, tag: str, vacuum: float = 0.0) -> list[Atoms]:
    """``n`` diamond-Si cells (8 and 16 atoms in turn), strained by up to ±3 % and rattled by 0.02–0.1 Å;
    ``vacuum`` Å along z makes them slabs (still fully periodic). ``info["config_id"]`` is ``"<tag>/<index>"``."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        atoms = bulk("Si", "diamond", a=5.431 * rng.uniform(0.97, 1.03), cubic=True).repeat((1, 1, 1 + i % 2))
        atoms.rattle(rng.uniform(0.02, 0.1), seed=int(rng.integers(2**31)))
        if vacuum:
            atoms.center(vacuum=vacuum / 2, axis=2)
        atoms.info["config_id"] = f"{tag}/{i}"
        out.append(atoms)
    return out


def test_two_random_halves_of_one_family_are_indistinguishable():
    # 100 vs 100: over 20 family and split seeds the mean AUC spread 0.43-0.64 (std 0.05); this one is 0.50
    family = si_family(200, seed=0, tag="bulk")
    order = np.random.default_rng(0).permutation(len(family))
    a, b = [family[i] for i in order[:100]], [family[i] for i in order[100:]]
    result = adversarial_validation(a, b)
    assert abs(result.auc_mean - 0.5) < 0.15
    assert result.verdict.startswith("indistinguishable")
    assert result.auc_per_fold.shape == (15,) and result.auc_std > 0
    assert result.prob_b_of_a.shape == (100,) and result.prob_b_of_b.shape == (100,)
    assert 0 <= result.prob_b_of_a.min() and result.prob_b_of_b.max() <= 1


def test_slabs_are_out_of_the_domain_of_bulk_cells_and_slabs_planted_in_bulk_are_found():
    planted = si_family(3, seed=2, tag="planted", vacuum=8.0)
    a = si_family(40, seed=0, tag="bulk") + planted
    b = si_family(20, seed=1, tag="slab", vacuum=8.0)
    result = adversarial_validation(a, b, species=["Si"])
    print(f"\nbulk (40 + 3 planted slabs) vs slabs (20): {result.table()}")  # docs/diagnostics.md quotes it
    assert result.auc_mean > 0.9
    assert result.verdict == "B is out of A's domain"
    found = result.most_b_like(a, 3)
    assert sorted(name for _, name, _ in found) == ["planted/0", "planted/1", "planted/2"]
    assert [a[i].info["config_id"] for i, _, _ in found] == [name for _, name, _ in found]
    assert min(p for _, _, p in found) > result.prob_b_of_a[:40].max()
    ranked = result.most_out_of_domain(b, 20)
    assert sorted(i for i, _, _ in ranked) == list(range(20))
    assert [p for _, _, p in ranked] == sorted(result.prob_b_of_b, reverse=True)
    # a slab's cell holds vacuum: its volume per atom alone separates it from a bulk cell
    assert len(result.top_features) == 5 and "volume_per_atom" in dict(result.top_features)
    assert "ROC AUC" in result.table() and result.top_features[0][0] in result.table()


def test_the_same_seed_gives_the_same_result_and_another_seed_other_splits():
    a, b = si_family(12, seed=3, tag="a"), si_family(12, seed=4, tag="b")
    first, again = (adversarial_validation(a, b, folds=3, repeats=2, seed=5) for _ in range(2))
    other = adversarial_validation(a, b, folds=3, repeats=2, seed=6)
    np.testing.assert_array_equal(first.auc_per_fold, again.auc_per_fold)
    np.testing.assert_array_equal(first.prob_b_of_a, again.prob_b_of_a)
    assert first.top_features == again.top_features
    assert not np.array_equal(first.prob_b_of_a, other.prob_b_of_a)


@pytest.mark.parametrize("a_size, b_size, kwargs, message", [
    (0, 6, {}, "set A is empty"),
    (6, 0, {}, "set B is empty"),
    (6, 4, {}, "set B has 4 structures; 5-fold cross-validation needs at least 5 in each set"),
    (6, 6, {"folds": 1}, "at least 2 folds"),
    (6, 6, {"repeats": 0}, "repeats"),
])
def test_refuses_sets_too_small_for_the_folds(a_size, b_size, kwargs, message):
    with pytest.raises(ValueError, match=message):
        adversarial_validation(si_family(a_size, 0, "a"), si_family(b_size, 1, "b"), **kwargs)


def test_refuses_a_structure_with_an_element_not_in_species():
    b = si_family(6, 1, "b")
    b[2].symbols[0] = "Ge"
    with pytest.raises(ValueError, match=r"set B, b/2: contains \['Ge'\], not in species \['Si'\]"):
        adversarial_validation(si_family(6, 0, "a"), b, species=["Si"])


def test_verdict_thresholds_and_naming_needs_the_validated_set():
    def result(auc):
        return AdversarialResult(auc, 0.05, np.full(15, auc), np.array([0.2, 0.9]), np.array([0.7]),
                                 ["volume_per_atom"], [("volume_per_atom", 1.0)], 5, 3)

    assert result(0.5).verdict.startswith("indistinguishable")
    assert result(AUC_INDISTINGUISHABLE + 0.01).verdict.startswith("partly out of domain")
    assert result(AUC_OUT_OF_DOMAIN + 0.01).verdict == "B is out of A's domain"
    a = si_family(2, 0, "a")
    assert result(0.9).most_b_like(a, 1) == [(1, "a/1", 0.9)]
    with pytest.raises(ValueError, match="pass set A as it was validated"):
        result(0.9).most_b_like(a[:1], 1)


def test_the_diagnose_command_names_the_structures_that_differ(tmp_path, capsys):
    from ase.io import write

    from eip2nn.cli import main
    write(tmp_path / "bulk.xyz", si_family(20, seed=3, tag="bulk"))
    write(tmp_path / "slabs.xyz", si_family(10, seed=4, tag="slab", vacuum=6.0))
    assert main(["diagnose", "adversarial", str(tmp_path / "bulk.xyz"), str(tmp_path / "slabs.xyz"),
                 "--repeats", "1", "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "B = " in out and "  slab/" in out and "  bulk/" in out  # names kept from the files
    with pytest.raises(SystemExit, match="neither a registered dataset"):
        main(["diagnose", "adversarial", str(tmp_path / "missing.xyz"), str(tmp_path / "slabs.xyz")])
