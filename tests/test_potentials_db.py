"""The EIP registry: every entry valid and loadable; bad entries named clearly; leakage tags; ML only if named."""

import pytest
import yaml

from eip2nn.potentials.db import ML_REASON, PotentialsDB, db_folder
from eip2nn.potentials.discover import installed_portable_models, species_from_name
from eip2nn.potentials.lammps_backend import potentials_folder, resolve_pair_coeff
from eip2nn.potentials.spec import PotentialSpecError, load_spec

GOOD = {"id": "x", "species": ["Si"], "family": "SW", "cutoff": 3.77, "citation": "c",
        "backend": {"type": "lammps", "pair_style": "sw", "pair_coeff": "* * {file:Si.sw} {elements}",
                    "files": ["Si.sw"]}}


@pytest.fixture(scope="module")
def db():
    return PotentialsDB()


def test_every_target_element_has_both_backends(db):
    for el in ("Si", "Ge", "Mo", "Cu", "Ni"):
        backends = {s.backend_type for s in db.select(species=[el], kinds=["empirical"])}
        assert backends >= ({"kim", "lammps"} if el != "Mo" else {"kim"}), el


def test_every_kim_entry_names_an_installed_model(db):
    installed = set(installed_portable_models())
    missing = [s.id for s in db if s.backend_type == "kim" and s.backend.model not in installed]
    assert not missing


def test_every_lammps_entry_resolves_its_parameter_files(db):
    folder = potentials_folder()
    for s in db.select(backend="lammps"):
        text = resolve_pair_coeff(s)
        assert str(folder) in text and "{" not in text, s.id


def test_benchmark_leakage_is_tagged(db):
    tagged = {s.id for s in db if "mlearn" in s.fitted_to}
    for el in ("Si", "Ge", "Mo", "Cu", "Ni", "Li"):
        assert f"lmp_{el}_snap_zuo2020" in tagged
    for el in ("Si", "Ge", "Mo", "Cu", "Ni"):
        assert f"SNAP_ZuoChenLi_2019_{el}" in tagged
    eligible, excluded = db.eligible_for({"Si"}, "mlearn")
    assert not tagged & {s.id for s in eligible}
    assert all(s.kind == "empirical" for s in eligible)


def test_machine_learned_entries_are_used_only_when_named(db):
    eligible, excluded = db.eligible_for({"Cu"}, "other-data")
    reasons = {s.id: why for s, why in excluded}
    assert reasons["SNAP_LiHuChen_2018_Cu"] == ML_REASON and reasons["lmp_Cu_snap_zuo2020"] == ML_REASON
    assert all(s.kind == "empirical" for s in eligible)
    eligible, _ = db.eligible_for({"Cu"}, "other-data", named=["lmp_Cu_snap_zuo2020"])
    assert "lmp_Cu_snap_zuo2020" in {s.id for s in eligible}


def test_the_folder_alone_without_discovery():
    only = PotentialsDB(discover_installed=False)
    assert len(only) == len(list(db_folder().glob("*.yaml")))
    assert not any(s.discovered for s in only) and only.discovery_failures == []


def test_known_issues_exclude_with_reason(db):
    eligible, excluded = db.eligible_for({"Cu"}, "mlearn")
    reasons = {s.id: why for s, why in excluded}
    assert "MEAM_LAMMPS_KimSeolJi_2017_PtCu" not in {s.id for s in eligible}
    assert reasons["MEAM_LAMMPS_KimSeolJi_2017_PtCu"].startswith("known issue Cu")


@pytest.mark.parametrize("change,message", [
    ({"colour": "red"}, "unknown key(s) ['colour']"),
    ({"species": ["Xx"]}, "'Xx', which is not an element symbol"),
    ({"cutoff": -1}, "'cutoff' must be > 0"),
    ({"backend": {"type": "gulp"}}, "'type' in ('kim', 'lammps')"),
    ({"backend": {"type": "kim", "model": "m", "pair_style": "sw"}}, "unknown key(s) ['pair_style'] in 'backend'"),
    ({"fitted_to": "mlearn"}, "'fitted_to' must be a list"),
    ({"known_issues": {"Cu": "x"}}, "'known_issues' must map some of the EIP's species"),
])
def test_bad_entries_name_file_and_problem(tmp_path, change, message):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({**GOOD, **change}))
    with pytest.raises(PotentialSpecError) as err:
        load_spec(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_missing_key_and_id_mismatch(tmp_path):
    path = tmp_path / "x.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in GOOD.items() if k != "cutoff"}))
    with pytest.raises(PotentialSpecError, match="missing required key"):
        load_spec(path)
    path = tmp_path / "y.yaml"
    path.write_text(yaml.safe_dump(GOOD))
    with pytest.raises(PotentialSpecError, match="must equal the file name"):
        load_spec(path)


def test_unknown_id_suggests_close_ones(db):
    with pytest.raises(KeyError, match="did you mean"):
        db.get("lmp_Si_s")


def test_species_parsed_from_openkim_names():
    assert species_from_name("Tersoff_LAMMPS_ErhartAlbe_2005_SiC__MO_903987585848_004") == ("Si", "C")
    assert species_from_name("EAM_Dynamo_BonnyPasianotCastin_2009_FeCuNi__MO_469343973171_005") == ("Fe", "Cu", "Ni")
    assert species_from_name("not a kim id") == ()
