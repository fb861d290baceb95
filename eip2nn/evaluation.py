"""Score a trained model or an EIP on dataset splits against their DFT labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eip2nn.data import get_dataset, load_dataset
from eip2nn.nn.model import DFT_HEAD
from eip2nn.training.metrics import Metrics, metrics_table


@dataclass
class Evaluation:
    subject: str  # model reference or EIP id
    per_dataset: dict[str, Metrics]
    note: str = ""

    def table(self) -> str:
        return f"{self.subject}\n" + metrics_table("dataset", self.per_dataset) + (f"\n{self.note}" if self.note else "")


def evaluate_model(ref: str, datasets: list[str], head: str = DFT_HEAD) -> Evaluation:
    """Metrics of model ``ref`` (checkpoint path or ``runs:/<id>``), head ``head``, per dataset."""
    from eip2nn.calculator import EIP2NNCalculator
    from eip2nn.training.metrics import evaluate
    from eip2nn.training.samples import make_samples

    model = EIP2NNCalculator.load(ref, head).model
    out = {}
    for name in datasets:
        # the structures' DFT labels are the reference for whichever head is scored
        samples = make_samples(model, load_dataset(name), [DFT_HEAD])
        for s in samples:
            if DFT_HEAD in s.targets:
                s.targets[head] = s.targets[DFT_HEAD]
        out[name] = evaluate(model, samples, head)
    return Evaluation(f"model {ref} (head {head})", out)


def evaluate_eip(eip_id: str, datasets: list[str], store_path: str | Path, workers: int | None = None) -> Evaluation:
    """Metrics of EIP ``eip_id``, energies aligned per element on each evaluated set itself.

    Refuses an EIP fitted to the dataset's own DFT data (leakage).
    """
    from eip2nn.labelling.compare import compare_to_reference
    from eip2nn.labelling.engine import label
    from eip2nn.labelling.store import LabelStore
    from eip2nn.potentials.db import PotentialsDB

    spec = PotentialsDB().get(eip_id)
    out = {}
    for name in datasets:
        tag = get_dataset(name).source_tag
        if tag in spec.fitted_to:
            raise ValueError(f"EIP {spec.id} was fitted to {tag!r} data; scoring it on {name} would be leakage")
        structures = load_dataset(name)
        label(structures, [spec], store_path, workers=workers, progress=False)
        with LabelStore(store_path) as store:
            a = compare_to_reference(structures, store, spec.id)
        if a is None:
            raise ValueError(f"EIP {spec.id} labelled no structure of {name}; see `eip2nn labels failures`")
        out[name] = Metrics(a.n_structures, a.energy_mae, a.energy_rmse, a.force_mae, a.force_rmse)
    return Evaluation(f"EIP {spec.id}", out,
                      "energies aligned by per-element offsets fitted on each evaluated set")
