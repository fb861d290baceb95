"""``eip2nn init``: look at a user's DFT files, score the eligible EIPs on them, write a pipeline.

:func:`start_pipeline` reads and checks the files exactly as a pipeline will
(:func:`eip2nn.data.protocol.make_split`), labels the training structures
with every eligible empirical potential, compares each with the DFT labels
(energies after per-element offsets, forces per component) and returns a
ready pipeline config whose defaults follow the size of the data.
"""

from __future__ import annotations

import dataclasses
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import yaml

from eip2nn.data.protocol import DataConfig, Split, make_split
from eip2nn.keys import GROUP, REF_ENERGY, REF_FORCES, REF_STRESS
from eip2nn.labelling.choice import eligible_eips
from eip2nn.labelling.compare import Agreement, compare_to_reference
from eip2nn.labelling.engine import label
from eip2nn.labelling.store import LabelStore
from eip2nn.pipeline.config import PipelineConfig, pipeline_from_dict
from eip2nn.potentials.db import PotentialsDB
from eip2nn.tables import format_table

MIN_LABELS = 5  # the smallest DFT fraction offered keeps at least this many labelled training structures
FRACTIONS = (0.1, 0.5, 1.0)  # a learning curve in three points; add fractions (and epochs) for a full study


@dataclass
class DataSummary:
    """What the checked data holds (training part = train + validation)."""

    n_train: int
    n_test: int
    test_note: str
    atoms: tuple[int, int, int]  # min, median, max atoms per structure
    species: list[str]
    energy_per_atom: tuple[float, float]  # min, max, eV/atom (DFT, as in the file)
    groups: dict[str, int]  # group -> training structures
    n_with: dict[str, int]  # "energy" / "forces" / "stress" -> training structures carrying it
    omitted: list[str]  # frames left out (data.on_bad: skip)

    def table(self) -> str:
        rows = [("data", ""),
                ("training structures", str(self.n_train)),
                ("test structures", f"{self.n_test} ({self.test_note})"),
                ("atoms per structure", "{} / {} / {} (min / median / max)".format(*self.atoms)),
                ("species", ", ".join(self.species)),
                ("DFT energy", f"{self.energy_per_atom[0]:.4f} to {self.energy_per_atom[1]:.4f} eV/atom"),
                ("labels", ", ".join(f"{k} {n}" for k, n in self.n_with.items())),
                ("groups", ", ".join(f"{g} {n}" for g, n in self.groups.items()))]
        if self.omitted:
            rows.append(("left out", f"{len(self.omitted)} frame(s), listed below"))
        return format_table(rows)


@dataclass
class StartResult:
    summary: DataSummary
    scores: list[tuple[str, str, Agreement | None, int]]  # (EIP id, backend, agreement, failed structures), best first
    excluded: list[tuple[str, str]]  # (EIP id, reason), among those supporting the species
    pipeline: PipelineConfig
    notes: list[str] = field(default_factory=list)

    def eip_table(self) -> str:
        rows = [("EIP", "backend", "labelled", "failed", "E MAE meV/atom", "F MAE eV/Å")]
        for eip, backend, a, failed in self.scores:
            rows.append((eip, backend, str(a.n_structures if a else 0), str(failed),
                         f"{a.energy_mae:.1f}" if a else "-", f"{a.force_mae:.3f}" if a else "-"))
        return format_table(rows)

    def yaml_text(self, command: str = "") -> str:
        head = [f"# Written by `{command or 'eip2nn init'}`; run: eip2nn pipeline run <this file>",
                f"# {self.summary.n_train} training structures, species {', '.join(self.summary.species)}; "
                f"{len(self.scores)} eligible EIP(s)",
                "# Paths are relative to the folder eip2nn runs in. For a full study add fractions and raise epochs."]
        if self.summary.n_with["stress"]:
            head.append("# Your data has stress: it is evaluated (test stress MAE, GPa). To train on it set "
                        "train.stress_weight (e.g. 100);\n# on mlearn Si that lowered the stress error but raised the "
                        "energy error (docs/own_data.md).")
        return "\n".join(head) + "\n" + yaml.safe_dump(_compact(self.pipeline), sort_keys=False)


def _compact(p: PipelineConfig) -> dict:
    """The pipeline as a dict, leaving out data fields at their defaults (short, readable YAML)."""
    d = p.as_dict()
    defaults = dataclasses.asdict(DataConfig())
    d["data"] = {k: v for k, v in d["data"].items()
                 if k in ("train", "labels") or (v != defaults[k] and k not in ("dft_fraction", "split_seed"))}
    return d


def summarise(split: Split) -> DataSummary:
    structures = split.train + split.val
    sizes = [len(a) for a in structures]
    per_atom = [a.info[REF_ENERGY] / len(a) for a in structures]
    groups = Counter(str(a.info.get(GROUP, "unknown")) for a in structures)
    n_with = {"energy": sum(REF_ENERGY in a.info for a in structures),
              "forces": sum(REF_FORCES in a.arrays for a in structures),
              "stress": sum(REF_STRESS in a.info for a in structures)}
    return DataSummary(len(structures), len(split.test), split.test_note,
                       (min(sizes), int(statistics.median(sizes)), max(sizes)), split.species,
                       (min(per_atom), max(per_atom)), dict(sorted(groups.items())), n_with,
                       [str(b) for b in split.omitted])


def score_eips(split: Split, db: PotentialsDB, labels: str | Path, workers: int | None
               ) -> tuple[list[tuple[str, str, Agreement | None, int]], list[tuple[str, str]]]:
    """Label the training structures with every eligible EIP; (scores best first, excluded)."""
    structures = split.train + split.val
    specs = eligible_eips(db, split.species, split.source_tag)
    _, excluded = db.eligible_for(set(split.species), split.source_tag)
    excluded_rows = [(s.id, why) for s, why in excluded if s.supports(set(split.species))]
    if not specs:
        return [], excluded_rows
    label(structures, specs, labels, workers=workers, progress=False)
    scores = []
    with LabelStore(labels) as store:
        for spec in specs:
            a = compare_to_reference(structures, store, spec.id)
            scores.append((spec.id, spec.backend_type, a, len(structures) - (a.n_structures if a else 0)))
    scores.sort(key=lambda r: (r[2] is None, r[3] > 0, r[2].energy_mae if r[2] else np.inf))
    return scores, excluded_rows


def default_pipeline(data: DataConfig, summary: DataSummary, n_eips: int, name: str) -> PipelineConfig:
    """A pipeline whose study and training follow the data's size; EIP arms only when EIPs exist."""
    n = summary.n_train
    fractions = [f for f in FRACTIONS if f * n * (1 - data.val_fraction) >= MIN_LABELS] or [1.0]
    # the SNAP reference and auto always; the EIP arms only when EIPs exist
    arms = ["baseline", "weak", "transfer", "both", "delta", "snap", "auto"] if n_eips else ["baseline", "snap", "auto"]
    multi = len(summary.species) > 1
    model = ({"backbone": "schnet", "cutoff": 5.0, "width": 32, "depth": 2} if multi else
             {"backbone": "symmetry_functions", "descriptor": "set30", "cutoff": 5.0, "width": 32, "depth": 2})
    epochs = 60  # as the quick Si pipeline: minutes per cell on 2 cores for a few hundred structures
    train = {"epochs": epochs, "batch_size": 8, "lr": 0.003, "patience": 20}
    config = {
        "name": name,
        # auto as the mean of the best few arms: on Mo and Ni it beat every single arm and never the baseline
        "study": {"fractions": fractions, "seeds": [0, 1, 2], "arms": arms, "auto_choice": "blend"},
        "data": {k: v for k, v in dataclasses.asdict(data).items() if k not in ("dft_fraction", "split_seed")},
        "model": model,
        "train": train,
        "pretrain": {"n_eips": min(3, n_eips) or 3, "train": {"epochs": 40, "batch_size": 8, "lr": 0.003,
                                                              "patience": 15}},
        "finetune": {"init_head": "best"},
        "weak": {"n_eips": min(4, n_eips) or 4, "threshold": 50.0, "alpha": 1.0},
        "label_all": bool(n_eips),
    }
    return pipeline_from_dict(config)


def pipeline_name(train: str) -> str:
    """A pipeline name from the training file's name: letters, digits, '-' and '_'."""
    stem = Path(train).name.split(".")[0]
    return re.sub(r"[^A-Za-z0-9_-]+", "-", stem).strip("-") or "pipeline"


def start_pipeline(data: DataConfig, name: str = "", workers: int | None = None) -> StartResult:
    """Inspect ``data`` (user files), score the eligible EIPs, and propose a pipeline."""
    if not data.is_files:
        raise ValueError("eip2nn init is for your own files: give a training file")
    split = make_split(replace(data, dft_fraction=1.0))
    summary = summarise(split)
    db = PotentialsDB()
    scores, excluded = score_eips(split, db, data.labels, workers)
    usable = [s for s in scores if s[2] is not None and s[3] == 0]
    notes = []
    if not scores:
        notes.append(f"no eligible empirical potential supports {', '.join(split.species)}: the pipeline runs the "
                     "baseline only")
    elif len(usable) < len(scores):
        notes.append(f"{len(scores) - len(usable)} EIP(s) failed on some structures (eip2nn labels failures)")
    pipeline = default_pipeline(data, summary, len(usable), name or pipeline_name(data.train))
    return StartResult(summary, scores, excluded, pipeline, notes)
