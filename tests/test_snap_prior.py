"""model.snap_prior: a SNAP fitted to the stage's labels, fixed inside a bispectrum network's DFT head."""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import bulk

from eip2nn.nn.checkpoint import load_model
from eip2nn.nn.config import ModelConfig
from eip2nn.nn.graph import collate
from eip2nn.nn.model import DFT_HEAD, EnergyModel
from eip2nn.snap.bispectrum import n_per_element
from eip2nn.snap.model import SnapModel
from eip2nn.training.config import StageConfig

CUTOFF = 4.2  # Å


def random_snap(species, quadratic, twojmax=4, seed=0) -> SnapModel:
    """Coefficients of SNAP's usual size (β0 a few eV, the rest small), on the network's bispectrum settings."""
    rng = np.random.default_rng(seed)
    n = 1 + n_per_element(twojmax, quadratic)
    coefficients = {e: np.concatenate([[-4.0 - i], 0.02 * rng.normal(size=n - 1)]) for i, e in enumerate(species)}
    return SnapModel(list(species), twojmax, CUTOFF, 0.99363, 0.0, quadratic, coefficients)


def rattled_sige(seed=0):
    rng = np.random.default_rng(seed)
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.set_cell(atoms.cell.array @ (np.eye(3) + 0.03 * rng.normal(size=(3, 3))), scale_atoms=True)
    atoms.positions += 0.1 * rng.normal(size=atoms.positions.shape)
    atoms.symbols[::3] = "Ge"
    return atoms


@pytest.mark.parametrize("quadratic", [False, True], ids=["linear", "quadratic"])
def test_a_model_whose_head_is_zero_is_its_snap_prior(quadratic):
    """Energies, forces and stress of the DFT head equal SnapModel's (LAMMPS design rows); the EIP head has no prior."""
    species = ["Ge", "Si"]
    snap = random_snap(species, quadratic)
    torch.manual_seed(0)
    config = ModelConfig(backbone="bispectrum", cutoff=CUTOFF, twojmax=4, width=8, depth=1, head_hidden=8,
                         snap_prior="quadratic" if quadratic else "linear")
    model = EnergyModel(config, species, [DFT_HEAD, "eip"]).double()
    model.prior.load_snap(snap, species)
    with torch.no_grad():
        head = model.head(DFT_HEAD)
        head.net[-1].weight.zero_()
        head.net[-1].bias.zero_()
    plain = EnergyModel(ModelConfig(**{**config.__dict__, "snap_prior": "none"}), species, [DFT_HEAD, "eip"]).double()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("prior.")})
    model.eval(), plain.eval()
    for seed in range(2):
        atoms = rattled_sige(seed)
        batch = collate([model.graph(atoms)])
        out = model(batch, stress=True)
        energy, forces, stress = snap.predict(atoms)
        assert abs(out[DFT_HEAD].energy.item() - energy) <= 1e-9 * abs(energy)
        assert np.abs(out[DFT_HEAD].forces.detach().numpy() - forces).max() <= 1e-9 * np.abs(forces).max()
        assert np.abs(out[DFT_HEAD].stress[0].detach().numpy() - stress).max() <= 1e-9 * np.abs(stress).max()
        assert abs(out["eip"].energy.item() - plain(batch)["eip"].energy.item()) < 1e-12
    snap.close()


@pytest.mark.parametrize("changes, message", [
    ({"backbone": "schnet", "snap_prior": "auto"}, "needs model.backbone bispectrum"),
    ({"backbone": "bispectrum", "snap_prior": "cubic"}, "is not one of"),
])
def test_bad_prior_settings_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        ModelConfig(**changes)


def test_a_prior_is_refused_where_no_fresh_dft_head_learns():
    model = ModelConfig(backbone="bispectrum", snap_prior="auto")
    for stage, extra in (("pretrain", {}), ("finetune", {"finetune": {"pretrained": "x.pt"}})):
        with pytest.raises(ValueError, match="model.snap_prior applies to stages baseline, weak and delta"):
            StageConfig.from_dict({"stage": stage, "model": model.__dict__, **extra})


def test_a_pipeline_wide_prior_is_refused_for_pretrained_arms_and_left_out_of_the_snap_arm(tmp_path):
    from eip2nn.pipeline.config import load_pipeline
    from eip2nn.pipeline.runner import cell_config
    tiny = Path(__file__).parent / "data" / "tiny_pipeline.yaml"
    base = [f"output={tmp_path / 'out'}", "model.backbone=bispectrum", "model.snap_prior=auto"]
    with pytest.raises(ValueError, match=r"arms \['transfer'\] start from a pretrained network"):
        load_pipeline(tiny, [*base, "study.arms=[baseline,transfer]"])
    with pytest.raises(ValueError, match=r"arms \['t\+nn'\] start from a pretrained network"):
        load_pipeline(tiny, ["study.arms=[baseline]", "model.backbone=bispectrum",
                             "variants={t+nn: {arm: transfer, set: {model.snap_prior: linear}}}"])
    cfg = load_pipeline(tiny, [*base, "study.arms=[baseline,snap]"])
    assert cell_config(cfg, "baseline", 0.5, 0).model.snap_prior == "auto"
    assert cell_config(cfg, "snap", 0.5, 0).model.snap_prior == "none"  # the SNAP reference has no network


def test_a_pipeline_variant_with_a_snap_prior_starts_from_the_snap_arm_s_fit(tmp_path, data_mirror_session):
    """The variant's prior is the snap arm's SNAP when they share the bispectrum and the choice rules, and the
    network on top trains from it: after 3 epochs it is far closer to DFT than the baseline network."""
    from eip2nn.pipeline.config import load_pipeline
    from eip2nn.pipeline.runner import cell_config, run_pipeline
    from eip2nn.training.stages import stage_dir
    cfg = load_pipeline(Path(__file__).parent / "data" / "tiny_pipeline.yaml", [
        f"output={tmp_path / 'out'}", f"data.labels={tmp_path / 'labels.sqlite'}", "tracking.enabled=false",
        "study.arms=[baseline,snap,auto]", "study.seeds=[0]",
        "model.backbone=bispectrum", "model.twojmax=4", f"model.cutoff={CUTOFF}",
        "snap.twojmax=4", f"snap.rcutfac={CUTOFF}", "snap.quadratic=linear",
        "variants={snap+nn: {arm: baseline, set: {model.snap_prior: linear}}}"])
    result = run_pipeline(cfg, log=lambda s: None)
    assert not result.failed, [c.error for c in result.failed]
    cells = {c.arm: c for c in result.cells}
    assert set(cells) == {"baseline", "snap+nn", "snap", "auto"}
    assert cells["auto"].chose in ("baseline", "snap+nn")
    folder = stage_dir(cell_config(cfg, "snap+nn", 0.5, 0))
    model = load_model(folder / "model.pt")
    snap = SnapModel.load(stage_dir(cell_config(cfg, "snap", 0.5, 0)) / "snap_model.json")
    assert model.prior.linear.dtype == torch.float32  # train.dtype: the coefficients to float32 precision
    for s, element in enumerate(model.species):
        c = snap.coefficients[element]
        np.testing.assert_allclose(model.prior.constant[s].item(), c[0], rtol=3e-7)
        np.testing.assert_allclose(model.prior.linear[s].numpy(), c[1:], rtol=3e-7, atol=1e-9)
    assert cells["snap+nn"].test_energy_mae < 0.5 * cells["baseline"].test_energy_mae
    assert cells["snap+nn"].test_force_mae < cells["baseline"].test_force_mae
