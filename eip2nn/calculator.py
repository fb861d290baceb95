"""A trained eip2nn model as an ASE calculator (energy eV, forces eV/Å, stress eV/Å³)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from ase.calculators.calculator import Calculator, PropertyNotImplementedError, all_changes

from eip2nn.nn.checkpoint import load_model
from eip2nn.nn.committee import Committee
from eip2nn.nn.graph import collate
from eip2nn.nn.model import DFT_HEAD, EnergyModel


class EIP2NNCalculator(Calculator):
    """ASE calculator over one head of an :class:`EnergyModel` (default: the DFT head).

    Stress is given for fully periodic cells only (Voigt xx yy zz yz xz xy,
    ASE sign: positive = tensile). A Δ-learning model (``model.reference_eip``)
    predicts EIP + network: the EIP is evaluated here (KIM-API or LAMMPS) and added.
    A committee (:class:`~eip2nn.nn.committee.Committee`) predicts its members' mean
    and also gives ``results["energy_std"]``: the sample std of its members' energies, eV.
    """

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, model: EnergyModel | Committee, head: str = DFT_HEAD, **kwargs):
        super().__init__(**kwargs)
        model.head(head)  # raises with the list of heads if absent
        self.model, self.head = model.eval(), head
        self._reference = None  # the Δ-learning EIP's evaluator, made on first use

    @classmethod
    def from_checkpoint(cls, path: str | Path, head: str = DFT_HEAD) -> "EIP2NNCalculator":
        return cls(load_model(path), head)

    @classmethod
    def from_mlflow(cls, run_id: str, head: str = DFT_HEAD, tracking_uri: str | None = None) -> "EIP2NNCalculator":
        from eip2nn.tracking import download_checkpoint

        return cls(load_model(download_checkpoint(run_id, uri=tracking_uri)), head)

    @classmethod
    def load(cls, ref: str, head: str = DFT_HEAD) -> "EIP2NNCalculator":
        """From a checkpoint path or ``runs:/<run id>``."""
        return cls.from_mlflow(ref[len("runs:/"):], head) if ref.startswith("runs:/") else cls.from_checkpoint(ref, head)

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        periodic = bool(self.atoms.pbc.all())
        batch = collate([self.model.graph(self.atoms)])
        pred = self.model(batch, heads=[self.head], forces=True, stress=periodic and "stress" in properties,
                          create_graph=False)[self.head]
        energy = float(pred.energy.detach()[0])
        self.results = {"energy": energy, "free_energy": energy,
                        "forces": pred.forces.detach().double().numpy().copy()}
        if isinstance(self.model, Committee):
            self.results["energy_std"] = float(self.model.member_energies(batch, self.head)[:, 0].std())
        if pred.stress is not None:
            self.results["stress"] = pred.stress.detach().double().numpy()[0].copy()
        elif "stress" in properties:
            raise PropertyNotImplementedError("stress needs a fully periodic cell")
        if self.model.reference_eip:
            self._add_reference()
        if "energies" in properties:
            if self.model.reference_eip:
                raise PropertyNotImplementedError(f"per-atom energies: the Δ-learning EIP {self.model.reference_eip} "
                                                  "gives totals only")
            import torch

            from eip2nn.nn.derivatives import edge_vectors

            b = batch.to(next(self.model.parameters()).dtype)
            with torch.no_grad():
                v = edge_vectors(b, b.positions)
                self.results["energies"] = self.model.atomic_energies(b, v, [self.head])[self.head].double().numpy()

    def _add_reference(self) -> None:
        """Add the Δ-learning EIP's energy, forces and stress to the network's."""
        if self._reference is None:
            from eip2nn.potentials.backends import make_evaluator
            from eip2nn.potentials.db import PotentialsDB

            self._reference = make_evaluator(PotentialsDB().get(self.model.reference_eip))
        eip = self._reference.evaluate(self.atoms)
        self.results["energy"] += eip.energy
        self.results["free_energy"] = self.results["energy"]
        self.results["forces"] = self.results["forces"] + eip.forces
        if "stress" in self.results:
            if eip.stress is None:
                raise PropertyNotImplementedError(f"stress: the Δ-learning EIP {self.model.reference_eip} gives none")
            self.results["stress"] = self.results["stress"] + eip.stress


class BlendCalculator(Calculator):
    """ASE calculator over a blend file (:mod:`eip2nn.nn.blend`): the weighted mean of its members' energies,
    forces, stress and (when every member gives them) per-atom energies. Each member is an
    :class:`EIP2NNCalculator` (its own graph, cut-off and Δ-learning EIP). ``results["energy_std"]`` is the
    sample std of the members' energies, eV: how much the blended models disagree."""

    implemented_properties = ["energy", "free_energy", "energies", "forces", "stress"]

    def __init__(self, path: str | Path, head: str = DFT_HEAD, **kwargs):
        from eip2nn.nn.blend import read_blend

        super().__init__(**kwargs)
        self.path, self.blend = Path(path), read_blend(path)
        self.members = [EIP2NNCalculator.from_checkpoint(m.model, head) for m in self.blend]

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        results = []
        for member in self.members:
            member.calculate(self.atoms.copy(), properties, all_changes)
            results.append(member.results)
        weights = [m.weight for m in self.blend]
        self.results = {key: sum(w * np.asarray(r[key]) for w, r in zip(weights, results))
                        for key in ("energy", "forces", "stress", "energies") if all(key in r for r in results)}
        self.results["energy"] = float(self.results["energy"])
        self.results["free_energy"] = self.results["energy"]
        self.results["energy_std"] = float(np.std([r["energy"] for r in results], ddof=1))


def load_calculator(ref: str | Path, head: str = DFT_HEAD) -> EIP2NNCalculator | BlendCalculator:
    """The calculator of a checkpoint, ``runs:/<run id>`` or blend file (``*.blend.json``)."""
    from eip2nn.nn.blend import is_blend

    return BlendCalculator(ref, head) if is_blend(ref) else EIP2NNCalculator.load(str(ref), head)
