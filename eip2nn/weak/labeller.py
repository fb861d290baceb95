"""Weak labelling end to end: align the EIPs, learn the selector, pseudo-label unlabelled structures.

Inputs are ``ase.Atoms`` carrying each candidate EIP's labels (see
:func:`eip2nn.labelling.export.attach_labels`); labelled ones also carry DFT.
A pseudo-labelled structure gets the chosen EIP's *aligned* energy under
``WEAK_energy`` (eV), its forces under ``WEAK_forces`` (eV/Å) and the EIP's
id under ``WEAK_source``; a structure the selector sends to "none", or one an
EIP failed on, gets no weak label and is listed with the reason.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np
from ase import Atoms
from sklearn.model_selection import KFold, StratifiedKFold

from eip2nn.keys import FORCES, REF_ENERGY, WEAK_ENERGY, WEAK_FORCES, WEAK_SOURCE, eip_key, structure_name
from eip2nn.weak.config import WeakConfig
from eip2nn.weak.features import StructureFeatures, lowest_aligned_energy
from eip2nn.weak.report import SelectorReport
from eip2nn.weak.targets import NONE, Alignment, element_counts, error_matrix, fit_alignments, missing_label, selector_targets

TUKEY_95 = 4.685  # Tukey biweight c in units of σ: 95% efficiency for Gaussian errors
SIGMA_PER_MAE = 1.2533  # σ / MAE of a Gaussian, √(π/2)


@dataclass
class PseudoLabels:
    structures: list[Atoms]  # copies of the input; those with a weak label carry WEAK_energy
    sources: dict[str, int]  # structures per chosen EIP id, and per "none"
    excluded: list[tuple[str, str]]  # (structure name, reason) of every structure left without a weak label

    @property
    def labelled(self) -> list[Atoms]:
        return [a for a in self.structures if WEAK_ENERGY in a.info]


class WeakLabeller:
    """Selector-based pseudo-labelling with EIPs ``eips`` for structures of ``species``."""

    def __init__(self, cfg: WeakConfig, species: list[str], eips: list[str], seed: int = 0):
        if not eips:
            raise ValueError("weak supervision needs at least one candidate EIP")
        self.cfg, self.species, self.eips, self.seed = cfg, list(species), list(eips), seed
        self.features = StructureFeatures(self.species, cfg.descriptor, cfg.descriptor_cutoff)

    def _features(self, structures, structure_block, alignments, reference) -> np.ndarray:
        eip_block, _ = self.features.eip_block(structures, alignments, reference)
        return np.hstack([structure_block, eip_block])

    def fit(self, labelled: list[Atoms]) -> SelectorReport:
        """Align, cross-validate the selector (the returned report), then fit it on all of ``labelled``."""
        self.alignments: dict[str, Alignment] = fit_alignments(labelled, self.eips, self.species)
        errors = error_matrix(labelled, self.alignments, self.species, self.cfg.force_weight)
        self.targets = selector_targets(errors, self.eips, self.cfg.threshold)
        block, _ = self.features.structure_block(labelled)
        self.report = self._cross_validate(labelled, block)
        self.reference_energy = lowest_aligned_energy(labelled, self.alignments, self.species)
        X = self._features(labelled, block, self.alignments, self.reference_energy)
        self.selector = self.cfg.selector(self.seed).fit(X, self.targets)
        return self.report

    def _cross_validate(self, labelled: list[Atoms], block: np.ndarray) -> SelectorReport:
        """Out-of-fold predictions; alignment, targets and selector refitted on each fold's training part."""
        n = len(labelled)
        folds = min(self.cfg.cv_folds, n)
        if folds < 2:
            raise ValueError(f"the selector report needs at least 2 DFT-labelled structures, got {n}")
        smallest = min(Counter(self.targets).values())
        splitter = (StratifiedKFold(folds, shuffle=True, random_state=self.seed) if smallest >= folds
                    else KFold(folds, shuffle=True, random_state=self.seed))
        y_true, y_pred = np.empty(n, dtype=object), np.empty(n, dtype=object)
        errors, single_best = np.zeros((n, len(self.eips))), np.zeros(n, dtype=int)
        for tr, te in splitter.split(np.zeros(n), self.targets):
            train, test = [labelled[i] for i in tr], [labelled[i] for i in te]
            al = fit_alignments(train, self.eips, self.species)
            err_tr = error_matrix(train, al, self.species, self.cfg.force_weight)
            errors[te] = error_matrix(test, al, self.species, self.cfg.force_weight)
            y_true[te] = selector_targets(errors[te], self.eips, self.cfg.threshold)
            ref = lowest_aligned_energy(train, al, self.species)
            selector = self.cfg.selector(self.seed).fit(self._features(train, block[tr], al, ref),
                                                        selector_targets(err_tr, self.eips, self.cfg.threshold))
            y_pred[te] = selector.predict(self._features(test, block[te], al, ref))
            single_best[te] = err_tr.mean(axis=0).argmin()
        return SelectorReport.from_predictions(y_true, y_pred, errors, self.eips, single_best)

    def tukey_scales(self) -> tuple[float, float]:
        """(energy c in eV/atom, force c in eV/Å): configured, or 4.685 σ estimated from held-out MAEs."""
        c_e = self.cfg.tukey_c / 1000.0
        if c_e <= 0:
            mae = self.report.mae_selector if np.isfinite(self.report.mae_selector) else self.cfg.threshold
            c_e = TUKEY_95 * SIGMA_PER_MAE * mae / 1000.0
        c_f = self.cfg.tukey_c_forces
        if c_f <= 0:
            used = [t for t in self.targets if t != NONE] or self.eips
            c_f = TUKEY_95 * SIGMA_PER_MAE * float(np.mean([self.alignments[t].force_mae for t in used]))
        return c_e, c_f

    def pseudo_label(self, structures: list[Atoms]) -> PseudoLabels:
        """Copies of ``structures`` (all without DFT labels) with weak labels where the selector gives one."""
        out = [a.copy() for a in structures]
        excluded: list[tuple[str, str]] = []
        sources: Counter = Counter()
        usable = []
        for k, atoms in enumerate(out):
            if REF_ENERGY in atoms.info:
                raise ValueError(f"{structure_name(atoms, k)} carries a DFT label; weak labels are for unlabelled structures")
            missing = missing_label(atoms, self.eips)
            if missing is None:
                usable.append(k)
            else:
                excluded.append((structure_name(atoms, k), f"no label from candidate EIP {missing}"))
                sources["EIP failed"] += 1
        if usable:
            chosen = [out[k] for k in usable]
            block, _ = self.features.structure_block(chosen)
            predicted = self.selector.predict(self._features(chosen, block, self.alignments, self.reference_energy))
            counts = element_counts(chosen, self.species)
            for k, atoms, eip, c in zip(usable, chosen, predicted, counts):
                atoms.info[WEAK_SOURCE] = str(eip)
                sources[str(eip)] += 1
                if eip == NONE:
                    excluded.append((structure_name(atoms, k), "selector: no EIP within the threshold of DFT"))
                    continue
                atoms.info[WEAK_ENERGY] = self.alignments[eip].aligned_energy(atoms, c)
                atoms.arrays[WEAK_FORCES] = atoms.arrays[eip_key(eip, FORCES)].copy()
        return PseudoLabels(out, dict(sources), excluded)

    def alignment_rows(self) -> list[dict]:
        """One JSON-ready row per EIP: offsets (eV/atom per element) and aligned errors on the labelled set."""
        return [{"eip": a.eip, "species": self.species, "offsets_eV_per_atom": a.offsets.tolist(),
                 "energy_mae_meV_per_atom": a.energy_mae, "force_mae_eV_per_A": a.force_mae,
                 "n_structures": a.n_structures} for a in self.alignments.values()]
