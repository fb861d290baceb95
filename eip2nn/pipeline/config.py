"""The pipeline file: one typed tree, loaded strictly from YAML.

A pipeline crosses arms × DFT fractions × seeds on one dataset (registered, or the
user's own files: ``data.train`` and optionally ``data.test``). Every cell is
one training stage (:class:`eip2nn.training.config.StageConfig`) built from the shared
``data``/``model``/``train``/``finetune``/``weak`` sections; the transfer arms
fine-tune one backbone per seed, pretrained on EIP labels with ``pretrain.train``.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eip2nn.config import ConfigError, apply_overrides, from_dict, load_yaml, set_path
from eip2nn.data.protocol import DataConfig
from eip2nn.nn.config import ModelConfig
from eip2nn.snap.config import SnapConfig
from eip2nn.training.config import DeltaConfig, FinetuneConfig, TrainConfig
from eip2nn.weak.config import WeakConfig

ARMS = ("baseline", "weak", "transfer", "both", "delta", "snap", "auto")
NN_ARMS = ("baseline", "weak", "transfer", "both", "delta")  # eip2nn's own arms: the ones `auto` chooses among
AUTO_CHOICES = ("mean_over_seeds", "per_seed", "blend")  # how auto chooses (pipeline.auto, pipeline.blend)


@dataclass
class StudyConfig:
    fractions: list[float] = field(default_factory=lambda: [0.05, 0.1, 0.25, 0.5, 1.0])  # shares of DFT labels
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])  # each seeds the split, the fraction subsets and the init
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    # the same study on several backbones: names ("schnet") or mappings of model settings with a "backbone"
    # and optionally a "name" ({backbone: bispectrum, twojmax: 8}); the model section gives the rest. Empty:
    # the model section alone. Each backbone's arms are named <arm>@<name>; snap runs once, auto picks among all
    backbones: list[str | dict[str, Any]] = field(default_factory=list)
    # how auto chooses (pipeline.auto): one arm per fraction by the mean validation score over the seeds'
    # splits ("mean_over_seeds"), or each seed by its own validation part ("per_seed"), or the mean of the top
    # k arms by that score, k chosen on the same validation parts ("blend", pipeline.blend)
    auto_choice: str = "mean_over_seeds"
    blend_arms: int = 0  # blend: at most this many arms (0: any number of the candidates; 1: no blend)

    def __post_init__(self):
        if self.auto_choice not in AUTO_CHOICES:
            raise ValueError(f"study.auto_choice: {self.auto_choice!r} — choose from {list(AUTO_CHOICES)}")
        if not isinstance(self.blend_arms, int) or self.blend_arms < 0:
            raise ValueError(f"study.blend_arms: {self.blend_arms!r} — a whole number of arms (0: no limit)")
        bad = [a for a in self.arms if a not in ARMS]
        if bad or not self.arms:
            raise ValueError(f"study.arms: {bad or self.arms} — choose from {list(ARMS)}")
        if "auto" in self.arms and not set(self.arms) & set(NN_ARMS):
            raise ValueError(f"study.arms: auto chooses among the eip2nn arms run ({list(NN_ARMS)}); add some")
        if not self.fractions or any(not 0.0 < f <= 1.0 for f in self.fractions):
            raise ValueError(f"study.fractions must be non-empty and in (0, 1], got {self.fractions}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"study.seeds must be non-empty and distinct, got {self.seeds}")
        entries = [{"backbone": b} if isinstance(b, str) else dict(b) for b in self.backbones]
        for entry in entries:
            if "backbone" not in entry:
                raise ValueError(f"study.backbones: {entry!r} names no backbone")
            entry.setdefault("name", entry["backbone"])
            if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(entry["name"])):
                raise ValueError(f"study.backbones: name {entry['name']!r} may use only letters, digits and _ . -")
        names = [e["name"] for e in entries]
        if len(set(names)) != len(names):
            raise ValueError(f"study.backbones: names {names} repeat; give each a different \"name\"")
        self.backbones = entries


def arm_name(arm: str, backbone: str) -> str:
    """A cell's arm name: ``<arm>@<backbone name>`` in a study over backbones; snap (no network) and auto stay."""
    return arm if not backbone or arm in ("snap", "auto") else f"{arm}@{backbone}"


def split_arm_name(name: str) -> tuple[str, str]:
    """(arm, backbone name) of a cell's arm name; the backbone name is "" outside a study over backbones."""
    arm, _, backbone = name.partition("@")
    return arm, backbone


VARIANT_SECTIONS = ("train", "model", "finetune", "weak", "delta")  # what a variant may change


@dataclass
class VariantConfig:
    """Another setting of one eip2nn arm (e.g. weak with α 0.3, transfer with a frozen backbone), run in every
    cell as an arm of its own, named by its key in ``variants``; ``auto`` chooses among these too."""

    arm: str = "weak"  # the arm it varies: baseline | weak | transfer | both | delta
    set: dict[str, Any] = field(default_factory=dict)  # stage-config overrides, e.g. {"weak.alpha": 0.3}

    def __post_init__(self):
        if self.arm not in NN_ARMS:
            raise ValueError(f"arm {self.arm!r} is not one of {list(NN_ARMS)}")
        bad = [k for k in self.set if k.split(".")[0] not in VARIANT_SECTIONS or "." not in k]
        if bad or not self.set:
            raise ValueError(f"set: {bad or 'nothing'} — give section.key overrides in {list(VARIANT_SECTIONS)}")

    def applied_to(self, stage: dict) -> dict:
        """A copy of the stage config ``stage`` (as a dict) with this variant's settings."""
        out = copy.deepcopy(stage)
        for key, value in self.set.items():
            set_path(out, key, value, f"variant of {self.arm}: {key}")
        return out


@dataclass
class PretrainConfig:
    eips: list[str] = field(default_factory=list)  # heads to pretrain; empty = the n_eips closest to DFT
    n_eips: int = 3  # chosen on the smallest fraction's DFT labels, which every arm may see
    train: TrainConfig = field(default_factory=TrainConfig)
    # loss weight on each atom's squared energy error Δe_i² (eV²) against the EIPs' local energies (the
    # pretraining stage's train.local_energy_weight); 0 = the heads learn totals (and forces) only
    w_local: float = 0.0

    def __post_init__(self):
        if self.train.local_energy_weight:
            raise ValueError("pretrain.train.local_energy_weight: set pretrain.w_local instead")
        if self.w_local < 0:
            raise ValueError(f"pretrain.w_local must be >= 0, got {self.w_local}")


@dataclass
class PipelineTracking:
    enabled: bool = True
    experiment: str = ""  # default "eip2nn-<name>"


@dataclass
class PipelineConfig:
    name: str = "pipeline"
    output: str = ""  # default outputs/pipelines/<name>
    label_all: bool = True  # first label every training/validation structure with every eligible EIP
    domain_check: bool = True  # report adversarial validation: test vs training, unlabelled pool vs labelled
    lpr: bool = False  # report each network cell's local prediction rigidity on the test atoms (pipeline.rigidity)
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
    # more settings of the eip2nn arms, each run in every cell as an arm named by its key (after study.arms)
    variants: dict[str, VariantConfig] = field(default_factory=dict)

    def __post_init__(self):
        for name, variant in self.variants.items():
            if name in ARMS or not re.fullmatch(r"[A-Za-z0-9_.=+-]+", name):
                raise ValueError(f"variants: {name!r} must differ from the arms {list(ARMS)} and use only "
                                 "letters, digits and _ . = + -")
            for key in variant.set:
                section, _, rest = key.partition(".")
                if rest.split(".")[0] not in dataclasses.asdict(getattr(self, section)):
                    raise ValueError(f"variants.{name}.set: unknown key {key!r}")
        if not self.name or any(c in self.name for c in "/\\ "):
            raise ValueError(f"name: {self.name!r} must be non-empty, without spaces or slashes")
        if self.finetune.pretrained:
            raise ValueError("finetune.pretrained is set by the pipeline (one pretrained backbone per seed)")
        self.backbone_models()  # each backbone's model settings are checked when the file is read
        prior = {a: self.variants[a].set.get("model.snap_prior", self.model.snap_prior) if a in self.variants
                 else self.model.snap_prior for a in self.arms}
        pretrained = [a for a in self.arms if self.base_arm(a) in ("transfer", "both") and prior[a] != "none"]
        if pretrained:
            raise ValueError(f"model.snap_prior: arms {pretrained} start from a pretrained network and cannot take "
                             "a SNAP prior (it applies to baseline, weak and delta); set it in a variant of one of "
                             "those, e.g. variants: {snap+nn: {arm: baseline, set: {model.snap_prior: auto}}}")

    def backbone_models(self) -> list[tuple[str, ModelConfig]]:
        """(name, model settings) of each backbone of the study; [("", model)] without study.backbones."""
        if not self.study.backbones:
            return [("", self.model)]
        out = []
        for entry in self.study.backbones:
            settings = {k: v for k, v in entry.items() if k != "name"}
            try:
                out.append((entry["name"], from_dict(ModelConfig, {**dataclasses.asdict(self.model), **settings},
                                                     f"study.backbones[{entry['name']}]")))
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return out

    @property
    def arms(self) -> list[str]:
        """Every arm a cell runs, in order: the study's, then the variants, then auto (which picks among them)."""
        own = [a for a in self.study.arms if a != "auto"] + list(self.variants)
        return own + ["auto"] * ("auto" in self.study.arms)

    @property
    def cell_arms(self) -> list[str]:
        """The arm names of the cells and the report: :attr:`arms`, or in a study over backbones each network
        arm per backbone (``<arm>@<name>``), then snap once, then auto."""
        if not self.study.backbones:
            return self.arms
        out = [arm_name(a, name) for name, _ in self.backbone_models() for a in self.arms if a not in ("snap", "auto")]
        return out + [a for a in self.arms if a in ("snap", "auto")]

    def base_arm(self, arm: str) -> str:
        """The arm a variant (or a cell's ``<arm>@<backbone>`` name) varies; an arm is its own base."""
        arm = split_arm_name(arm)[0]
        return self.variants[arm].arm if arm in self.variants else arm

    @property
    def candidates_of_auto(self) -> tuple[str, ...]:
        """The eip2nn arms run, variants and backbones included: what ``auto`` chooses among."""
        return tuple(a for a in self.cell_arms if self.base_arm(a) in NN_ARMS)

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
