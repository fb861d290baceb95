"""Installed OpenKIM models are candidates without a manual discover step; machine-learned ones only when named."""

import json
import subprocess
import sys
import warnings

import pytest
import yaml

from eip2nn.labelling.choice import eligible_eips, resolve_eips
from eip2nn.potentials.db import ML_REASON, MachineLearnedEIPWarning, PotentialsDB, ml_warning
from eip2nn.potentials.discover import installed_portable_models, metadata_cache_file, short_id
from eip2nn.potentials.spec import DISCOVERED_SOURCE

SNAP_TA = "SNAP_ThompsonSwilerTrott_2015_Ta"  # machine-learned, no potentials_db entry, fitted to unknown data
SNAP_CU = "SNAP_LiHuChen_2018_Cu"  # machine-learned, registered, fitted_to [mlearn]


def models_found_by_loading(species: list[str]) -> set[str]:
    """find_models (which loads every candidate, no cache), run in a child: the drivers' banners stay out of pytest."""
    code = ("import json; from eip2nn.potentials.discover import find_models; "
            f"print('MODELS=' + json.dumps([i.model for i in find_models({species!r})]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(json.loads(next(line[7:] for line in out.splitlines() if line.startswith("MODELS="))))


@pytest.fixture(scope="module")
def cold_and_warm(tmp_path_factory):
    """Two databases over one fresh metadata cache: the first reads every model, the second the cache."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EIP2NN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
        cold, warm = PotentialsDB(), PotentialsDB()
        assert len(cold) > len(cold.registered) and len(warm) == len(cold)  # discovery runs on first use
        yield cold, warm, metadata_cache_file()


def test_installed_models_for_an_element_without_entries_are_candidates(cold_and_warm):
    db, _, _ = cold_and_warm
    kim_w = {s.backend.model for s in db.select(species=["W"], backend="kim")}
    assert kim_w == models_found_by_loading(["W"])
    assert len([s for s in db.registered.values() if s.supports({"W"})]) == 2
    eligible, _ = db.eligible_for({"W"}, "")
    assert len(eligible) > 10
    spec = db.get("EAM_Dynamo_Ackland_2003_W")
    assert spec.discovered and spec.source_file == DISCOVERED_SOURCE
    assert spec.id == short_id(spec.backend.model) and spec.kind == "empirical" and spec.family == "EAM"
    assert spec.backend.model in spec.citation and spec in eligible


def test_discovered_ids_and_hashes_are_stable_and_registered_entries_win(cold_and_warm):
    cold, warm, _ = cold_and_warm
    hashes = {s.id: s.content_hash() for s in cold if s.discovered}
    assert hashes and hashes == {s.id: s.content_hash() for s in warm if s.discovered}
    registered_models = {s.backend.model for s in cold.registered.values() if s.backend_type == "kim"}
    assert not registered_models & {s.backend.model for s in cold if s.discovered}
    for eip_id, spec in cold.registered.items():
        assert cold.get(eip_id) is spec
    # two installed models share the short id of a registered entry: the other one keeps its full OpenKIM id
    other = "MEAM_LAMMPS_WangOhLee_2020_CuCo__MO_849011491644_000"
    if other in installed_portable_models():
        assert cold.get(other).discovered and cold.get(short_id(other)).source_file.endswith(".yaml")


def test_second_construction_reads_the_cache_not_the_models(cold_and_warm):
    cold, warm, cache = cold_and_warm
    assert cache.is_file()
    assert cold.discovery.loaded == len(installed_portable_models()) and warm.discovery.loaded == 0
    assert cold.discovery.failures == warm.discovery.failures == []
    skipped = dict(cold.discovery_skipped)
    assert "lists 139 species" in skipped["LennardJones612_UniversalShifted__MO_959249795837_003"]


def test_a_changed_model_is_read_again_and_only_it(cold_and_warm, monkeypatch):
    _, _, cache = cold_and_warm
    monkeypatch.setenv("EIP2NN_CACHE_DIR", str(cache.parent.parent))
    data = json.loads(cache.read_text())
    model = "SW_StillingerWeber_1985_Si__MO_405512056662_005"
    data["models"][model]["signature"] += "-changed"
    cache.write_text(json.dumps(data))
    db = PotentialsDB()
    assert db.discovery.loaded == 1
    assert not json.loads(cache.read_text())["models"][model]["signature"].endswith("-changed")


def test_without_kimpy_discovery_records_one_reason(monkeypatch, tmp_path):
    monkeypatch.setenv("EIP2NN_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(sys.modules, "kimpy", None)
    db = PotentialsDB()
    assert len(db) == len(db.registered)
    [(what, why)] = db.discovery_failures
    assert what == "KIM-API" and "kimpy is not importable" in why


def test_machine_learned_are_excluded_unless_named_and_then_warn(cold_and_warm):
    db, _, _ = cold_and_warm
    ta = db.get(SNAP_TA)
    assert ta.discovered and ta.kind == "machine-learned" and not ta.fitted_to
    eligible, excluded = db.eligible_for({"Ta"}, "my-dft")
    assert ta not in eligible and dict((s.id, why) for s, why in excluded)[SNAP_TA] == ML_REASON
    assert ta not in eligible_eips(db, ["Ta"], "my-dft")
    eligible, _ = db.eligible_for({"Ta"}, "my-dft", named=[SNAP_TA])
    assert ta in eligible
    with pytest.warns(MachineLearnedEIPWarning, match="fitted to unknown DFT data"):
        assert resolve_eips(db, [SNAP_TA], ["Ta"], "my-dft") == [ta]
    # a registered one says what it was fitted to, and is still refused for that data
    with pytest.warns(MachineLearnedEIPWarning, match="fitted to mlearn data"):
        resolve_eips(db, [SNAP_CU], ["Cu"], "my-dft")
    with pytest.raises(ValueError, match="leakage"):
        resolve_eips(db, [SNAP_CU], ["Cu"], "mlearn")
    assert "unknown" in ml_warning(ta) and "mlearn" in ml_warning(db.get(SNAP_CU))


def test_empirical_requests_do_not_warn(cold_and_warm):
    db, _, _ = cold_and_warm
    with warnings.catch_warnings():
        warnings.simplefilter("error", MachineLearnedEIPWarning)
        resolve_eips(db, ["EAM_Dynamo_Ackland_2003_W"], ["W"], "my-dft")


def test_a_source_tag_refuses_entries_fitted_to_it_and_an_empty_one_refuses_nothing(tmp_path):
    entry = {"id": "mine_Si_sw", "species": ["Si"], "family": "SW", "cutoff": 3.77, "citation": "c",
             "fitted_to": ["my-dft"], "backend": {"type": "lammps", "pair_style": "sw",
                                                  "pair_coeff": "* * {file:Si.sw} {elements}", "files": ["Si.sw"]}}
    (tmp_path / "mine_Si_sw.yaml").write_text(yaml.safe_dump(entry))
    db = PotentialsDB(tmp_path, discover_installed=False)
    eligible, excluded = db.eligible_for({"Si"}, "my-dft")
    assert not eligible and excluded[0][1] == "fitted to 'my-dft' data (leakage)"
    for tag in ("", None, "other"):
        assert [s.id for s in db.eligible_for({"Si"}, tag)[0]] == ["mine_Si_sw"]
    with pytest.raises(ValueError, match="leakage"):
        resolve_eips(db, ["mine_Si_sw"], ["Si"], "my-dft")
