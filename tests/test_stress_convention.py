"""The mlearn stress convention, checked against an independent EIP stress.

mlearn's ``virial_stress`` is read as VASP's "in kB" line: kbar, order
(xx, yy, zz, xy, yz, zx), positive = compressive. If that is right, the
converted DFT stress and the Stillinger-Weber stress (ASE convention, from
LAMMPS) on the strained "Elastic" structures agree in sign, order and
magnitude; a wrong sign, a swapped shear order or a wrong unit fails here.
"""

import numpy as np
import pytest

from eip2nn.data import load_dataset
from eip2nn.keys import REF_STRESS
from eip2nn.potentials import make_evaluator
from eip2nn.potentials.db import PotentialsDB


@pytest.fixture(scope="module")
def stresses(data_mirror_session):
    elastic = [a for a in load_dataset("mlearn/Si/train") if a.info["group"] == "Elastic"]
    ev = make_evaluator(PotentialsDB().get("lmp_Si_sw"))
    try:
        eip = np.array([ev.evaluate(a).stress for a in elastic])
    finally:
        ev.close()
    return np.array([a.info[REF_STRESS] for a in elastic]), eip


def test_each_component_correlates_with_the_eip(stresses):
    dft, eip = stresses
    assert len(dft) >= 50
    for k in range(6):
        r = np.corrcoef(dft[:, k], eip[:, k])[0, 1]
        assert r > 0.9, f"Voigt component {k}: correlation {r:.3f}"


def test_shear_components_are_not_permuted(stresses):
    dft, eip = stresses
    for k in range(3, 6):
        for other in set(range(3, 6)) - {k}:
            assert abs(np.corrcoef(dft[:, k], eip[:, other])[0, 1]) < 0.5


def test_magnitude_is_eV_per_cubic_angstrom(stresses):
    dft, eip = stresses
    slope = np.polyfit(dft.ravel(), eip.ravel(), 1)[0]
    assert 0.8 < slope < 1.25  # SW's elastic constants are within ~20% of PBE's
