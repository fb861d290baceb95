"""Weak supervision: alignment, the selector, pseudo-labels, and the weak trainer arm (real Si data)."""

import numpy as np
import pytest
import torch
from test_training import stage_config

from eip2nn.data import load_dataset
from eip2nn.keys import ENERGY, FORCES, REF_ENERGY, REF_FORCES, WEAK_ENERGY, WEAK_SOURCE, eip_key
from eip2nn.labelling.store import LabelStore
from eip2nn.training import trainer
from eip2nn.training.loss import tukey_rho
from eip2nn.training.samples import WEAK_TARGET
from eip2nn.training.stages import run_stage
from eip2nn.weak.config import WeakConfig
from eip2nn.weak.labeller import WeakLabeller
from eip2nn.weak.selector import EIPSelector
from eip2nn.weak.targets import NONE, fit_alignments


@pytest.fixture(scope="module")
def si_structures(data_mirror_session):
    structures = load_dataset("mlearn/Si/train")
    pick = np.random.default_rng(0).choice(len(structures), 80, replace=False)  # the file is ordered by group
    return [structures[i] for i in pick]


def test_alignment_recovers_known_per_element_offsets(si_structures):
    rng = np.random.default_rng(0)
    structures = []
    for atoms in si_structures[:40]:  # a two-element set: some Si relabelled Ge, compositions vary
        a = atoms.copy()
        symbols = np.array(a.get_chemical_symbols())
        symbols[rng.random(len(a)) < rng.uniform(0.1, 0.9)] = "Ge"
        a.set_chemical_symbols(symbols.tolist())
        structures.append(a)
    mu = np.array([0.731, -2.4])  # eV/atom for Ge, Si
    for a in structures:
        n_ge, n_si = a.get_chemical_symbols().count("Ge"), a.get_chemical_symbols().count("Si")
        noise = rng.normal(0, 1e-3) * len(a)
        a.info[eip_key("fake", ENERGY)] = a.info[REF_ENERGY] - n_ge * mu[0] - n_si * mu[1] + noise
        a.arrays[eip_key("fake", FORCES)] = a.arrays[REF_FORCES] + 0.01
    al = fit_alignments(structures, ["fake"], ["Ge", "Si"])["fake"]
    np.testing.assert_allclose(al.offsets, mu, atol=2e-3)
    assert al.energy_mae < 2.0  # meV/atom: only the planted noise is left
    assert al.force_mae == pytest.approx(0.01)


def test_selector_estimator_learns_planted_rule_and_is_sklearn_compatible():
    from sklearn.base import clone

    rng = np.random.default_rng(1)
    X = rng.normal(size=(300, 4))
    y = np.where(X[:, 0] > 0, "eip_a", "eip_b").astype(object)
    y[X[:, 1] > 1.0] = NONE
    selector = EIPSelector(n_estimators=100, random_state=0).fit(X[:200], y[:200])
    assert selector.score(X[200:], y[200:]) > 0.9
    assert selector.predict_proba(X[200:]).shape == (100, 3)
    assert clone(selector).get_params()["n_estimators"] == 100
    logistic = EIPSelector(classifier="logistic").set_params(C=10.0)
    assert logistic.fit(X[:200], y[:200]).score(X[200:], y[200:]) > 0.8


def _plant(structures, rng):
    """Two fake EIPs: 'dense' exact below the median volume/atom, 'loose' exact above; both far off
    on the 15% largest volumes (class none). Wrong labels are off by ±(100..200) meV/atom."""
    vol = np.array([a.get_volume() / len(a) for a in structures])
    lo, hi = np.median(vol), np.quantile(vol, 0.85)
    truth = []
    for a, v in zip(structures, vol):
        wrong = {"dense": v >= lo, "loose": v < lo or v >= hi}
        for eip, bad in wrong.items():
            off = rng.uniform(0.1, 0.2) * rng.choice([-1, 1]) if bad else 0.0
            a.info[eip_key(eip, ENERGY)] = a.info[REF_ENERGY] + 3.0 * len(a) + off * len(a)  # +3 eV/atom zero shift
            a.arrays[eip_key(eip, FORCES)] = a.arrays[REF_FORCES].copy()
        truth.append(NONE if v >= hi else ("dense" if v < lo else "loose"))
    return truth


def test_weak_labeller_learns_planted_rule_and_labels_with_aligned_energies(si_structures):
    rng = np.random.default_rng(2)
    structures = [a.copy() for a in si_structures]
    truth = _plant(structures, rng)
    labelled, pool = structures[:50], structures[50:]
    labeller = WeakLabeller(WeakConfig(n_estimators=100), ["Si"], ["dense", "loose"], seed=0)
    report = labeller.fit(labelled)
    assert report.balanced_accuracy > 0.7
    assert report.mae_selector < report.mae_single_best_covered
    hidden = {}
    for k, a in enumerate(pool):
        hidden[k] = a.info.pop(REF_ENERGY)
        del a.arrays[REF_FORCES]
        a.info["config_id"] = f"pool {k}"
    pseudo = labeller.pseudo_label(pool)
    agree = np.mean([a.info[WEAK_SOURCE] == t for a, t in zip(pseudo.structures, truth[50:])])
    assert agree > 0.75
    for k, a in enumerate(pseudo.structures):
        if a.info[WEAK_SOURCE] == NONE:
            assert WEAK_ENERGY not in a.info
        else:  # the zero shift is removed by the alignment
            assert abs(a.info[WEAK_ENERGY] - a.info[eip_key(a.info[WEAK_SOURCE], ENERGY)] + 3.0 * len(a)) < 0.05 * len(a)
    correct = [k for k, a in enumerate(pseudo.structures) if a.info[WEAK_SOURCE] == truth[50 + k] != NONE]
    # correctly chosen pseudo-labels are DFT up to one per-atom constant per EIP (its offset's error)
    assert correct
    for eip in ("dense", "loose"):
        shift = np.array([(pseudo.structures[k].info[WEAK_ENERGY] - hidden[k]) / len(pool[k]) for k in correct
                          if truth[50 + k] == eip])
        assert np.ptp(shift) < 1e-9 and abs(shift.mean()) < 0.03
    assert len(pseudo.excluded) == sum(a.info[WEAK_SOURCE] == NONE for a in pseudo.structures)
    with pytest.raises(ValueError, match="carries a DFT label"):
        labeller.pseudo_label(labelled[:1])


def test_tukey_biweight_is_squared_for_small_residuals_and_flat_beyond_c():
    r = torch.tensor([1e-3, 0.5, 1.0, 3.0], dtype=torch.float64, requires_grad=True)
    rho = tukey_rho(r, 1.0)
    assert rho[0].item() == pytest.approx(1e-6, rel=1e-3)
    rho.sum().backward()
    assert r.grad[2].item() == 0.0 and r.grad[3].item() == 0.0 and r.grad[1].item() > 0
    assert rho[3].item() == pytest.approx(1 / 3)


def test_weak_arm_never_trains_on_none_structures(tmp_path, data_mirror_session, monkeypatch):
    import os

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    seen_weak: set[str] = set()
    real = trainer.batch_loss

    def recording(model, samples, terms, weights):  # observe the real loss, change nothing
        seen_weak.update(s.name for s in samples if WEAK_TARGET in s.targets)
        return real(model, samples, terms, weights)

    monkeypatch.setattr(trainer, "batch_loss", recording)
    cfg = stage_config(tmp_path, stage="weak", data={"dft_fraction": 0.25, "labels": str(tmp_path / "labels.sqlite"),
                                                    "workers": 1},
                       train={"epochs": 2, "batch_size": 16, "lr": 5e-3},
                       weak={"eips": ["lmp_Si_sw", "lmp_Si_tersoff", "lmp_Si_edip"], "threshold": 50.0,
                             "n_estimators": 50})
    result = run_stage(cfg, log=lambda s: None)
    pseudo = result.weak.pseudo
    none = {name for name, reason in pseudo.excluded if reason.startswith("selector")}
    labelled = {a.info["config_id"] for a in pseudo.labelled}
    assert none and labelled, "the planted threshold should leave both kinds"
    assert not none & seen_weak
    assert seen_weak == labelled
    assert all(REF_ENERGY not in a.info for a in pseudo.structures)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(os.environ["MLFLOW_TRACKING_URI"])
    run = client.get_run(result.run_id)
    assert run.data.metrics["n_weak_labels"] == len(labelled)
    assert run.data.metrics["n_weak_excluded"] == len(pseudo.excluded)
    assert 0 <= run.data.metrics["selector_balanced_accuracy"] <= 1
    assert run.data.tags["eip2nn.arm"] == "weak" and run.data.params["selector.n_estimators"] == "50"
    assert {"plots/selector_confusion.png", "outputs/weak_labels.json"} <= {
        f.path for d in ("plots", "outputs") for f in client.list_artifacts(result.run_id, d)}
    with LabelStore(tmp_path / "labels.sqlite") as store:
        rows = store.alignments()
    assert {r["eip_id"] for r in rows} == set(cfg.weak.eips)
    assert all(r["reference"].startswith("mlearn/Si DFT") and len(r["offsets_eV_per_atom"]) == 1 for r in rows)
    import subprocess
    import sys

    shown = subprocess.run([sys.executable, "-m", "eip2nn", "labels", "alignments", "--labels",
                            str(tmp_path / "labels.sqlite")], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    for al in result.weak.labeller.alignments.values():
        assert f"Si:{al.offsets[0]:+.4f}" in shown.stdout and f"{al.energy_mae:.1f}" in shown.stdout


def test_weak_combines_with_pretrain_finetune_as_arm_both(tmp_path, data_mirror_session, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    data = {"dft_fraction": 0.1, "labels": str(tmp_path / "labels.sqlite"), "workers": 1,
            "eips": ["lmp_Si_sw", "lmp_Si_tersoff"]}
    pre = run_stage(stage_config(tmp_path, stage="pretrain", data=data, train={"epochs": 1}), log=lambda s: None)
    both = run_stage(stage_config(tmp_path, stage="finetune", data=data, train={"epochs": 1},
                                  finetune={"pretrained": f"runs:/{pre.run_id}", "init_head": "best"},
                                  weak={"enabled": True, "eips": ["lmp_Si_sw", "lmp_Si_tersoff"],
                                        "n_estimators": 20}), log=lambda s: None)
    assert both.weak is not None and both.weak.pseudo.labelled
    from mlflow.tracking import MlflowClient

    run = MlflowClient().get_run(both.run_id)
    assert run.data.tags["eip2nn.arm"] == "both" and run.data.tags["eip2nn.pretrain_run_id"] == pre.run_id
    assert run.data.metrics["n_weak_labels"] == len(both.weak.pseudo.labelled)


def test_weak_enabled_on_a_baseline_is_a_config_error(tmp_path):
    with pytest.raises(ValueError, match="use stage: weak"):
        stage_config(tmp_path, stage="baseline", weak={"enabled": True})



def test_changed_extra_structures_file_changes_the_stage_hash(tmp_path, data_mirror_session):
    from ase.io import write

    extra = tmp_path / "extra.xyz"
    write(extra, load_dataset("mlearn/Si/train")[:1])
    cfg = stage_config(tmp_path, stage="weak", weak={"extra_structures": [str(extra)]})
    before = cfg.content_hash()
    write(extra, load_dataset("mlearn/Si/train")[1:2])
    assert cfg.content_hash() != before
