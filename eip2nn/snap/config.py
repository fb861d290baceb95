"""Hyperparameters of the SNAP reference fit; cheap to import (no LAMMPS, no torch).

Every element gets radius 0.5 and neighbour weight 1 in LAMMPS, so the
pair cut-off ``rcutfac * (R_i + R_j)`` is ``rcutfac`` Å for every pair.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

QUADRATIC_CHOICES = ("auto", "linear", "quadratic")

# SNAP (linear) hyperparameters (twojmax, rcutfac Å) of the mlearn benchmark fits, from the
# ``<El>_Zuo_JPCA2020.snapparam`` files shipped with LAMMPS (rfac0 0.99363, rmin0 0 for all):
# Zuo et al., J. Phys. Chem. A 124, 731 (2020). Hyperparameters only, no labels: no leakage.
PUBLISHED_HYPERPARAMETERS: dict[str, tuple[int, float]] = {
    "Si": (8, 4.9), "Mo": (6, 4.6), "Cu": (8, 4.1), "Ni": (8, 4.1), "Ge": (8, 5.5), "Li": (8, 5.1),
}
# The same for their quadratic SNAP (qSNAP), from ``<El>_Zuo_JPCA2020.quadratic.snapparam``.
PUBLISHED_QUADRATIC_HYPERPARAMETERS: dict[str, tuple[int, float]] = {
    "Si": (8, 4.8), "Mo": (6, 5.2), "Cu": (6, 3.9), "Ni": (6, 3.8), "Ge": (6, 4.9), "Li": (6, 5.1),
}


def _default_alphas() -> list[float]:
    return [10.0 ** k for k in range(-8, 2)]


@dataclass
class SnapConfig:
    """What ``fit_snap`` fits; every field is a keyword with its default."""

    twojmax: int = 6  # band limit 2J of the bispectrum (LAMMPS twojmax), dimensionless
    rcutfac: float = 4.5  # radial cut-off, Å
    rfac0: float = 0.99363  # distance-to-angle factor of the bispectrum, dimensionless, in (0, 1]
    rmin0: float = 0.0  # inner distance of the distance-to-angle map, Å
    quadratic: str = "auto"  # "auto" (linear or quadratic, chosen on validation) | "linear" | "quadratic"
    # ridge strengths to choose from on validation; dimensionless, relative to standardised design columns
    alphas: list[float] = field(default_factory=_default_alphas)
    energy_weight: float = 1.0  # weight of (ΔE / n_atoms)², 1/(eV/atom)², as in eip2nn's NN loss
    force_weight: float = 0.1  # weight of each squared force-component error, 1/(eV/Å)²
    cv_folds: int = 5  # folds of the cross-validation used when there is no validation structure
    seed: int = 0  # seeds the cross-validation folds

    def __post_init__(self):
        self.alphas = [float(a) for a in self.alphas]
        if isinstance(self.twojmax, bool) or not isinstance(self.twojmax, int) or self.twojmax < 0:
            raise ValueError(f"snap.twojmax: {self.twojmax!r} is not a non-negative integer")
        if not self.rcutfac > 0:
            raise ValueError(f"snap.rcutfac: {self.rcutfac!r} is not a positive cut-off (Å)")
        if not 0 < self.rfac0 <= 1:
            raise ValueError(f"snap.rfac0: {self.rfac0!r} is not in (0, 1]")
        if not 0 <= self.rmin0 < self.rcutfac:
            raise ValueError(f"snap.rmin0: {self.rmin0!r} is not in [0, rcutfac={self.rcutfac})")
        if self.quadratic not in QUADRATIC_CHOICES:
            raise ValueError(f"snap.quadratic: {self.quadratic!r} is not one of {QUADRATIC_CHOICES}")
        if not self.alphas or min(self.alphas) <= 0:
            raise ValueError(f"snap.alphas: {self.alphas!r} must be a non-empty list of positive numbers")
        if self.energy_weight < 0 or self.force_weight < 0 or self.energy_weight + self.force_weight == 0:
            raise ValueError(f"snap.energy_weight, snap.force_weight: ({self.energy_weight!r}, {self.force_weight!r}) "
                             "must be non-negative and not both zero")
        if self.cv_folds < 2:
            raise ValueError(f"snap.cv_folds: {self.cv_folds!r} must be at least 2")

    def candidates(self) -> list[bool]:
        """The ``quadratic`` values to try: [False, True] for "auto"."""
        return {"auto": [False, True], "linear": [False], "quadratic": [True]}[self.quadratic]


def published_config(element: str, quadratic: bool, **overrides) -> SnapConfig:
    """SnapConfig with Zuo et al.'s (twojmax, rcutfac) for ``element``, linear or quadratic, and ``overrides``."""
    table = PUBLISHED_QUADRATIC_HYPERPARAMETERS if quadratic else PUBLISHED_HYPERPARAMETERS
    if element not in table:
        raise ValueError(f"no published SNAP hyperparameters for {element!r}; known: {sorted(table)}")
    twojmax, rcutfac = table[element]
    return replace(SnapConfig(twojmax=twojmax, rcutfac=rcutfac, quadratic="quadratic" if quadratic else "linear"),
                   **overrides)
