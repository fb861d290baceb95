"""``eip2nn generate``: many new structures from a few seed structures, seeded and with provenance.

Methods, per seed structure: MD at each temperature with a chosen EIP
(LAMMPS), random strains, vacancies and rattling. Every structure is checked
for overlapping atoms; a rejected one is retried with fresh random numbers up
to ``max_tries`` times, and every rejection is recorded with its reason. The
random numbers of (seed structure k, method, repeat r) depend only on
(seed, k, method, r), so adding a method or a temperature does not change the
structures the others produce.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from ase import Atoms
from ase.io import write

from eip2nn import __version__
from eip2nn.data import hide_dft_labels
from eip2nn.generate.md import lammps_md, require_md
from eip2nn.generate.perturb import Rejected, check_no_overlap, rattle, strain, vacancies
from eip2nn.keys import (
    CONFIG_ID,
    DATASET,
    DESCRIPTION,
    GEN_METHOD,
    GEN_PARAMS,
    GEN_RNG_SEED,
    GEN_SEED_STRUCTURE,
    GEN_VERSION,
    GROUP,
    structure_name,
)
from eip2nn.potentials.db import PotentialsDB

METHODS = ("md", "strain", "vacancy", "rattle")


@dataclass
class GenerateConfig:
    seed: int = 0  # seeds every random choice (strains, vacancies, rattling, MD velocities)
    md_eip: str = ""  # potentials_db id (LAMMPS backend) driving the MD; "" = no MD
    md_temperatures: list[float] = field(default_factory=list)  # K
    md_snapshots: int = 5  # per seed structure and temperature
    md_every: int = 100  # MD steps between snapshots
    md_equilibrate: int = 200  # MD steps before the first snapshot
    md_timestep: float = 1.0  # fs
    strains: int = 0  # strained copies per seed structure
    max_strain: float = 0.03  # largest strain component
    vacancies: int = 0  # copies per seed structure with vacancy_count atoms removed
    vacancy_count: int = 1
    rattles: int = 0  # rattled copies per seed structure
    rattle_stdev: float = 0.05  # Å
    min_distance_factor: float = 0.6  # reject atoms closer than this × the covalent radii sum
    max_tries: int = 10  # attempts per requested structure before recording it as rejected

    def __post_init__(self):
        if self.md_temperatures and not self.md_eip:
            raise ValueError("md_temperatures given without md_eip: name the EIP that drives the MD")
        if min(self.md_snapshots, self.md_every, self.strains, self.vacancies, self.rattles, self.max_tries) < 0:
            raise ValueError("counts and steps must be >= 0")


@dataclass
class Generated:
    structures: list[Atoms]
    rejected: list[dict]  # {"seed_structure", "method", "repeat", "reason"}
    counts: dict[str, int]  # method -> structures made


def generate(seeds: list[Atoms], cfg: GenerateConfig) -> Generated:  # ~70 lines: keep/attempt close over the outputs
    """New structures from ``seeds``; none of them carries a DFT label."""
    spec = PotentialsDB().get(cfg.md_eip) if cfg.md_eip else None
    if spec is not None:
        require_md(spec, key="md_eip")
    out: list[Atoms] = []
    rejected: list[dict] = []
    counts = {m: 0 for m in METHODS}

    def keep(atoms: Atoms, seed_name: str, method: str, repeat: int | str, params: dict) -> None:
        atoms.info.update({
            CONFIG_ID: f"generated/{method}/{seed_name}/{repeat}", DATASET: "generated",
            DESCRIPTION: f"eip2nn generate: {method} of {seed_name}",
            GROUP: f"generated-{method}", GEN_METHOD: method, GEN_SEED_STRUCTURE: seed_name,
            GEN_RNG_SEED: cfg.seed, GEN_PARAMS: json.dumps(params, sort_keys=True), GEN_VERSION: __version__})
        out.append(atoms)
        counts[method] += 1

    def attempt(k: int, seed_name: str, method: str, repeat: int, make) -> None:
        reason = ""
        for t in range(cfg.max_tries):
            rng = np.random.default_rng([cfg.seed, k, METHODS.index(method), repeat, t])
            try:
                atoms, params = make(rng)
                check_no_overlap(atoms, cfg.min_distance_factor)
            except Rejected as e:
                reason = str(e)
                continue
            keep(atoms, seed_name, method, repeat, {**params, "try": t})
            return
        rejected.append({"seed_structure": seed_name, "method": method, "repeat": repeat,
                         "reason": f"{cfg.max_tries} tries, last: {reason}"})

    for k, seed_atoms in enumerate(seeds):
        name = structure_name(seed_atoms, k, "seed")
        base = hide_dft_labels(seed_atoms)  # generated structures are unlabelled
        for r in range(cfg.strains):
            def make(rng):
                atoms, eps = strain(base, cfg.max_strain, rng)
                return atoms, {"strain": np.round(eps, 6).tolist()}
            attempt(k, name, "strain", r, make)
        for r in range(cfg.vacancies):
            def make(rng):
                atoms, removed = vacancies(base, cfg.vacancy_count, rng)
                return atoms, {"removed": removed}
            attempt(k, name, "vacancy", r, make)
        for r in range(cfg.rattles):
            attempt(k, name, "rattle", r, lambda rng: (rattle(base, cfg.rattle_stdev, rng),
                                                              {"stdev_A": cfg.rattle_stdev}))
        for ti, temperature in enumerate(cfg.md_temperatures):
            md_seed = int(np.random.default_rng([cfg.seed, k, 0, ti]).integers(1, 2 ** 31 - 1))
            try:
                snapshots = lammps_md(base, spec, temperature, cfg.md_snapshots, cfg.md_every,
                                      cfg.md_equilibrate, cfg.md_timestep, md_seed)
            except Exception as e:  # a LAMMPS failure loses this run only; it is recorded with its reason
                rejected.append({"seed_structure": name, "method": "md", "repeat": ti,
                                 "reason": f"MD at {temperature} K with {spec.id} failed: {e}"})
                continue
            for step, atoms in snapshots:
                params = {"eip": spec.id, "temperature_K": temperature, "step": step,
                          "timestep_fs": cfg.md_timestep, "lammps_velocity_seed": md_seed, "ensemble": "NVT"}
                try:
                    check_no_overlap(atoms, cfg.min_distance_factor)
                except Rejected as e:
                    rejected.append({"seed_structure": name, "method": "md",
                                     "repeat": step, "reason": str(e)})
                    continue
                keep(atoms, name, "md", f"{temperature:g}K-step{step}", params)
    return Generated(out, rejected, counts)


def write_generated(result: Generated, path: str | Path, cfg: GenerateConfig, sources: list[str]) -> tuple[Path, Path]:
    """The structures as extxyz, and ``<path>.provenance.json`` (config, sources, counts, rejections)."""
    from eip2nn.labelling.provenance import package_versions
    from eip2nn.potentials.backends import backend, md_backends

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".partial")
    write(tmp, result.structures, format="extxyz")
    tmp.replace(path)
    provenance = path.with_name(path.name + ".provenance.json")
    md_packages = tuple(backend(name).package for name in md_backends())
    provenance.write_text(json.dumps({
        "config": asdict(cfg), "seed_sources": sources, "counts": result.counts, "n_structures": len(result.structures),
        "rejected": result.rejected, "versions": package_versions(("eip2nn", *md_packages, "ase", "numpy"))}, indent=1))
    return path, provenance
