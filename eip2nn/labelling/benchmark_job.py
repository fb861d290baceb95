"""The default job: label one benchmark element with every eligible EIP.

Eligible = supports the element, was not fitted to the benchmark's own
DFT data (``fitted_to`` contains the dataset's source tag), and is not
machine-learned unless named (see ``PotentialsDB.eligible_for``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from eip2nn.data import get_dataset, load_dataset
from eip2nn.labelling.compare import Agreement, compare_to_reference
from eip2nn.labelling.engine import LabelReport, label
from eip2nn.labelling.store import LabelStore
from eip2nn.potentials.db import PotentialsDB, warn_machine_learned
from eip2nn.potentials.spec import PotentialSpec
from eip2nn.tables import format_table


@dataclass
class BenchmarkLabelling:
    datasets: list[str]
    eligible: list[PotentialSpec]
    excluded: list[tuple[PotentialSpec, str]]  # (spec, reason)
    report: LabelReport
    agreement: dict[str, Agreement | None]  # per EIP, against the DFT labels

    def table(self) -> str:
        rows = [("EIP", "backend", "labelled", "failed", "E MAE meV/atom", "F MAE eV/Å", "k atoms/s")]
        for spec in self.eligible:
            s = self.report.per_eip[spec.id]
            a = self.agreement.get(spec.id)
            rate = f"{s.atoms / s.eval_seconds / 1e3:.1f}" if s.eval_seconds else "-"
            rows.append((spec.id, spec.backend_type, str(a.n_structures if a else 0),
                         str(sum(s.failed.values())),
                         f"{a.energy_mae:.1f}" if a else "-", f"{a.force_mae:.3f}" if a else "-", rate))
        return format_table(rows)


def label_benchmark(element: str = "Si", labels: str | Path = "outputs/labels.sqlite",
                    workers: int | None = None, progress: bool = True,
                    db: PotentialsDB | None = None, splits: tuple[str, ...] = ("train", "test"),
                    eip_ids: list[str] | None = None, scheduler: str | None = None) -> BenchmarkLabelling:
    """Label ``mlearn/<element>/<split>`` with all eligible EIPs (or ``eip_ids``); on the Dask cluster at
    ``scheduler`` if given."""
    names = [f"mlearn/{element}/{s}" for s in splits]
    structures = [a for n in names for a in load_dataset(n)]
    return label_against_dft(structures, names, get_dataset(names[0]).source_tag, labels, workers, progress,
                             db, eip_ids, scheduler)


def label_against_dft(structures: list, names: list[str], source_tag: str, labels: str | Path,
                      workers: int | None = None, progress: bool = True, db: PotentialsDB | None = None,
                      eip_ids: list[str] | None = None, scheduler: str | None = None) -> BenchmarkLabelling:
    """Label ``structures`` (DFT-labelled, from the sources ``names``) with every eligible EIP (or ``eip_ids``)
    and compare each with DFT. ``source_tag`` names the data's origin: EIPs fitted to it are refused.
    ``scheduler``: a Dask scheduler address to label on (default: local worker processes)."""
    db = db or PotentialsDB()
    species = {s for a in structures for s in a.get_chemical_symbols()}
    chosen = {db.get(i).id for i in eip_ids} if eip_ids is not None else set()
    eligible, excluded = db.eligible_for(species, source_tag, named=chosen)  # machine-learned: only if named
    if eip_ids is not None:
        leaking = [s.id for s, _ in excluded if s.id in chosen and source_tag in s.fitted_to]
        if leaking:
            raise ValueError(f"{leaking} were fitted to {source_tag!r} data and may not label it")
        excluded += [(s, "not requested") for s in eligible if s.id not in chosen]
        eligible = [s for s in eligible if s.id in chosen]
        warn_machine_learned(eligible)
    report = label(structures, eligible, labels, workers=workers, progress=progress, scheduler=scheduler)
    with LabelStore(labels) as store:
        agreement = {s.id: compare_to_reference(structures, store, s.id) for s in eligible}
    return BenchmarkLabelling(names, eligible, excluded, report, agreement)
