"""Every shipped pipeline and stage file loads as a valid config, and the README's main one is the default Si run."""

from pathlib import Path

import pytest

from eip2nn.pipeline.config import ARMS, load_pipeline
from eip2nn.potentials.db import PotentialsDB

ROOT = Path(__file__).parent.parent
PIPELINES = sorted((ROOT / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", PIPELINES, ids=[p.name for p in PIPELINES])
def test_shipped_pipeline_is_valid_and_names_real_eips(path):
    cfg = load_pipeline(path)
    db = PotentialsDB()
    for eip in cfg.pretrain.eips + cfg.weak.eips + cfg.data.eips + [cfg.delta.eip] * bool(cfg.delta.eip):
        db.get(eip)
    assert len(cfg.study.seeds) >= 3 and set(cfg.study.arms) == set(ARMS)  # every arm, the SNAP reference included


def test_the_main_command_runs_the_quick_si_pipeline_and_full_variants_exist():
    makefile = (ROOT / "Makefile").read_text()
    assert "pipeline run pipelines/si_quick.yaml" in makefile
    for element in ("si", "mo", "cu", "ni"):
        cfg = load_pipeline(ROOT / "pipelines" / f"{element}.yaml")
        assert cfg.study.fractions == [0.05, 0.1, 0.25, 0.5, 1.0]
        assert cfg.data.dataset == f"mlearn/{element.capitalize()}"


TRIALS = sorted((ROOT / "pipelines" / "trials").glob("*.yaml"))


@pytest.mark.parametrize("path", TRIALS, ids=[p.name for p in TRIALS])
def test_trial_pipelines_behind_the_docs_figures_load(path):
    """A trial (a few arms or variants behind one figure in docs/) still reads as a valid pipeline."""
    cfg = load_pipeline(path)
    assert cfg.arms and cfg.name


def test_a_trial_extends_its_pipeline_key_by_key(tmp_path):
    """`extends:` merges mappings key by key (the base's variants stay), replaces other values, and refuses a
    cycle; a trial built on mo.yaml has mo.yaml's model and training, so its shared cells are the pipeline's."""
    from eip2nn.config import ConfigError
    base, trial = load_pipeline(ROOT / "pipelines" / "cu.yaml"), load_pipeline(ROOT / "pipelines/trials/cu_committee.yaml")
    assert (trial.name, trial.model, trial.train, trial.snap) == (base.name, base.model, base.train, base.snap)
    assert trial.study.fractions == [1.0] and trial.study.seeds == base.study.seeds
    assert set(trial.variants) == set(base.variants) | {"snap+nn-x3"}
    (tmp_path / "a.yaml").write_text("extends: b.yaml\nname: a\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\nname: b\n")
    with pytest.raises(ConfigError, match="extends it back"):
        load_pipeline(tmp_path / "a.yaml")
    (tmp_path / "c.yaml").write_text("extends: [b.yaml]\n")
    with pytest.raises(ConfigError, match="c.yaml: extends must be the path"):
        load_pipeline(tmp_path / "c.yaml")
