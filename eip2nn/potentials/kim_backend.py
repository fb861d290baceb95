"""Evaluate an OpenKIM portable model through the KIM-API (kimpy, via ASE).

The model is loaded once per evaluator; each structure re-uses it and only
rebuilds the neighbour list (kimpy's C++ neighlist). Where the model supports
the KIM-API argument ``partialParticleEnergy``, each atom's energy comes back
too: ASE's calculator does not ask for it, so the evaluator registers the array
itself whenever ASE (re)registers its energy and force arrays.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.calculators.calculator import all_changes

from eip2nn.potentials.evaluator import BACKEND_ERROR, Backend, EIPResult, EvaluationError, check_result, check_species
from eip2nn.potentials.overlap import check_min_distance
from eip2nn.potentials.spec import PotentialSpec


def import_kim():
    """ASE's KIM calculator class (imports kimpy), with an actionable ImportError otherwise."""
    try:
        from ase.calculators.kim import KIM
    except ImportError as e:
        raise ImportError("the KIM backend needs kimpy and the KIM-API: run scripts/install.sh "
                          f"({e})") from e
    return KIM


def load_kim_calculator(model: str):
    """An ASE calculator for an installed KIM portable model, with a clear error otherwise."""
    KIM = import_kim()
    if "__SM_" in model:
        raise ValueError(f"{model} is a KIM simulator model; only portable models (__MO_) are "
                         "supported (this LAMMPS build has no KIM package)")
    try:
        return KIM(model, options={"neigh_skin_ratio": 0.0})
    except Exception as e:  # kimpy raises RuntimeError with little text; name the model
        raise RuntimeError(f"could not load KIM model {model!r}: {e}. Is it installed? "
                           "List installed models with `eip2nn potentials discover`.") from e


class KIMEvaluator:
    """A long-lived KIM portable model."""

    def __init__(self, spec: PotentialSpec):
        self.spec = spec
        self._calc = load_kim_calculator(spec.backend.model)
        self._particle_energy = None  # (particles incl. padding,) eV, registered with the KIM-API
        self._ask_particle_energy()

    def _ask_particle_energy(self) -> None:
        """Register a per-particle energy array with the model, if it supports one, each time ASE
        registers its own arrays (after a new neighbour list changes the particle count)."""
        import kimpy
        name = kimpy.compute_argument_name.partialParticleEnergy
        data = self._calc.kimmodeldata
        if data.compute_args.get_argument_support_status(name) == kimpy.support_status.notSupported:
            return
        register = data.update_compute_args_pointers

        def register_with_particle_energy(energy, forces):
            register(energy, forces)
            self._particle_energy = np.zeros(len(forces))
            data.compute_args.set_argument_pointer(name, self._particle_energy)

        data.update_compute_args_pointers = register_with_particle_energy  # shadows the method

    def evaluate(self, atoms: Atoms) -> EIPResult:
        check_species(self.spec, atoms.numbers)
        check_min_distance(atoms)
        periodic = bool(atoms.pbc.all())
        props = ["energy", "forces", "stress"] if periodic else ["energy", "forces"]
        try:
            self._calc.calculate(atoms, props, all_changes)
            res = self._calc.results
            energy = float(res["energy"])
            forces = np.array(res["forces"], dtype=float)
            stress = np.array(res["stress"], dtype=float) if periodic and res.get("stress") is not None else None
        except Exception as e:  # kimpy/KIM errors: recorded for this structure
            raise EvaluationError(BACKEND_ERROR, f"KIM {self.spec.backend.model}: {e}") from e
        local = None if self._particle_energy is None else self._particle_energy[:len(atoms)].copy()
        return check_result(EIPResult(energy, forces, stress, local), len(atoms))

    def close(self) -> None:
        self._calc = None


def provenance(spec: PotentialSpec) -> dict:
    """What a label records of a KIM EIP: its model id."""
    return {"model": spec.backend.model}


BACKEND = Backend(evaluator=KIMEvaluator, provenance=provenance, preload=import_kim, package="kimpy")
