"""eip2nn generate: seeded LAMMPS MD, strains, vacancies, rattling; sane, unlabelled, with provenance."""

import json
import subprocess
import sys

import numpy as np
import pytest

from eip2nn.data import load_dataset
from eip2nn.generate.generator import GenerateConfig, generate
from eip2nn.generate.md import lammps_md, mean_displacement
from eip2nn.generate.perturb import check_no_overlap
from eip2nn.keys import REF_ENERGY, REF_FORCES
from eip2nn.labelling.engine import label
from eip2nn.potentials.db import PotentialsDB
from eip2nn.weak.arm import read_extra_structures


@pytest.fixture(scope="module")
def seeds(data_mirror_session):
    return load_dataset("mlearn/Si/train")[:2]


CFG = dict(md_eip="lmp_Si_sw", md_temperatures=[300.0], md_snapshots=2, md_every=20, md_equilibrate=20,
           strains=2, vacancies=1, rattles=2, rattle_stdev=0.05)


def test_generation_is_seeded_sane_unlabelled_and_traceable(seeds):
    a = generate(seeds, GenerateConfig(**CFG))
    b = generate(seeds, GenerateConfig(**CFG))
    c = generate(seeds, GenerateConfig(**CFG, seed=1))
    assert a.counts == {"md": 4, "strain": 4, "vacancy": 2, "rattle": 4} and not a.rejected
    assert [x.info["config_id"] for x in a.structures] == [x.info["config_id"] for x in b.structures]
    assert all(np.array_equal(x.positions, y.positions) and np.array_equal(x.cell, y.cell)
               for x, y in zip(a.structures, b.structures))
    assert not np.allclose(a.structures[0].cell, c.structures[0].cell)  # another seed, another strain
    for x in a.structures:
        assert REF_ENERGY not in x.info and REF_FORCES not in x.arrays and x.info["dataset"] == "generated"
        assert x.info["gen_seed_structure"].startswith("mlearn/Si/train/")
        check_no_overlap(x, 0.6)
        params = json.loads(x.info["gen_params"])
        if x.info["gen_method"] == "md":
            assert params["eip"] == "lmp_Si_sw" and params["temperature_K"] == 300.0
    vac = [x for x in a.structures if x.info["gen_method"] == "vacancy"]
    assert [len(x) for x in vac] == [len(s) - 1 for s in seeds]
    strained = [x for x in a.structures if x.info["gen_method"] == "strain"]
    eps = np.array(json.loads(strained[0].info["gen_params"])["strain"])
    np.testing.assert_allclose(strained[0].cell.array, seeds[0].cell.array @ (np.eye(3) + eps), atol=1e-5)


def test_overlapping_atoms_are_rejected_and_recorded(seeds):
    result = generate(seeds[:1], GenerateConfig(rattles=1, rattle_stdev=0.8, max_tries=3))
    assert result.counts["rattle"] == 0
    assert len(result.rejected) == 1 and "Å apart" in result.rejected[0]["reason"]


def test_md_temperature_sets_the_thermal_motion(seeds):
    spec = PotentialsDB().get("lmp_Si_sw")
    motion = {}
    for temperature in (20.0, 2000.0):
        snaps = lammps_md(seeds[1], spec, temperature, 2, 100, 300, 1.0, 4242)
        motion[temperature] = mean_displacement(snaps[0][1], snaps[1][1])  # Å in 100 fs, after equilibration
    assert motion[2000.0] > 3 * motion[20.0]


def test_md_refuses_a_kim_potential(seeds):
    with pytest.raises(ValueError, match="LAMMPS"):
        generate(seeds, GenerateConfig(md_eip="SW_StillingerWeber_1985_Si", md_temperatures=[300.0]))


def test_cli_generate_then_label_then_use_as_unlabelled_pool(tmp_path, data_dir):
    out = tmp_path / "gen.xyz"
    cmd = [sys.executable, "-m", "eip2nn", "generate", "--dataset", "mlearn/Si/train", "--select", "2",
           "-o", str(out), "--strains", "1", "--md-eip", "lmp_Si_sw", "--md-temperatures", "600",
           "--md-snapshots", "1", "--md-every", "10", "--md-equilibrate", "0"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "4 structures from 2 seed structures" in done.stdout
    provenance = json.loads(out.with_name("gen.xyz.provenance.json").read_text())
    assert provenance["counts"]["md"] == 2 and provenance["config"]["md_temperatures"] == [600.0]
    pool = read_extra_structures([str(out)])
    assert len(pool) == 4 and all(a.info["config_id"].startswith("generated/") for a in pool)
    report = label(pool, [PotentialsDB().get("lmp_Si_tersoff")], tmp_path / "labels.sqlite", workers=1,
                   progress=False)
    assert report.per_eip["lmp_Si_tersoff"].labelled == 4 and not report.per_eip["lmp_Si_tersoff"].failed
