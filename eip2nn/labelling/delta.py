"""Δ-learning targets: DFT minus one EIP, per structure (FitSNAP's reference-potential idea).

A model trained on these residuals predicts DFT as EIP + model. The residual
of an energy keeps the EIP's own zero; the model's per-element offsets absorb
it, so no alignment is needed here.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms

from eip2nn.keys import ENERGY, FORCES, REF_ENERGY, REF_FORCES, REF_STRESS, STRESS, eip_failure_key, eip_key, structure_name


class MissingEIPLabel(ValueError):
    """A structure the reference EIP has no label for (it failed there, or was never asked)."""


def subtract_eip(structures: list[Atoms], eip: str, where: str = "") -> list[Atoms]:
    """Copies of DFT-labelled ``structures`` (carrying ``eip``'s labels, see
    :func:`eip2nn.labelling.export.attach_labels`) whose REF energy (eV), forces (eV/Å) and stress
    (eV/Å³) are DFT − EIP. Structures without DFT labels are copied as they are. A DFT-labelled
    structure without the EIP's label raises :class:`MissingEIPLabel` naming every such structure.
    """
    out, missing = [], []
    for k, atoms in enumerate(structures):
        a = atoms.copy()
        out.append(a)
        if REF_ENERGY not in a.info:
            continue
        if eip_key(eip, ENERGY) not in a.info:
            missing.append(f"{structure_name(a, k)} ({a.info.get(eip_failure_key(eip), 'not labelled')})")
            continue
        a.info[REF_ENERGY] = float(a.info[REF_ENERGY]) - float(a.info[eip_key(eip, ENERGY)])
        if REF_FORCES in a.arrays:
            a.arrays[REF_FORCES] = a.arrays[REF_FORCES] - a.arrays[eip_key(eip, FORCES)]
        if REF_STRESS in a.info:
            eip_stress = a.info.get(eip_key(eip, STRESS))
            if eip_stress is None:
                del a.info[REF_STRESS]  # no EIP stress: the residual's stress is unknown
            else:
                a.info[REF_STRESS] = np.asarray(a.info[REF_STRESS], float) - np.asarray(eip_stress, float)
    if missing:
        raise MissingEIPLabel(f"{where or 'structures'}: the Δ-learning EIP {eip} has no label for "
                              f"{len(missing)} DFT-labelled structure(s), so EIP + model cannot be scored there: "
                              + "; ".join(missing[:10]) + (" ..." if len(missing) > 10 else "")
                              + "; choose another EIP (delta.eip) or leave these structures out")
    return out
