"""Which EIPs an arm pretrains on or offers its weak selector: ranked by error, twins counted once."""

import numpy as np
import pytest

from eip2nn.data import load_dataset
from eip2nn.labelling.choice import TWIN_TOLERANCE, choose_eips, eligible_eips
from eip2nn.labelling.hashing import structure_hashes
from eip2nn.labelling.store import LabelStore
from eip2nn.potentials.db import PotentialsDB
from eip2nn.training import config as training_config
from eip2nn.training.config import StageConfig

# the same potential through KIM and through LAMMPS (equal to 1e-13 eV/atom, or 8e-5 for SW)
TWINS = [("Tersoff_LAMMPS_Tersoff_1988T2_Si", "lmp_Si_tersoff"),
         ("MEAM_LAMMPS_LenoskySadighAlonso_2000_Si", "lmp_Si_meam_spline_lenosky"),
         ("EDIP_JustoBazantKaxiras_1998_Si", "lmp_Si_edip"),
         ("SW_StillingerWeber_1985_Si", "lmp_Si_sw")]


@pytest.fixture(scope="module")
def si_choice(tmp_path_factory, data_mirror_session):
    train = load_dataset("mlearn/Si/train")
    labelled, split = train[::40], train[::8]  # 7 with DFT labels, 30 to compare the EIPs on
    store = tmp_path_factory.mktemp("choice") / "labels.sqlite"
    db = PotentialsDB()
    chosen, passed = choose_eips(db, labelled, ["Si"], "mlearn", 100, store, workers=1, compare_on=split)
    return db, split, store, chosen, passed


def test_every_candidate_is_chosen_or_passed_over_with_a_reason(si_choice):
    db, _, _, chosen, passed = si_choice
    ids = [s.id for s, _ in chosen] + [eip for eip, _ in passed]
    assert sorted(ids) == sorted(s.id for s in eligible_eips(db, ["Si"], "mlearn"))
    maes = [mae for _, mae in chosen]
    assert maes == sorted(maes)  # best first


def test_each_pair_of_twins_is_counted_once(si_choice):
    _, _, _, chosen, passed = si_choice
    chosen_ids = {s.id for s, _ in chosen}
    why = dict(passed)
    for a, b in TWINS:
        assert len({a, b} & chosen_ids) == 1, (a, b)
        dropped, kept = (b, a) if a in chosen_ids else (a, b)
        assert why[dropped].startswith(f"a twin of {kept}:")


def test_distinct_potentials_are_not_twins(si_choice):
    """Every two chosen EIPs differ by more than the tolerance on the structures compared."""
    _, split, store, chosen, _ = si_choice
    hashes = structure_hashes(split)
    n_atoms = np.array([len(a) for a in split])
    per_atom = {}
    with LabelStore(store) as s:
        for spec, _ in chosen:
            by_hash = {lab.structure_hash: lab.energy for lab in s.labels(spec.id, hashes=hashes)}
            per_atom[spec.id] = np.array([by_hash.get(h, np.nan) for h in hashes]) / n_atoms
    ids = list(per_atom)
    assert len(ids) >= 20
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            d = per_atom[a] - per_atom[b]
            assert np.ptp(d[np.isfinite(d)]) >= TWIN_TOLERANCE, (a, b)


def test_stages_that_choose_their_eips_are_keyed_by_the_choice_rule(tmp_path, monkeypatch):
    """Changing how EIPs are chosen must not reuse a finished stage that chose under the old rule,
    and must not touch stages that choose nothing."""
    configs = {
        "baseline": StageConfig(stage="baseline", output=str(tmp_path)),
        "pretrain auto": StageConfig(stage="pretrain", output=str(tmp_path)),
        "pretrain named": StageConfig.from_dict({"stage": "pretrain", "output": str(tmp_path),
                                                 "data": {"eips": ["lmp_Si_sw"]}}),
        "weak auto": StageConfig.from_dict({"stage": "weak", "output": str(tmp_path), "weak": {"enabled": True}}),
    }
    before = {k: c.content_hash() for k, c in configs.items()}
    monkeypatch.setattr(training_config, "EIP_CHOICE_RULE", "another rule")
    after = {k: c.content_hash() for k, c in configs.items()}
    changed = {k for k in configs if before[k] != after[k]}
    assert changed == {"pretrain auto", "weak auto"}
