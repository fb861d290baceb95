"""The weak arm's data: choose EIPs, label, learn the selector, pseudo-label the unlabelled pool.

Unlabelled pool: the training part's structures whose DFT labels the DFT
fraction hid (the paper's protocol), plus any structures from
``weak.extra_structures`` (e.g. written by ``eip2nn generate``). Validation
structures never get weak labels, so early stopping sees DFT only.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

from ase import Atoms
from ase.io import read

from eip2nn.keys import CONFIG_ID
from eip2nn.labelling.hashing import structure_hash
from eip2nn.labelling.store import LabelStore
from eip2nn.potentials.db import PotentialsDB
from eip2nn.training.protocol import Split, hide_dft_labels
from eip2nn.training.transfer import choose_eips, label_with, resolve_eips
from eip2nn.weak.labeller import PseudoLabels, WeakConfig, WeakLabeller
from eip2nn.weak.report import SelectorReport


@dataclass
class WeakData:
    pseudo: PseudoLabels  # the unlabelled pool, weak labels where the selector gave one
    labeller: WeakLabeller
    report: SelectorReport  # held-out (cross-validated) selector report on the labelled training part
    eips: list[str]
    notes: list[str] = field(default_factory=list)


def read_extra_structures(paths: list[str]) -> list[Atoms]:
    """Structures from extxyz files, DFT labels removed (they join the *unlabelled* pool)."""
    out = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"weak.extra_structures: {path} does not exist")
        for k, atoms in enumerate(read(path, ":")):
            atoms = hide_dft_labels(atoms)
            atoms.info.setdefault(CONFIG_ID, f"{path}:{k}")
            out.append(atoms)
    return out


def weak_data(cfg: WeakConfig, split: Split, labels: str | Path, workers: int | None, seed: int,
              reference: str) -> WeakData:
    """Everything the weak loss needs; ``reference`` names the DFT data the EIPs are aligned to."""
    labelled = Split.labelled(split.train)
    db = PotentialsDB()
    notes = []
    if cfg.eips:
        specs = resolve_eips(db, cfg.eips, split.species, split.source_tag)
    else:
        ranked, passed_over = choose_eips(db, labelled, split.species, split.source_tag, cfg.n_eips, labels, workers)
        specs = [s for s, _ in ranked]
        notes += [f"selector candidate {s.id}: aligned energy MAE {mae:.1f} meV/atom on the labelled training set"
                  for s, mae in ranked]
        notes += [f"not a candidate: {eip} ({reason})" for eip, reason in passed_over]
    eips = [s.id for s in specs]
    pool = Split.unlabelled(split.train) + read_extra_structures(cfg.extra_structures)
    labelled_eip = label_with(labelled, specs, labels, workers)
    pool_eip = label_with(pool, specs, labels, workers)
    labeller = WeakLabeller(cfg, split.species, eips, seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        report = labeller.fit(labelled_eip)
    hashes = [structure_hash(a) for a in labelled]
    with LabelStore(labels) as store:
        for row in labeller.alignment_rows():
            store.save_alignment(row["eip"], reference, hashes, row)
    notes += [f"aligned {a.eip}: offset {', '.join(f'{s} {o:+.4f}' for s, o in zip(split.species, a.offsets))} "
              f"eV/atom; on {a.n_structures} labelled: E MAE {a.energy_mae:.1f} meV/atom, F MAE {a.force_mae:.3f} eV/Å"
              for a in labeller.alignments.values()]
    pseudo = labeller.pseudo_label(pool_eip)
    notes.append(f"weak labels for {len(pseudo.labelled)} of {len(pool)} unlabelled structures "
                 f"({', '.join(f'{k}: {v}' for k, v in sorted(pseudo.sources.items()))})")
    return WeakData(pseudo, labeller, report, eips, notes)
