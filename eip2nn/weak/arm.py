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

from eip2nn.data import hide_dft_labels, read_structures
from eip2nn.data.protocol import Split
from eip2nn.labelling.choice import label_with, select_eips
from eip2nn.labelling.hashing import structure_hashes
from eip2nn.labelling.store import LabelStore
from eip2nn.potentials.db import PotentialsDB
from eip2nn.weak.config import WeakConfig
from eip2nn.weak.labeller import PseudoLabels, WeakLabeller
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
        out += [hide_dft_labels(atoms) for atoms in read_structures(path)]
    return out


def weak_data(cfg: WeakConfig, split: Split, labels: str | Path, workers: int | None, seed: int,
              reference: str, scheduler: str = "") -> WeakData:
    """Everything the weak loss needs; ``reference`` names the DFT data the EIPs are aligned to."""
    labelled = Split.labelled(split.train)
    specs, notes = select_eips(PotentialsDB(), cfg.eips, cfg.n_eips, labelled, split.species, split.source_tag,
                               labels, workers, "selector candidate", "not a candidate", compare_on=split.train,
                               scheduler=scheduler)
    eips = [s.id for s in specs]
    pool = Split.unlabelled(split.train) + read_extra_structures(cfg.extra_structures)
    with_labels = label_with(labelled + pool, specs, labels, workers, scheduler)  # one labelling call, one worker start-up
    labelled_eip, pool_eip = with_labels[:len(labelled)], with_labels[len(labelled):]
    labeller = WeakLabeller(cfg, split.species, eips, seed)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        report = labeller.fit(labelled_eip)
    hashes = structure_hashes(labelled)
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
