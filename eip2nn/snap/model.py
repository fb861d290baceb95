"""A fitted SNAP potential: predictions, JSON files, LAMMPS ``pair_style snap`` files, an ASE calculator.

Per element e the coefficients are ``[β0, β_1..β_K, (α_kl, k ≤ l)]`` in eV, the
``.snapcoeff`` order: the energy of an atom of element e is
``β0 + Σ_k β_k B_k + Σ_k ½ α_kk B_k² + Σ_{k<l} α_kl B_k B_l`` (the quadratic
block only when ``quadratic``), with B the bispectrum less the isolated atom's
(bzeroflag 1), so β0 is the isolated atom's energy and doubles as the
per-element energy offset. Predictions are the design rows of
:mod:`eip2nn.snap.bispectrum` times the coefficients; ``pair_style snap`` on
the files of :meth:`SnapModel.write_lammps` gives the same numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator, all_changes

from eip2nn.keys import structure_name
from eip2nn.snap.bispectrum import (
    BZEROFLAG,
    ELEMENT_RADIUS,
    ELEMENT_WEIGHT,
    SWITCHFLAG,
    BispectrumCalculator,
    DesignRows,
    n_per_element,
)
from eip2nn.snap.config import SnapConfig

FORMAT = "eip2nn-snap"
FORMAT_VERSION = 1


@dataclass
class SnapModel:
    """SNAP hyperparameters and per-element coefficients; ``coefficients[e]`` has 1 + n_per_element values, eV."""

    species: list[str]
    twojmax: int
    rcutfac: float  # Å (every element has radius 0.5)
    rfac0: float
    rmin0: float  # Å
    quadratic: bool
    coefficients: dict[str, np.ndarray]  # element -> (1 + n_per_element,) [β0, linear, quadratic upper triangle], eV
    info: dict = field(default_factory=dict)  # free JSON-able metadata (fit choice, data sizes)
    _calculator: BispectrumCalculator | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        self.coefficients = {e: np.asarray(c, dtype=float) for e, c in self.coefficients.items()}
        want = 1 + n_per_element(self.twojmax, self.quadratic)
        if sorted(self.coefficients) != sorted(self.species):
            raise ValueError(f"SNAP coefficients for {sorted(self.coefficients)}, species {self.species}")
        bad = {e: c.shape for e, c in self.coefficients.items() if c.shape != (want,)}
        if bad:
            raise ValueError(f"SNAP coefficients of shape {bad}; twojmax {self.twojmax} "
                             f"{'quadratic' if self.quadratic else 'linear'} needs ({want},)")

    @property
    def config(self) -> SnapConfig:
        """The bispectrum hyperparameters as a SnapConfig (fit fields at their defaults)."""
        return SnapConfig(twojmax=self.twojmax, rcutfac=self.rcutfac, rfac0=self.rfac0, rmin0=self.rmin0,
                          quadratic="quadratic" if self.quadratic else "linear")

    @property
    def n_coefficients(self) -> int:
        return sum(len(c) for c in self.coefficients.values())

    # -- predictions --------------------------------------------------------------------
    def predict(self, atoms: Atoms, name: str | None = None) -> tuple[float, np.ndarray, np.ndarray | None]:
        """(energy eV, forces (n, 3) eV/Å, stress (6,) ASE Voigt eV/Å³ or None unless fully periodic)."""
        if self._calculator is None:
            self._calculator = BispectrumCalculator(self.species, self.config, self.quadratic)
        return self.predict_rows(self._calculator.rows(atoms, name))

    def predict_many(self, structures: list[Atoms]) -> list[tuple[float, np.ndarray, np.ndarray | None]]:
        """:meth:`predict` of each structure."""
        return [self.predict(a, structure_name(a, i)) for i, a in enumerate(structures)]

    def predict_rows(self, rows: DesignRows) -> tuple[float, np.ndarray, np.ndarray | None]:
        """Energy, forces and stress from design rows made with this model's hyperparameters."""
        offsets = np.array([self.coefficients[e][0] for e in self.species])
        beta = np.concatenate([self.coefficients[e][1:] for e in self.species])
        energy = float(rows.counts @ offsets + rows.energy @ beta)
        forces = (rows.forces @ beta).reshape(-1, 3)
        return energy, forces, None if rows.stress is None else rows.stress @ beta

    def close(self) -> None:
        """Close the LAMMPS instance predictions use (a later prediction starts a new one)."""
        if self._calculator is not None:
            self._calculator.close()
            self._calculator = None

    # -- files --------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": FORMAT_VERSION, "species": self.species, "twojmax": self.twojmax,
                "rcutfac": self.rcutfac, "rfac0": self.rfac0, "rmin0": self.rmin0, "quadratic": self.quadratic,
                "radius": ELEMENT_RADIUS, "weight": ELEMENT_WEIGHT, "bzeroflag": BZEROFLAG, "switchflag": SWITCHFLAG,
                "coefficients": {e: self.coefficients[e].tolist() for e in self.species}, "info": self.info}

    @classmethod
    def from_dict(cls, d: dict) -> "SnapModel":
        if d.get("format") != FORMAT or d.get("version") != FORMAT_VERSION:
            raise ValueError(f"not an {FORMAT} v{FORMAT_VERSION} model (format {d.get('format')!r}, "
                             f"version {d.get('version')!r})")
        fixed = {"radius": ELEMENT_RADIUS, "weight": ELEMENT_WEIGHT, "bzeroflag": BZEROFLAG, "switchflag": SWITCHFLAG}
        other = {k: d.get(k) for k, v in fixed.items() if d.get(k) != v}
        if other:
            raise ValueError(f"SNAP model with {other}; this version supports only {fixed}")
        return cls(species=list(d["species"]), twojmax=int(d["twojmax"]), rcutfac=float(d["rcutfac"]),
                   rfac0=float(d["rfac0"]), rmin0=float(d["rmin0"]), quadratic=bool(d["quadratic"]),
                   coefficients=d["coefficients"], info=dict(d.get("info", {})))

    def save(self, path) -> Path:
        """Write the model as JSON (floats round-trip exactly); returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        return path

    @classmethod
    def load(cls, path) -> "SnapModel":
        path = Path(path)
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path}: {e}") from e

    def write_lammps(self, prefix) -> tuple[Path, Path]:
        """Write ``<prefix>.snapcoeff`` and ``<prefix>.snapparam`` for ``pair_style snap``; returns both paths.

        Use with ``pair_style snap`` and ``pair_coeff * * <coeff> <param> <element of each LAMMPS type>``.
        """
        coeff_path, param_path = Path(f"{prefix}.snapcoeff"), Path(f"{prefix}.snapparam")
        n = 1 + n_per_element(self.twojmax, self.quadratic)
        lines = ["# SNAP coefficients written by eip2nn (eV)", f"{len(self.species)} {n}"]
        for e in self.species:
            lines.append(f"{e} {ELEMENT_RADIUS!r} {ELEMENT_WEIGHT!r}")
            lines.extend(repr(float(c)) for c in self.coefficients[e])
        coeff_path.write_text("\n".join(lines) + "\n")
        param_path.write_text("\n".join([
            "# SNAP hyperparameters written by eip2nn (metal units)",
            f"rcutfac {float(self.rcutfac)!r}", f"twojmax {int(self.twojmax)}", f"rfac0 {float(self.rfac0)!r}",
            f"rmin0 {float(self.rmin0)!r}",
            f"quadraticflag {int(self.quadratic)}", f"bzeroflag {BZEROFLAG}", f"switchflag {SWITCHFLAG}",
        ]) + "\n")
        return coeff_path, param_path

    def lammps_commands(self, coeff_path, param_path, type_elements: list[str] | None = None) -> list[str]:
        """``pair_style`` and ``pair_coeff`` commands for the written files; LAMMPS types map to ``type_elements``
        (default: this model's species, in order)."""
        return ["pair_style snap",
                f"pair_coeff * * {coeff_path} {param_path} {' '.join(type_elements or self.species)}"]


class SnapCalculator(Calculator):
    """ASE calculator of a :class:`SnapModel`: energy, forces, and stress for fully periodic structures."""

    implemented_properties = ["energy", "free_energy", "forces", "stress"]

    def __init__(self, model: SnapModel, **kwargs):
        super().__init__(**kwargs)
        self.model = model

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        energy, forces, stress = self.model.predict(self.atoms)
        self.results = {"energy": energy, "free_energy": energy, "forces": forces}
        if stress is not None:
            self.results["stress"] = stress
