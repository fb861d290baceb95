"""Quick sanity check of one EIP on its elements' ground-state crystals."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
from ase.build import bulk

from eip2nn.potentials.backends import make_evaluator
from eip2nn.potentials.evaluator import EvaluationError, Evaluator
from eip2nn.potentials.spec import PotentialSpec

# element -> (crystal structure, experimental lattice constant in Å)
REFERENCE_CRYSTALS = {
    "Si": ("diamond", 5.431), "Ge": ("diamond", 5.658), "C": ("diamond", 3.567),
    "Mo": ("bcc", 3.147), "W": ("bcc", 3.165), "Ta": ("bcc", 3.303), "Li": ("bcc", 3.51),
    "Cu": ("fcc", 3.615), "Ni": ("fcc", 3.524), "Al": ("fcc", 4.05),
}
LATTICE_TOLERANCE = 0.05  # |a0 / a_exp - 1| above this is flagged


@dataclass(frozen=True)
class ElementCheck:
    element: str
    crystal: str
    a_exp: float  # Å
    a0: float  # Å, minimum of a parabola fitted to E(a)
    energy_per_atom: float  # eV/atom at a0
    max_force: float  # eV/Å on the perfect crystal (should be ~0)
    atoms_per_second: float  # on a rattled supercell, one core
    ok: bool
    problem: str = ""


def check_potential(spec: PotentialSpec, evaluator: Evaluator | None = None,
                    seconds: float = 0.5) -> list[ElementCheck]:
    """One :class:`ElementCheck` per species with a known reference crystal."""
    ev = evaluator or make_evaluator(spec)
    try:
        return [_check_or_report(ev, el, seconds) for el in spec.species if el in REFERENCE_CRYSTALS]
    finally:
        if evaluator is None:
            ev.close()


def _check_or_report(ev: Evaluator, element: str, seconds: float) -> ElementCheck:
    """The check, or a failed row carrying the evaluation error's reason."""
    try:
        return _check_element(ev, element, seconds)
    except EvaluationError as e:
        crystal, a_exp = REFERENCE_CRYSTALS[element]
        nan = float("nan")
        return ElementCheck(element, crystal, a_exp, nan, nan, nan, nan, False, str(e))


def _check_element(ev: Evaluator, element: str, seconds: float) -> ElementCheck:
    crystal, a_exp = REFERENCE_CRYSTALS[element]
    scales = np.linspace(0.94, 1.06, 13)
    energies = []
    for s in scales:
        atoms = bulk(element, crystal, a=a_exp * s, cubic=True)
        energies.append(ev.evaluate(atoms).energy / len(atoms))
    energies = np.array(energies)
    k = int(np.argmin(energies))
    lo, hi = max(k - 2, 0), min(k + 3, len(scales))
    c2, c1, c0 = np.polyfit(scales[lo:hi] * a_exp, energies[lo:hi], 2)
    a0 = -c1 / (2 * c2) if c2 > 0 else float("nan")
    perfect = bulk(element, crystal, a=a0 if np.isfinite(a0) else a_exp, cubic=True)
    r = ev.evaluate(perfect)
    problem = ""
    if not np.isfinite(a0) or k in (0, len(scales) - 1):
        problem = f"no energy minimum within ±6% of a_exp = {a_exp} Å"
    elif abs(a0 / a_exp - 1) > LATTICE_TOLERANCE:
        problem = f"a0 = {a0:.3f} Å is {100 * (a0 / a_exp - 1):+.1f}% from experiment"
    sc = perfect.repeat(2)
    sc.rattle(0.02, seed=0)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or n == 0:
        ev.evaluate(sc)
        n += len(sc)
    rate = n / (time.perf_counter() - t0)
    return ElementCheck(element, crystal, a_exp, float(a0), r.energy / len(perfect),
                        float(np.abs(r.forces).max()), rate, not problem, problem)
