"""The sweep file: which pipeline, which knobs over which ranges, what to minimise.

The objective is always a *validation* error (the test set never steers a
choice): mean over ``objective.seeds`` of the chosen arm at one DFT fraction.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eip2nn.config import ConfigError, apply_overrides, from_dict, load_yaml
from eip2nn.pipeline.config import NN_ARMS, PipelineConfig, load_pipeline

METRICS = ("val_energy_mae", "val_force_mae")  # meV/atom, eV/Å
PRUNERS = ("median", "hyperband", "threshold", "none")


@dataclass
class ParamSpace:
    type: str = "float"  # "float" | "int" | "categorical"
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    step: float = 0.0  # 0 = continuous (float) / 1 (int)
    choices: list[Any] = field(default_factory=list)

    def __post_init__(self):
        if self.type not in ("float", "int", "categorical"):
            raise ValueError(f"type {self.type!r} is not float, int or categorical")
        if self.type == "categorical" and not self.choices:
            raise ValueError("a categorical parameter needs choices")
        if self.type != "categorical" and not self.low < self.high:
            raise ValueError(f"needs low < high, got {self.low} and {self.high}")


@dataclass
class ObjectiveConfig:
    arm: str = "weak"
    fraction: float = 0.1
    seeds: list[int] = field(default_factory=lambda: [0])
    metric: str = "val_energy_mae"

    def __post_init__(self):
        if self.arm not in NN_ARMS:  # snap has no network knobs; auto is a choice among arms, not a stage
            raise ValueError(f"objective.arm {self.arm!r} is not one of {list(NN_ARMS)}")
        if self.metric not in METRICS:
            raise ValueError(f"objective.metric {self.metric!r} is not one of {list(METRICS)} (validation only)")


@dataclass
class PrunerConfig:
    kind: str = "median"  # "median" | "hyperband" | "threshold" | "none"; fed the per-epoch validation loss
    n_startup_trials: int = 3  # median: trials before pruning starts
    n_warmup_steps: int = 10  # median: epochs before a trial can be pruned
    upper: float = 0.0  # threshold: prune when the validation loss exceeds this

    def __post_init__(self):
        if self.kind not in PRUNERS:
            raise ValueError(f"pruner.kind {self.kind!r} is not one of {list(PRUNERS)}")


@dataclass
class SweepConfig:
    pipeline: str = ""  # pipeline YAML, relative to the sweep file
    study: str = ""  # Optuna study name; processes with the same study and storage cooperate
    storage: str = ""  # Optuna storage URL; default sqlite:///<mlruns>/optuna.db; "journal:<file>" too
    output: str = ""  # where best.yaml goes; default outputs/sweeps/<study>
    n_trials: int = 20  # per process
    sampler_seed: int = 0  # TPE seed (each process adds its own offset)
    overrides: list[str] = field(default_factory=list)  # key=value applied to the pipeline before the knobs
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    pruner: PrunerConfig = field(default_factory=PrunerConfig)
    params: dict[str, ParamSpace] = field(default_factory=dict)  # pipeline key path -> range

    def __post_init__(self):
        if not self.pipeline or not self.study:
            raise ValueError("pipeline and study are required")
        if not self.params:
            raise ValueError("params: declare at least one knob, e.g. train.lr: {type: float, low: 1e-4, high: 1e-2, log: true}")

    @property
    def output_dir(self) -> Path:
        return Path(self.output or f"outputs/sweeps/{self.study}")


@dataclass
class Sweep:
    config: SweepConfig
    pipeline_path: Path

    def pipeline(self, values: dict[str, Any]) -> PipelineConfig:
        """The pipeline with the sweep's overrides and then ``values`` (key path -> value) applied."""
        return load_pipeline(self.pipeline_path, [*self.config.overrides, *_as_overrides(values)])


def _as_overrides(values: dict[str, Any]) -> list[str]:
    import json
    return [f"{k}={json.dumps(v)}" for k, v in values.items()]


def load_sweep(path: str | Path, overrides: list[str] | None = None) -> Sweep:
    """The sweep in ``path``; every knob is checked against the pipeline's config tree now, not mid-study."""
    path = Path(path)
    try:
        cfg = from_dict(SweepConfig, apply_overrides(load_yaml(path), overrides or []))
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    sweep = Sweep(cfg, path.parent / cfg.pipeline)  # an absolute pipeline path stays as it is
    for key, space in cfg.params.items():  # the strict pipeline loader names an unknown key or a bad value
        probe = space.choices[0] if space.type == "categorical" else (int(space.low) if space.type == "int" else space.low)
        try:
            sweep.pipeline({key: probe})
        except ConfigError as exc:
            raise ConfigError(f"{path}: params.{key}: {exc}") from None
    return sweep
