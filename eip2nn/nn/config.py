"""The model section of a config: the architecture, cheap to import (no torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

BACKBONES = ("schnet", "symmetry_functions", "bispectrum")
ACTIVATIONS = ("shifted_softplus", "tanh", "sigmoid")  # tanh and sigmoid: what LAMMPS ML-IAP's nn model runs
DESCRIPTOR_BACKBONES = ("symmetry_functions", "bispectrum")  # an MLP on precomputed per-atom descriptors
PRIOR_CHOICES = ("none", "auto", "linear", "quadratic")  # model.snap_prior


@dataclass
class ModelConfig:
    """Architecture; every field is a constructor keyword with its default."""

    backbone: str = "schnet"  # "schnet" | "symmetry_functions" | "bispectrum" (SNAP bispectrum from LAMMPS)
    cutoff: float = 5.0  # Å
    width: int = 64  # features per atom
    depth: int = 3  # SchNet interactions, or MLP layers of the descriptor net
    n_rbf: int = 20  # SchNet radial basis size
    descriptor: str = "set51"  # KLIFF symmetry-function set ("set51" | "set30")
    head_hidden: int = 32  # hidden units of each head's MLP
    twojmax: int = 6  # band limit 2J of the bispectrum backbone (30 components for 6, 55 for 8)
    # hidden activation of a descriptor backbone's MLP and of the heads (SchNet: shifted_softplus only);
    # a bispectrum model with tanh or sigmoid can also run as LAMMPS's own ML-IAP network (pair_style mliap)
    activation: str = "shifted_softplus"
    # a SNAP fitted by ridge to the stage's DFT training labels on the network's own bispectrum, fixed inside
    # the model; the DFT head learns what it misses (bispectrum backbone; baseline and weak stages):
    # "none" | "auto" (linear or quadratic, and the ridge strength, chosen on validation) | "linear" | "quadratic"
    snap_prior: str = "none"

    # fields added after stage hashes were first written: left out of a stage's hash while at their default
    LATE_FIELDS = ("twojmax", "activation", "snap_prior")
    EXECUTION_FIELDS = ()

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"model.backbone: {self.backbone!r} is not one of {BACKBONES}")
        if isinstance(self.twojmax, bool) or not isinstance(self.twojmax, int) or self.twojmax < 0:
            raise ValueError(f"model.twojmax: {self.twojmax!r} is not a non-negative integer")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"model.activation: {self.activation!r} is not one of {ACTIVATIONS}")
        if self.backbone == "schnet" and self.activation != "shifted_softplus":
            raise ValueError(f"model.activation: {self.activation!r} applies to descriptor backbones "
                             f"{DESCRIPTOR_BACKBONES}; schnet uses shifted_softplus")
        if self.snap_prior not in PRIOR_CHOICES:
            raise ValueError(f"model.snap_prior: {self.snap_prior!r} is not one of {PRIOR_CHOICES}")
        if self.snap_prior != "none" and self.backbone != "bispectrum":
            raise ValueError(f"model.snap_prior: {self.snap_prior!r} needs model.backbone bispectrum (the SNAP is "
                             f"fitted on the network's own descriptor), not {self.backbone!r}")
        if self.cutoff <= 0 or self.width < 1 or self.depth < 1:
            raise ValueError(f"model: cutoff, width and depth must be positive, got {asdict(self)}")
