"""The pipeline file: one typed tree, loaded strictly from YAML.

A pipeline crosses arms × DFT fractions × seeds on one dataset (registered, or the
user's own files: ``data.train`` and optionally ``data.test``). Every cell is
one training stage (:class:`eip2nn.training.config.StageConfig`) built from the shared
``data``/``model``/``train``/``finetune``/``weak`` sections; the transfer arms
fine-tune one backbone per seed, pretrained on EIP labels with ``pretrain.train``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from eip2nn.config import ConfigError, apply_overrides, from_dict, load_yaml
from eip2nn.data.protocol import DataConfig
from eip2nn.nn.config import ModelConfig
from eip2nn.snap.config import SnapConfig
from eip2nn.training.config import DeltaConfig, FinetuneConfig, TrainConfig
from eip2nn.weak.config import WeakConfig

ARMS = ("baseline", "weak", "transfer", "both", "delta", "snap", "auto")
NN_ARMS = ("baseline", "weak", "transfer", "both", "delta")  # eip2nn's own arms: the ones `auto` chooses among
REFERENCE_ARMS = ("snap",)  # what a user would otherwise fit to the same labels


@dataclass
class StudyConfig:
    fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25, 0.5, 1.0])  # shares of DFT labels
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # each seeds the split, the fraction subsets and the init
    arms: list[str] = field(default_factory=lambda: list(ARMS))

    def __post_init__(self):
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise ValueError(f"study.arms: {bad or self.arms} — choose from {list(ARMS)}")
        if "auto" in self.arms and not set(self.arms) & set(NN_ARMS):
            raise ValueError(f"study.arms: auto chooses among the eip2nn arms run ({list(NN_ARMS)}); add some")
        if not self.fractions or any(not 0.0 < f <= 1.0 for f in self.fractions):
            raise ValueError(f"study.fractions must be non-empty and in (0, 1], got {self.fractions}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"study.seeds must be non-empty and distinct, got {self.seeds}")


@dataclass
class PretrainConfig:
    eips: list[str] = field(default_factory=list)  # heads to pretrain; empty = the n_eips closest to DFT
    n_eips: int = 3  # chosen on the smallest fraction's DFT labels, which every arm may see
    train: TrainConfig = field(default_factory=TrainConfig)


@dataclass
class PipelineTracking:
    enabled: bool = True
    experiment: str = ""  # default "eip2nn-<name>"


@dataclass
class PipelineConfig:
    name: str = "pipeline"
    output: str = ""  # default outputs/pipelines/<name>
    label_all: bool = True  # first label every training/validation structure with every eligible EIP
    study: StudyConfig = field(default_factory=StudyConfig)
    data: DataConfig = field(default_factory=DataConfig)  # dft_fraction and split_seed are set per cell
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)  # baseline, weak and fine-tuning stages
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # "pretrained" is set per seed
    weak: WeakConfig = field(default_factory=WeakConfig)  # "enabled" is set by the arm
    delta: DeltaConfig = field(default_factory=DeltaConfig)  # the delta arm's EIP
    snap: SnapConfig = field(default_factory=SnapConfig)  # the snap reference arm's hyperparameters
    tracking: PipelineTracking = field(default_factory=PipelineTracking)

    def __post_init__(self):
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"name: {self.name!r} must be non-empty, without spaces or slashes")
        if self.finetune.pretrained:
            raise ValueError("finetune.pretrained is set by the pipeline (one pretrained backbone per seed)")

    @property
    def output_dir(self) -> Path:
        return Path(self.output or f"outputs/pipelines/{self.name}")

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or f"eip2nn-{self.name}"

    @property
    def element(self) -> str:
        """The registered dataset's element, or the user's training file name (its species are known once read)."""
        return self.data.name if self.data.is_files else self.data.dataset.rstrip("/").split("/")[-1]

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.as_dict(), sort_keys=False)


def pipeline_from_dict(data: dict) -> PipelineConfig:
    return from_dict(PipelineConfig, data)


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """The pipeline in ``path`` with ``key.path=value`` overrides; ConfigError names a bad key or value."""
    try:
        return pipeline_from_dict(apply_overrides(load_yaml(path), overrides or []))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
