"""The ``snap`` stage: a SNAP fitted to the same DFT labels as the network arms — the reference a user
would otherwise pick (the FitSNAP approach: LAMMPS bispectrum + weighted ridge, see :mod:`eip2nn.snap`).

It sees exactly what a baseline cell sees: the labelled training structures to
fit, the labelled validation structures to choose linear/quadratic and the
ridge strength, and the test set to score.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from ase import Atoms

from eip2nn.data.protocol import Split, make_split
from eip2nn.keys import GROUP, REF_ENERGY, REF_FORCES, REF_STRESS
from eip2nn.training.metrics import Metrics, Parity, group_metrics_key, metrics_of
from eip2nn.training.samples import NO_GROUP


@dataclass
class SnapStage:
    split: Split
    fit: object  # eip2nn.snap.fit.SnapFit
    metrics: dict[str, Metrics]  # "train"/"val"/"test" and "test/<group>"
    parities: dict[str, Parity]  # "train"/"val"/"test"
    n_dft_labels: int


def parity_of(model, structures: list[Atoms]) -> Parity:
    """The SNAP model's energies (eV/atom), forces (eV/Å) and stresses (eV/Å³) against the DFT labels."""
    e_ref, e_pred, f_ref, f_pred, s_ref, s_pred = [], [], [], [], [], []
    for atoms in structures:
        if REF_ENERGY not in atoms.info:
            continue
        energy, forces, stress = model.predict(atoms)
        n = len(atoms)
        e_ref.append(float(atoms.info[REF_ENERGY]) / n)
        e_pred.append(energy / n)
        if REF_FORCES in atoms.arrays:
            f_ref.append(np.asarray(atoms.arrays[REF_FORCES]).ravel())
            f_pred.append(np.asarray(forces).ravel())
        ref_stress = atoms.info.get(REF_STRESS)
        if ref_stress is not None and stress is not None and atoms.pbc.all() and np.isfinite(ref_stress).all():
            s_ref.append(np.asarray(ref_stress, float))
            s_pred.append(np.asarray(stress, float))
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0)  # noqa: E731
    return Parity(np.array(e_ref), np.array(e_pred), cat(f_ref), cat(f_pred), cat(s_ref), cat(s_pred))


def fit_reference(cfg) -> SnapStage:
    """Fit stage ``cfg``'s SNAP and score it on train, validation, test and each test group."""
    from eip2nn.snap.fit import fit_snap  # LAMMPS only when a snap stage runs
    split = make_split(cfg.data)
    train, val = Split.labelled(split.train), Split.labelled(split.val)
    if not train:
        raise ValueError(f"no DFT-labelled training structure at dft_fraction={cfg.data.dft_fraction}")
    fit = fit_snap(train, val, split.species, cfg.snap)
    try:
        parities = {name: parity_of(fit.model, s) for name, s in (("train", train), ("val", val), ("test", split.test))}
        metrics = {name: metrics_of(p) for name, p in parities.items() if len(p.energy_ref)}
        groups = sorted({str(a.info.get(GROUP, NO_GROUP)) for a in split.test})
        if len(groups) > 1:
            for g in groups:
                mine = [a for a in split.test if str(a.info.get(GROUP, NO_GROUP)) == g]
                metrics[group_metrics_key(g)] = metrics_of(parity_of(fit.model, mine))
    finally:
        fit.model.close()  # its LAMMPS instance
    return SnapStage(split, fit, metrics, parities, len(train) + len(val))
