"""EIP choice for training: which EIPs an arm may use, which it picks, and their labels.

An arm pretrains on (or offers its weak selector) the EIPs it names, checked
for leakage, or else the eligible empirical EIPs closest to the DFT labels it
may see, a twin of one already chosen counted once (:func:`choose_eips`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase import Atoms

from eip2nn.labelling.compare import compare_to_reference
from eip2nn.labelling.delta import subtract_eip
from eip2nn.labelling.engine import label
from eip2nn.labelling.export import attach_labels
from eip2nn.labelling.hashing import structure_hashes
from eip2nn.labelling.store import LabelStore
from eip2nn.potentials.db import ML_KIND, PotentialsDB, ml_warning, warn_machine_learned
from eip2nn.potentials.spec import PotentialSpec


def eligible_eips(db: PotentialsDB, species: list[str], source_tag: str) -> list[PotentialSpec]:
    """Potentials that may label this data unasked: leakage-tagged and machine-learned ones excluded."""
    eligible, _ = db.eligible_for(set(species), source_tag)
    return [s for s in eligible if s.kind == "empirical"]


def resolve_eips(db: PotentialsDB, requested: list[str], species: list[str], source_tag: str) -> list[PotentialSpec]:
    """The requested EIP specs; refuses any that may not label this data, saying why.

    A machine-learned one is used because it was named, with a
    :class:`~eip2nn.potentials.db.MachineLearnedEIPWarning` (:func:`~eip2nn.potentials.db.ml_warning`).
    """
    specs = [db.get(eip) for eip in requested]
    _, excluded = db.eligible_for(set(species), source_tag, named=[s.id for s in specs])
    why = {s.id: reason for s, reason in excluded}
    for spec in specs:
        if spec.id in why:
            raise ValueError(f"EIP {spec.id} may not label {source_tag!r} data: {why[spec.id]}")
    warn_machine_learned(specs)
    return specs


TWIN_TOLERANCE = 5e-3  # eV/atom; see choose_eips
# what choose_eips does, in words; part of the hash of every stage that chooses its EIPs
EIP_CHOICE_RULE = (f"smallest aligned energy MAE on the labelled structures; twins (per-atom energies within "
                   f"{TWIN_TOLERANCE} eV/atom peak to peak after a constant, on the training split) count once")


def choose_eips(db: PotentialsDB, labelled: list[Atoms], species: list[str], source_tag: str, n: int,
                labels: str | Path, workers: int | None, compare_on: list[Atoms] | None = None,
                scheduler: str = "") -> tuple[list[tuple[PotentialSpec, float]], list[tuple[str, str]]]:
    """The ``n`` eligible EIPs with the smallest aligned energy MAE (meV/atom) on ``labelled``.

    Uses only the DFT labels the arm may see. Returns (chosen (spec, MAE),
    passed over (id, reason)). Passed over: an EIP that failed on some of the
    labelled structures, and a *twin* of an EIP already chosen: their per-atom
    energies on ``compare_on`` (default ``labelled``; the whole training split
    is better, as no DFT label is needed) differ by less than
    ``TWIN_TOLERANCE`` peak to peak after a constant. Twins are the same
    potential through two backends or in two tabulations: on the mlearn
    Cu/Ni/Mo/Si training sets such pairs differ by up to 4.6 meV/atom (the KIM
    and LAMMPS files of Onat-Durukanoglu Ni), and distinct potentials by at least
    11.7 meV/atom (Cai-Ye vs Foiles Cu).
    """
    candidates = eligible_eips(db, species, source_tag)
    if not candidates:
        raise ValueError(f"no eligible empirical potential for {species}")
    compare_on = labelled if compare_on is None else compare_on
    label(labelled + compare_on, candidates, labels, workers=workers, progress=False, scheduler=scheduler or None)
    compare_hashes = structure_hashes(compare_on)
    n_atoms = np.array([len(a) for a in compare_on])
    scored, passed_over = [], []
    with LabelStore(labels) as store:
        for spec in candidates:
            a = compare_to_reference(labelled, store, spec.id)
            done = 0 if a is None else a.n_structures
            if done < len(labelled):
                passed_over.append((spec.id, f"failed on {len(labelled) - done} of {len(labelled)} labelled structures"))
                continue
            by_hash = {lab.structure_hash: lab.energy for lab in store.labels(spec.id, hashes=compare_hashes)}
            per_atom = np.array([by_hash.get(h, np.nan) for h in compare_hashes]) / n_atoms  # NaN: failed there
            scored.append((spec, a.energy_mae, per_atom))
    scored.sort(key=lambda t: t[1])
    chosen: list[tuple[PotentialSpec, float, np.ndarray]] = []
    for spec, mae, per_atom in scored:
        twin = None
        for other_spec, _, other in chosen:
            gap = _peak_to_peak_gap(per_atom, other)
            if gap < TWIN_TOLERANCE:
                twin = other_spec
                break
        if twin is not None:
            passed_over.append((spec.id, f"a twin of {twin.id}: energies within {1e3 * gap:.2g} meV/atom "
                                         f"(peak to peak after a constant, on {len(compare_on)} structures; "
                                         f"twins are below {1e3 * TWIN_TOLERANCE:g})"))
        elif len(chosen) < n:
            chosen.append((spec, mae, per_atom))
    return [(spec, mae) for spec, mae, _ in chosen], passed_over


def _peak_to_peak_gap(a: np.ndarray, b: np.ndarray) -> float:
    """max - min of ``a - b`` over the structures both labelled (eV/atom); inf if fewer than 2."""
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    return float(np.ptp(d)) if len(d) >= 2 else np.inf


def select_eips(db: PotentialsDB, requested: list[str], n: int, labelled: list[Atoms], species: list[str],
                source_tag: str, labels: str | Path, workers: int | None,
                chosen_as: str = "chosen EIP", passed_as: str = "not chosen",
                compare_on: list[Atoms] | None = None, scheduler: str = "") -> tuple[list[PotentialSpec], list[str]]:
    """The ``requested`` EIPs (checked by :func:`resolve_eips`), or else the ``n`` chosen by
    :func:`choose_eips`; returns (specs, log lines saying what was chosen and what passed over, and why)."""
    if requested:
        specs = resolve_eips(db, requested, species, source_tag)
        return specs, [ml_warning(s) for s in specs if s.kind == ML_KIND]
    ranked, passed_over = choose_eips(db, labelled, species, source_tag, n, labels, workers, compare_on, scheduler)
    notes = [f"{chosen_as} {s.id}: aligned energy MAE {mae:.1f} meV/atom on the labelled training set"
             for s, mae in ranked]
    notes += [f"{passed_as}: {eip} ({reason})" for eip, reason in passed_over]
    return [s for s, _ in ranked], notes


def label_with(structures: list[Atoms], specs: list[PotentialSpec], labels: str | Path,
               workers: int | None, scheduler: str = "", local_energies: bool = False) -> list[Atoms]:
    """Copies of ``structures`` carrying each EIP's labels (labelling what is missing; on the Dask
    cluster at ``scheduler`` if one is given), with local energies where the EIP gives them; with
    ``local_energies``, structures labelled before the store kept them are evaluated again for them."""
    label(structures, specs, labels, workers=workers, progress=False, scheduler=scheduler or None,
          local_energies=local_energies)
    with LabelStore(labels) as store:
        return attach_labels(structures, store, [s.id for s in specs])


def minus_eip(structures: list[Atoms], spec: PotentialSpec, labels: str | Path, workers: int | None,
              scheduler: str = "", where: str = "") -> list[Atoms]:
    """Copies of DFT-labelled ``structures`` whose labels are DFT − ``spec``'s (labelled first, as
    :func:`label_with`): a Δ-learning model's targets (:func:`eip2nn.labelling.delta.subtract_eip`)."""
    return subtract_eip(label_with(structures, [spec], labels, workers, scheduler), spec.id, where)
