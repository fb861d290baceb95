"""Score a trained model or an EIP on DFT-labelled structures (registered datasets or the user's files).

``sources`` maps a name (dataset or file) to (structures, source tag); the
tag names the data's origin, so an EIP fitted to it is refused (leakage).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ase import Atoms

from eip2nn.nn.committee import Committee
from eip2nn.nn.model import DFT_HEAD
from eip2nn.training.metrics import Metrics, metrics_table


@dataclass
class Evaluation:
    subject: str  # model reference or EIP id
    per_dataset: dict[str, Metrics]
    note: str = ""

    def table(self) -> str:
        return f"{self.subject}\n" + metrics_table("dataset", self.per_dataset) + (f"\n{self.note}" if self.note else "")


Sources = dict[str, tuple[list[Atoms], str]]


def as_sources(sources: Sources | list[str]) -> Sources:
    """``sources`` as they are, or registered dataset names loaded with their source tags."""
    if isinstance(sources, dict):
        return sources
    from eip2nn.data import get_dataset, load_dataset
    return {name: (load_dataset(name), get_dataset(name).source_tag) for name in sources}


def evaluate_model(ref: str, sources: Sources | list[str], head: str = DFT_HEAD,
                   labels: str | Path = "outputs/labels.sqlite", workers: int | None = None) -> Evaluation:
    """Metrics of model ``ref`` (checkpoint path, ``runs:/<id>``, a blend file ``*.blend.json``, or a snap
    stage's ``snap_model.json``), head ``head``, per source.

    A Δ-learning model is scored as EIP + network: its EIP labels the structures (into ``labels``) first.
    """
    from eip2nn.calculator import EIP2NNCalculator
    from eip2nn.nn.blend import is_blend
    from eip2nn.training.metrics import evaluate
    from eip2nn.training.samples import make_samples
    if is_blend(ref):
        return _evaluate_blend(ref, sources, head, labels, workers)
    if ref.endswith(".json"):
        return _evaluate_snap(ref, sources)
    model = EIP2NNCalculator.load(ref, head).model
    out = {}
    for name, (structures, _) in as_sources(sources).items():
        if model.reference_eip:
            structures = _minus_reference(structures, model.reference_eip, labels, workers, name)
        # the structures' DFT labels are the reference for whichever head is scored
        samples = make_samples(model, structures, [DFT_HEAD])
        for s in samples:
            if DFT_HEAD in s.targets:
                s.targets[head] = s.targets[DFT_HEAD]
        out[name] = evaluate(model, samples, head)
    subject = (f"model {ref} (head {head}"
               + (f", a committee of {len(model.members)}" if isinstance(model, Committee) else "")
               + (f", on top of EIP {model.reference_eip})" if model.reference_eip else ")"))
    return Evaluation(subject, out)


def evaluate_eip(eip_id: str, sources: Sources | list[str], labels: str | Path, workers: int | None = None) -> Evaluation:
    """Metrics of EIP ``eip_id``, energies aligned per element on each evaluated set itself.

    Refuses an EIP fitted to the dataset's own DFT data (leakage).
    """
    from eip2nn.labelling.compare import compare_to_reference
    from eip2nn.labelling.engine import label
    from eip2nn.labelling.store import LabelStore
    from eip2nn.potentials.db import PotentialsDB

    spec = PotentialsDB().get(eip_id)
    out = {}
    for name, (structures, tag) in as_sources(sources).items():
        if tag and tag in spec.fitted_to:
            raise ValueError(f"EIP {spec.id} was fitted to {tag!r} data; scoring it on {name} would be leakage")
        label(structures, [spec], labels, workers=workers, progress=False)
        with LabelStore(labels) as store:
            a = compare_to_reference(structures, store, spec.id)
        if a is None:
            raise ValueError(f"EIP {spec.id} labelled no structure of {name}; see `eip2nn labels failures`")
        out[name] = Metrics(a.n_structures, a.energy_mae, a.energy_rmse, a.force_mae, a.force_rmse)
    return Evaluation(f"EIP {spec.id}", out,
                      "energies aligned by per-element offsets fitted on each evaluated set")


def _minus_reference(structures: list[Atoms], eip: str, labels, workers, name: str) -> list[Atoms]:
    """The structures with DFT − EIP as their reference labels (what a Δ-learning model's network predicts)."""
    from eip2nn.labelling.choice import minus_eip
    from eip2nn.potentials.db import PotentialsDB

    return minus_eip(structures, PotentialsDB().get(eip), labels, workers, where=name)


def _evaluate_blend(path: str, sources: Sources | list[str], head: str, labels, workers) -> Evaluation:
    """Metrics of blend file ``path`` per source: the weighted mean of its members' errors, structure by structure
    (each member's Δ-learning EIP labels the structures first)."""
    from eip2nn.nn.blend import read_blend
    from eip2nn.nn.checkpoint import load_model
    from eip2nn.training.errors import model_errors, weighted_mean

    if head != DFT_HEAD:
        raise ValueError(f"{path}: a blend predicts DFT; head {head!r} is not scored")
    members = read_blend(path)
    models = [load_model(m.model) for m in members]
    out = {}
    for name, (structures, _) in as_sources(sources).items():
        errors = [model_errors(model, structures, str(labels), workers, where=f"{name} ({m.name})")
                  for m, model in zip(members, models)]
        out[name] = weighted_mean(errors, [m.weight for m in members]).metrics()
    return Evaluation(f"blend {path}: " + ", ".join(f"{m.weight:.3g} × {m.name} ({m.model})" for m in members), out)


def _evaluate_snap(path: str, sources: Sources | list[str]) -> Evaluation:
    """Metrics of a SNAP model (``snap_model.json`` of a snap stage) per source."""
    from eip2nn.snap.model import SnapModel
    from eip2nn.training.metrics import metrics_of
    from eip2nn.training.snap_stage import parity_of

    model = SnapModel.load(path)
    try:
        out = {name: metrics_of(parity_of(model, structures)) for name, (structures, _) in as_sources(sources).items()}
    finally:
        model.close()
    kind = "quadratic" if model.quadratic else "linear"
    return Evaluation(f"SNAP {path} ({kind}, 2J={model.twojmax}, {model.n_coefficients} coefficients)", out)
