"""The training sections of a config and the stage config tree, cheap to import (no torch or MLflow).

A stage is one YAML file read into :class:`StageConfig` (sections ``data``,
``model``, ``train``, ``finetune``, ``weak``, ``tracking``); its content hash
names the folder a stage writes to, so a finished stage is found and reused.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from eip2nn.config import apply_overrides, from_dict, load_yaml
from eip2nn.data.protocol import DataConfig
from eip2nn.data.registry import sha256_of
from eip2nn.labelling.choice import EIP_CHOICE_RULE
from eip2nn.nn.config import ModelConfig
from eip2nn.snap.config import SnapConfig
from eip2nn.weak.config import WeakConfig


@dataclass(frozen=True)
class LossWeights:
    """Weights of a loss term's energy, force and stress parts (from :attr:`TrainConfig.loss_weights`)."""

    energy: float = 1.0  # on (ΔE / n_atoms)², eV²/atom²
    forces: float = 0.1  # on ΔF², (eV/Å)², per component
    stress: float = 0.0  # on Δσ², (eV/Å³)², per Voigt component; see TrainConfig.stress_weight
    local: float = 0.0  # on Δe_i², eV², per atom, for targets carrying local energies (EIP heads)


@dataclass
class TrainConfig:
    epochs: int = 300
    # At least this many optimiser steps: a small training set runs more epochs (max(epochs, ⌈min_steps / batches
    # per epoch⌉)), so that a 25% cell gets about the updates of a 100% one; 0 = `epochs` exactly.
    min_steps: int = 0
    batch_size: int = 8
    lr: float = 2e-3  # Adam learning rate
    weight_decay: float = 0.0
    energy_weight: float = 1.0  # loss weight on (ΔE/n_atoms)², eV²
    force_weight: float = 0.1  # loss weight on ΔF², (eV/Å)²
    # Loss weight on Δσ² per Voigt component, (eV/Å³)²; 0 = stress not trained (and not computed).
    # Stress errors are small in eV/Å³ (1 GPa = 6.24e-3 eV/Å³), so the weight must be large:
    # a 1 GPa error adds 3.9e-5 × weight, and 1e3 weighs it like a 0.2 eV/atom energy error at
    # energy_weight 1, or 0.6 eV/Å force error at force_weight 0.1. Try 1e2–1e3 (metrics report GPa).
    stress_weight: float = 0.0
    # Loss weight on each atom's squared energy error Δe_i², eV², against an EIP's local (per-atom) energies
    # (LAMMPS pe/atom, KIM partialParticleEnergy), for EIP heads whose labels carry them; 0 = totals only.
    local_energy_weight: float = 0.0
    patience: int = 40  # epochs without validation improvement before stopping
    lr_patience: int = 10  # epochs without improvement before LR × lr_factor
    lr_factor: float = 0.5
    min_lr: float = 1e-5
    seed: int = 0
    dtype: str = "float32"  # "float32" | "float64"
    # "plateau": LR × lr_factor after lr_patience epochs without improvement | "cosine": LR falls from lr to
    # min_lr along a half cosine over `epochs`
    schedule: str = "plateau"
    # Exponential moving average of the weights per optimiser step (e.g. 0.99); validation, early stopping and
    # the returned model use the average. 0 = off.
    ema_decay: float = 0.0
    # The final phase (MACE's "stage two"): from this share of `epochs` on — or as soon as early stopping would
    # stop — the loss uses final_energy_weight and final_force_weight, and the returned model is the final phase's
    # best. 1 = no final phase.
    final_start: float = 1.0
    final_energy_weight: float = 10.0  # loss weight on (ΔE/n_atoms)² in the final phase, eV²
    final_force_weight: float = 0.1  # loss weight on ΔF² in the final phase, (eV/Å)²
    device: str = "auto"  # "auto" (CUDA when available) | "cpu" | "cuda"; an execution detail, not in the stage hash
    # Networks per stage: N > 1 trains N from other initial weights (train.seed + 100 k; member 0 is the single
    # network of the same config) and the stage's model is their mean (eip2nn.training.committee)
    committee: int = 1

    # fields added after stage hashes were first written: to be left out of a stage's hash while at
    # their default (as DataConfig.LATE_FIELDS), so finished stages keep being reused
    LATE_FIELDS = ("stress_weight", "schedule", "ema_decay", "final_start", "final_energy_weight", "final_force_weight",
                   "local_energy_weight", "min_steps", "committee")
    EXECUTION_FIELDS = ("device",)  # never in a stage's hash: they change where it runs, not what it learns

    def __post_init__(self):
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"train.dtype must be float32 or float64, got {self.dtype!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.device not in DEVICES:
            raise ValueError(f"train.device must be one of {DEVICES}, got {self.device!r}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"train.ema_decay must be in [0, 1), got {self.ema_decay}")
        if not 0.0 <= self.final_start <= 1.0:
            raise ValueError(f"train.final_start must be in [0, 1], got {self.final_start}")
        if self.final_energy_weight < 0 or self.final_force_weight < 0:
            raise ValueError("train.final_energy_weight and train.final_force_weight must be >= 0")
        if self.epochs < 0 or self.min_steps < 0 or self.batch_size < 1 or self.lr <= 0:
            raise ValueError("train: epochs >= 0, min_steps >= 0, batch_size >= 1 and lr > 0 are required")
        if self.committee < 1:
            raise ValueError(f"train.committee must be >= 1 (networks per stage), got {self.committee}")
        if self.stress_weight < 0 or self.local_energy_weight < 0:
            raise ValueError(f"train.stress_weight and train.local_energy_weight must be >= 0, got "
                             f"{self.stress_weight} and {self.local_energy_weight}")

    def epochs_for(self, n_train: int) -> int:
        """Epochs to run on ``n_train`` structures: ``epochs``, or more to reach ``min_steps`` optimiser steps."""
        steps_per_epoch = max(1, math.ceil(n_train / self.batch_size))
        return max(self.epochs, math.ceil(self.min_steps / steps_per_epoch))

    @property
    def loss_weights(self) -> LossWeights:
        return LossWeights(self.energy_weight, self.force_weight, self.stress_weight, self.local_energy_weight)

    @property
    def final_loss_weights(self) -> LossWeights:
        return LossWeights(self.final_energy_weight, self.final_force_weight, self.stress_weight,
                           self.local_energy_weight)

    @property
    def has_final_phase(self) -> bool:
        return self.final_start < 1.0


SCHEDULES = ("plateau", "cosine")
DEVICES = ("auto", "cpu", "cuda")


STAGES = ("baseline", "weak", "pretrain", "finetune", "delta", "snap")


@dataclass
class FinetuneConfig:
    pretrained: str = ""  # checkpoint path, or "runs:/<mlflow run id>"
    init_head: str = "fresh"  # "fresh" | "best" (EIP head closest to DFT) | an EIP head's id
    freeze: str = "none"  # "none" | "backbone" | "embedding" | "interactions:N" | "layers:N"
    replay_fraction: float = 0.0  # share of unlabelled training structures replayed with EIP labels
    replay_weight: float = 0.1  # loss weight of each replayed EIP head


@dataclass
class DeltaConfig:
    """Δ-learning (stage ``delta``): the DFT head learns DFT minus one EIP; the model predicts EIP + network."""

    eip: str = ""  # the EIP under the network; "" = the eligible EIP closest to DFT on the labelled structures


@dataclass
class TrackingConfig:
    enabled: bool = True
    experiment: str = "eip2nn"
    run_name: str = ""  # default: "<arm>-<dataset>-f<fraction>-s<seed>"
    parent_run_id: str = ""


@dataclass
class StageConfig:
    stage: str = "baseline"  # "baseline" | "weak" | "pretrain" | "finetune" | "delta" | "snap" (SNAP reference fit)
    output: str = "outputs/runs"  # each run writes to <output>/<stage>-<config hash>/
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    weak: WeakConfig = field(default_factory=WeakConfig)
    delta: DeltaConfig = field(default_factory=DeltaConfig)
    snap: SnapConfig = field(default_factory=SnapConfig)  # stage snap: the SNAP reference fit's hyperparameters
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def __post_init__(self):
        if self.stage not in STAGES:
            raise ValueError(f"stage: {self.stage!r} is not one of {STAGES}")
        if self.stage == "finetune" and not self.finetune.pretrained:
            raise ValueError("finetune.pretrained is required for stage finetune")
        if self.weak.enabled and self.stage not in ("weak", "finetune"):
            raise ValueError(f"weak.enabled applies to stages weak and finetune, not {self.stage}; "
                             "use stage: weak for the weak arm")
        if self.train.committee > 1 and self.stage in ("pretrain", "snap"):
            raise ValueError(f"train.committee applies to stages that train a DFT head (baseline, weak, finetune, "
                             f"delta), not {self.stage}")
        if self.model.snap_prior != "none" and self.stage not in ("baseline", "weak", "delta"):
            raise ValueError(f"model.snap_prior applies to stages baseline, weak and delta (a fresh DFT head on "
                             f"the stage's labels), not {self.stage}")

    @property
    def arm(self) -> str:
        """The arm this stage is (the pipeline's word, also the ``eip2nn.arm`` tag): baseline | weak |
        transfer (finetune) | both (finetune with weak labels) | delta | pretrain (no arm of its own)."""
        if self.stage == "finetune":
            return "both" if self.weak.enabled else "transfer"
        return self.stage

    @property
    def uses_weak_labels(self) -> bool:
        return self.arm in ("weak", "both")

    @property
    def chooses_eips(self) -> bool:
        """Whether this stage picks its EIPs itself (pretraining heads or weak-selector candidates)."""
        return ((self.stage == "pretrain" and not self.data.eips) or (self.uses_weak_labels and not self.weak.eips)
                or (self.stage == "delta" and not self.delta.eip))

    @classmethod
    def from_dict(cls, data: dict) -> "StageConfig":
        return from_dict(cls, data)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def result_dict(self) -> dict:
        """Everything that shapes the result: the config without its tracking section.

        Data and training fields added later (``LATE_FIELDS``) are left out while at their
        defaults, so stages finished before they existed are still found and reused.
        """
        d = self.as_dict()
        d.pop("tracking")
        # sections added later, hashed only by the stage that reads them
        if self.stage != "delta" or d["delta"] == dataclasses.asdict(DeltaConfig()):
            del d["delta"]
        if self.stage == "snap":  # a linear fit: no network, no training loop
            for section in ("model", "train", "finetune", "weak"):
                del d[section]
        else:
            del d["snap"]
        for section, cls in (("data", DataConfig), ("train", TrainConfig), ("model", ModelConfig)):
            if section not in d:
                continue
            defaults = dataclasses.asdict(cls())
            for name in cls.LATE_FIELDS:
                if d[section][name] == defaults[name]:
                    del d[section][name]
            for name in cls.EXECUTION_FIELDS:
                del d[section][name]
        return d

    def content_hash(self) -> str:
        """Hash of :meth:`result_dict`, the contents of the user's data files and extra structure files included
        (an edited file is new data: its stages run again)."""
        d = self.result_dict()
        d["extra_structures_sha256"] = [_file_sha256(p) for p in self.weak.extra_structures]
        if self.data.is_files:
            d["data_files_sha256"] = [_file_sha256(p) for p in (self.data.train, self.data.test) if p]
        if self.chooses_eips:  # a stage whose EIPs were chosen under another rule is not reused
            d["eip_choice_rule"] = EIP_CHOICE_RULE
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def _file_sha256(path: str) -> str | None:
    """sha256 of a file's bytes (memoised per size and mtime), None when it does not exist."""
    return sha256_of(Path(path)) if Path(path).is_file() else None


def load_stage_config(path: str | Path, overrides: list[str] | None = None) -> StageConfig:
    """The stage in YAML file ``path`` with ``key.path=value`` overrides; ConfigError names a bad key or value."""
    return StageConfig.from_dict(apply_overrides(load_yaml(path), overrides or []))

