"""Planning a stage: what to train (model, samples, loss terms) and what to say about it (tags, notes).

One builder per stage kind decides the model, the heads and the structures
each head learns from; :func:`plan_stage` then adds weak labels, makes the
samples and fits each trained head's offsets and scale. Nothing here trains
or records: :mod:`eip2nn.training.stages` composes plan → fit → record.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from eip2nn.alignment import aligned_energy_errors
from eip2nn.data.protocol import Split, make_split
from eip2nn.keys import LOCAL_ENERGIES, eip_key
from eip2nn.labelling.choice import label_with, minus_eip, resolve_eips, select_eips
from eip2nn.nn.checkpoint import model_from_record, read_checkpoint
from eip2nn.nn.freezing import freeze
from eip2nn.nn.graph import collate
from eip2nn.nn.model import DFT_HEAD, EnergyModel
from eip2nn.nn.offsets import fit_head_statistics
from eip2nn.potentials.db import PotentialsDB
from eip2nn.tracking import download_checkpoint, git_commit
from eip2nn.training.loss import LossTerm
from eip2nn.training.samples import WEAK_TARGET, Sample, head_arrays, make_samples
from eip2nn.weak.arm import WeakData, weak_data


@dataclass
class Heads:
    """What a stage kind's builder decides: the model and what each head learns from."""

    model: EnergyModel
    train: list[Atoms]  # structures carrying the trained heads' labels
    val: list[Atoms]
    weights: dict[str, float]  # head -> loss weight (each head learns its own target)
    refit_scale: dict[str, bool]  # heads whose offsets (and scale, if True) are fitted from their labels
    eips: list[str] = field(default_factory=list)  # the model's EIP heads
    config: object = None  # the stage config as trained (finetune: the pretrained architecture)
    test: list[Atoms] | None = None  # the test structures as scored (delta: DFT − EIP); None = the split's


@dataclass
class StagePlan:
    """Everything :func:`eip2nn.training.trainer.fit` needs, and what the run records about it."""

    cfg: object  # StageConfig, as trained
    split: Split
    model: EnergyModel
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    terms: list[LossTerm]
    eips: list[str]
    tags: dict[str, str]
    notes: list[str]
    weak: WeakData | None = None

    @property
    def scores_dft(self) -> bool:
        """True when the DFT head is trained (every stage but pretraining)."""
        return any(t.head == DFT_HEAD for t in self.terms)


def plan_stage(cfg) -> StagePlan:
    """The plan of stage ``cfg``: split, heads, weak labels, samples, head statistics; raises on bad input."""
    dtype = getattr(torch, cfg.train.dtype)
    split = make_split(cfg.data)
    tags, notes = data_tags_and_notes(cfg, split)
    heads = BUILDERS[cfg.stage](cfg, split, dtype, tags, notes)
    cfg = heads.config or cfg
    terms = [LossTerm(h, h, w) for h, w in heads.weights.items()]
    train_atoms, weak = heads.train, None
    if cfg.uses_weak_labels:
        weak, term = _weak_term(cfg, split, tags, notes)
        terms.append(term)
        train_atoms = train_atoms + weak.pseudo.labelled
    targets = [t.target for t in terms]
    model = heads.model
    train = make_samples(model, train_atoms, targets)
    val = make_samples(model, heads.val, [t for t in targets if t != WEAK_TARGET])
    test = make_samples(model, split.test if heads.test is None else heads.test, [DFT_HEAD])
    if DFT_HEAD in heads.weights and not any(DFT_HEAD in s.targets for s in train):
        raise ValueError(f"no DFT-labelled training structure at dft_fraction={cfg.data.dft_fraction}")
    refit_scale = heads.refit_scale
    if cfg.stage == "finetune":
        refit_scale = _init_dft_head(cfg, model, heads.eips, train, tags, notes)
    elif model.backbone.needs_descriptor:
        model.backbone.fit_standardisation([s.graph for s in train])
    if model.prior is not None:
        refit_scale = _fit_snap_prior(cfg, model, heads, train, tags, notes)
    for h, fit_scale in refit_scale.items():
        stats = fit_head_statistics(model.head(h), *head_arrays(train, h), fit_scale=fit_scale)
        notes.append(f"head {h}: offsets {np.round(stats['offsets_eV_per_atom'], 4).tolist()} eV/atom, "
                     f"scale {stats['scale_eV']:.3f} eV")
    tags["eip2nn.eips"] = ",".join(heads.eips) or "-"
    tags["eip2nn.n_dft_labels"] = str(sum(DFT_HEAD in s.targets for s in train + val))
    return StagePlan(cfg, split, model, train, val, test, terms, heads.eips, tags, notes, weak)


def data_tags_and_notes(cfg, split: Split) -> tuple[dict[str, str], list[str]]:
    tags = {"eip2nn.stage": cfg.stage, "eip2nn.arm": cfg.arm, "eip2nn.dataset": cfg.data.name,
            "eip2nn.dft_fraction": str(cfg.data.dft_fraction), "eip2nn.seed": str(cfg.train.seed),
            "eip2nn.backbone": cfg.model.backbone, "eip2nn.element": ",".join(split.species),
            "eip2nn.git_commit": git_commit()}
    notes = []
    if split.omitted:
        notes.append(f"{len(split.omitted)} bad frame(s) left out (data.on_bad: skip): "
                     + "; ".join(str(b) for b in split.omitted[:20]) + (" ..." if len(split.omitted) > 20 else ""))
        tags["eip2nn.n_frames_omitted"] = str(len(split.omitted))
    notes.append(f"test set: {split.test_note}")
    return tags, notes


# -- one builder per stage kind: (cfg, split, dtype, tags, notes) -> Heads ------------------------------
def _dft_only(cfg, split: Split, dtype, tags, notes) -> Heads:
    """baseline and weak: a fresh model with a DFT head on the labelled structures."""
    model = EnergyModel(cfg.model, split.species, [DFT_HEAD]).to(dtype)
    return Heads(model, Split.labelled(split.train), Split.labelled(split.val), {DFT_HEAD: 1.0}, {DFT_HEAD: True})


def _pretrain(cfg, split: Split, dtype, tags, notes) -> Heads:
    """pretrain: a fresh model with one head per chosen EIP, on every training structure's EIP labels
    (and their local energies, with ``train.local_energy_weight`` > 0)."""
    workers = cfg.data.workers or None
    specs, chosen = select_eips(PotentialsDB(), cfg.data.eips, cfg.data.n_eips, Split.labelled(split.train),
                                split.species, split.source_tag, cfg.data.labels, workers, compare_on=split.train,
                                scheduler=cfg.data.scheduler)
    notes += chosen
    eips = [s.id for s in specs]
    local = cfg.train.local_energy_weight > 0
    train = label_with(split.train, specs, cfg.data.labels, workers, cfg.data.scheduler, local_energies=local)
    val = label_with(split.val, specs, cfg.data.labels, workers, cfg.data.scheduler, local_energies=local)
    if local:
        have = {e: sum(eip_key(e, LOCAL_ENERGIES) in a.arrays for a in train) for e in eips}
        notes.append(f"local energies (weight {cfg.train.local_energy_weight:g} on Δe_i², eV²) on "
                     + ", ".join(f"{n} of {len(train)} structures for {e}" for e, n in have.items())
                     + "".join(f"; {e} gives none (its head learns totals only)" for e, n in have.items() if not n))
    model = EnergyModel(cfg.model, split.species, eips).to(dtype)
    return Heads(model, train, val, {e: 1.0 for e in eips}, {e: True for e in eips}, eips)


def _finetune(cfg, split: Split, dtype, tags, notes) -> Heads:
    """finetune: the pretrained model (its architecture wins) on the DFT labels, optionally replaying EIP labels."""
    record, path = _load_pretrained(cfg.finetune.pretrained)
    model = model_from_record(record["model"]).to(dtype)
    if record["model"]["species"] != split.species:
        raise ValueError(f"pretrained model {path} knows {record['model']['species']}, data has {split.species}")
    pre_run = (record.get("training") or {}).get("mlflow_run_id")
    if pre_run:
        tags["eip2nn.pretrain_run_id"] = pre_run
    tags["eip2nn.pretrained"] = str(path)
    tags["eip2nn.backbone"] = model.config.backbone
    eips = [h for h in model.head_names if h != DFT_HEAD]
    cfg = dataclasses.replace(cfg, model=model.config)
    train, weights = Split.labelled(split.train), {DFT_HEAD: 1.0}
    if cfg.finetune.replay_fraction > 0:
        replay = _replay(cfg, split, eips)
        train = train + replay
        weights.update({e: cfg.finetune.replay_weight for e in eips})
        notes.append(f"replaying {len(replay)} structures with labels of {eips}")
    return Heads(model, train, Split.labelled(split.val), weights, {}, eips, cfg)


def _delta(cfg, split: Split, dtype, tags, notes) -> Heads:
    """delta: a fresh model whose DFT head learns DFT − one EIP (labelled, validation and test structures alike)."""
    if cfg.weak.enabled:
        raise ValueError("stage delta does not take weak labels (weak.enabled); use stage weak or finetune")
    workers = cfg.data.workers or None
    specs, chosen = select_eips(PotentialsDB(), [cfg.delta.eip] if cfg.delta.eip else [], 1,
                                Split.labelled(split.train), split.species, split.source_tag, cfg.data.labels, workers,
                                chosen_as="Δ-learning on", compare_on=split.train, scheduler=cfg.data.scheduler)
    notes += chosen
    eip = specs[0].id

    def residuals(structures: list[Atoms], part: str) -> list[Atoms]:
        return minus_eip(structures, specs[0], cfg.data.labels, workers, cfg.data.scheduler, f"{cfg.data.name} {part}")

    tags["eip2nn.delta_eip"] = eip
    notes.append(f"Δ-learning: the DFT head learns DFT − {eip}; the model predicts {eip} + network")
    model = EnergyModel(cfg.model, split.species, [DFT_HEAD], reference_eip=eip).to(dtype)
    return Heads(model, residuals(Split.labelled(split.train), "training"), residuals(Split.labelled(split.val), "validation"),
                 {DFT_HEAD: 1.0}, {DFT_HEAD: True}, test=residuals(split.test, "test"))


BUILDERS = {"baseline": _dft_only, "weak": _dft_only, "pretrain": _pretrain, "finetune": _finetune, "delta": _delta}


def _replay(cfg, split: Split, eips: list[str]) -> list[Atoms]:
    """A seeded share of the unlabelled training structures, with the pretrained EIP heads' labels."""
    pool = Split.unlabelled(split.train) or split.train
    n = max(1, round(cfg.finetune.replay_fraction * len(pool)))
    pick = np.random.default_rng(cfg.train.seed).choice(len(pool), size=min(n, len(pool)), replace=False)
    specs = resolve_eips(PotentialsDB(), eips, split.species, split.source_tag)
    return label_with([pool[i] for i in sorted(pick)], specs, cfg.data.labels, cfg.data.workers or None,
                      cfg.data.scheduler)


def _weak_term(cfg, split: Split, tags, notes) -> tuple[WeakData, LossTerm]:
    """The weak labels of the unlabelled pool and their robust loss term on the DFT head."""
    weak = weak_data(cfg.weak, split, cfg.data.labels, cfg.data.workers or None, cfg.train.seed,
                     f"{cfg.data.name} DFT (fraction {cfg.data.dft_fraction}, split seed {cfg.data.split_seed})",
                     cfg.data.scheduler)
    c_e, c_f = weak.labeller.tukey_scales()
    notes += weak.notes
    notes.append(f"weak loss: alpha {cfg.weak.alpha}, Tukey c {c_e * 1000:.1f} meV/atom"
                 + (f", forces with c {c_f:.3f} eV/Å" if cfg.weak.forces else ", energies only"))
    tags["eip2nn.weak_eips"] = ",".join(weak.eips)
    tags["eip2nn.n_weak_labels"] = str(len(weak.pseudo.labelled))
    return weak, LossTerm(WEAK_TARGET, DFT_HEAD, cfg.weak.alpha, c_e, c_f, cfg.weak.forces)


def _init_dft_head(cfg, model: EnergyModel, eips: list[str], train: list[Sample], tags, notes) -> dict[str, bool]:
    """Add the DFT head (fresh, or a copy of an EIP head), freeze what the config says; {DFT head: refit scale}."""
    init = cfg.finetune.init_head
    labelled = [s for s in train if DFT_HEAD in s.targets]
    source = None if init == "fresh" else (best_eip_head(model, eips, labelled) if init == "best" else init)
    if source is not None and source not in eips:
        raise ValueError(f"finetune.init_head: {source!r} is not a head of the pretrained model ({eips})")
    model.add_head(DFT_HEAD, copy_from=source)
    tags["eip2nn.init_head"] = source or "fresh"
    frozen = freeze(model, cfg.finetune.freeze)
    notes.append(f"DFT head initialised from {source or 'scratch'}; {len(frozen)} parameter tensors frozen")
    return {DFT_HEAD: source is None}


def _fit_snap_prior(cfg, model: EnergyModel, heads: Heads, train: list[Sample], tags, notes) -> dict[str, bool]:
    """Fit ``model.prior``, a SNAP on the network's own bispectrum, to the DFT head's training labels (linear or
    quadratic and the ridge strength chosen on the validation labels, as the ``snap`` arm chooses), and the DFT
    head's offsets and scale to what the SNAP leaves. Returns the heads whose statistics are still to fit (none)."""
    from eip2nn.nn.bispectrum import RFAC0
    from eip2nn.snap.fit import fit_snap  # LAMMPS only when a prior is fitted
    snap_cfg = dataclasses.replace(cfg.snap, twojmax=cfg.model.twojmax, rcutfac=cfg.model.cutoff, rfac0=RFAC0,
                                   rmin0=0.0, quadratic=cfg.model.snap_prior)
    fit = fit_snap(heads.train, heads.val, model.species, snap_cfg)
    fit.model.close()
    model.prior.load_snap(fit.model, model.species)
    energies, forces = _prior_predictions(model, [s for s in train if DFT_HEAD in s.targets])
    counts, ref_energies, ref_forces = head_arrays(train, DFT_HEAD)
    residual_forces = [ref - pred for ref, pred in zip(ref_forces, [pred for pred, has in forces if has])]
    head = model.head(DFT_HEAD)
    stats = fit_head_statistics(head, counts, ref_energies - energies, residual_forces)
    choice = fit.choice
    tags["eip2nn.snap_prior"] = (f"{'quadratic' if choice['quadratic'] else 'linear'} alpha={choice['alpha']:g} "
                                 f"coefficients={choice['n_coefficients']}")
    notes.append(f"SNAP prior (2J = {snap_cfg.twojmax}, {snap_cfg.rcutfac} Å): {tags['eip2nn.snap_prior']}, chosen "
                 f"by {choice['selection']}; the DFT head learns what it leaves: offsets "
                 f"{np.round(stats['offsets_eV_per_atom'], 4).tolist()} eV/atom, scale {stats['scale_eV']:.3f} eV, "
                 f"residual {stats['residual_std_meV_per_atom']:.2f} meV/atom (std, training)")
    notes += [f"SNAP prior: {n}" for n in fit.notes]
    return {}


def _prior_predictions(model: EnergyModel, labelled: list[Sample]) -> tuple[np.ndarray, list[tuple[np.ndarray, bool]]]:
    """The prior's energies (S,) eV and (forces (n, 3) eV/Å, whether the sample has force labels) per sample:
    the model with its DFT head switched off (last layer and offsets zero), then restored."""
    head = model.head(DFT_HEAD)
    saved = {k: v.clone() for k, v in head.state_dict().items()}
    last = [m for m in head.net if isinstance(m, torch.nn.Linear)][-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.zero_()
        head.offsets.zero_()
    model.eval()
    energies, forces = [], []
    for k in range(0, len(labelled), 16):
        chunk = labelled[k:k + 16]
        pred = model(collate([s.graph for s in chunk]), heads=[DFT_HEAD])[DFT_HEAD]
        energies.append(pred.energy.detach().cpu().numpy())
        split = np.split(pred.forces.detach().cpu().numpy(), np.cumsum([s.graph.n_atoms for s in chunk])[:-1])
        forces += [(f, s.targets[DFT_HEAD].forces is not None) for f, s in zip(split, chunk)]
    head.load_state_dict(saved)
    return np.concatenate(energies), forces


def _load_pretrained(ref: str) -> tuple[dict, Path]:
    path = download_checkpoint(ref[len("runs:/"):]) if ref.startswith("runs:/") else Path(ref)
    return read_checkpoint(path), path


def best_eip_head(model: EnergyModel, eips: list[str], labelled: list[Sample]) -> str:
    """The EIP head whose predictions, offset-aligned, are closest to DFT on ``labelled``."""
    counts = np.stack([s.counts for s in labelled])
    ref = np.array([s.targets[DFT_HEAD].energy for s in labelled])
    model.eval()
    scores = {}
    for h in eips:
        pred = np.concatenate([
            model(collate([s.graph for s in labelled[k:k + 16]]), heads=[h], forces=False)[h].energy.detach().cpu().numpy()
            for k in range(0, len(labelled), 16)])
        scores[h] = float(np.abs(aligned_energy_errors(counts, ref, pred)[0]).mean())
    return min(scores, key=scores.get)
