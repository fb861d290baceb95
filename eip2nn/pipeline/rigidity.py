"""The pipeline's LPR step (``lpr: true``): how rigid each eip2nn cell's DFT head is on the test atoms.

For every finished network cell, the local prediction rigidity
(:mod:`eip2nn.diagnostics.lpr`, last-layer approximation, the pipeline's
loss weights) of every test atom, with the Hessian of the cell's
DFT-labelled training structures (weak arms' pseudo-labelled structures are
not counted). Each cell's result is kept in its stage folder (``lpr.json``),
so a rerun reads it back. The report gets the median over test atoms, per
arm and fraction (mean ± std over seeds) and per group; the parent MLflow
run gets ``<arm>.f<fraction>.lpr_median``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eip2nn.data.protocol import Split, make_split
from eip2nn.diagnostics.lpr import DEFAULT_RIDGE, local_prediction_rigidity
from eip2nn.keys import GROUP
from eip2nn.nn.checkpoint import load_model
from eip2nn.nn.committee import Committee
from eip2nn.pipeline.config import NN_ARMS, PipelineConfig
from eip2nn.pipeline.report import CellResult, metric_name

LPR_FILE = "lpr.json"  # in a stage folder


@dataclass
class CellRigidity:
    arm: str
    fraction: float
    seed: int
    median: float  # 1/eV², over the test atoms
    p10: float  # 10th percentile
    groups: dict[str, float]  # group -> median


def _cached(path: Path, settings: dict) -> dict | None:
    if path.is_file():
        stored = json.loads(path.read_text())
        if stored.get("settings") == settings:
            return stored
    return None


def cell_rigidity(p: PipelineConfig, cell: CellResult, log=print, splits: dict | None = None) -> CellRigidity | None:
    """The LPR summary of one finished network cell (None for snap, auto, committee and failed cells: the
    last-layer approximation is one network's).

    splits: {(fraction, seed): Split} shared by the calls, so each cell's split is read once for all its arms."""
    if not cell.ok or not cell.model_path or p.base_arm(cell.arm) not in NN_ARMS:
        return None
    path = Path(cell.model_path).parent / LPR_FILE
    settings = {"energy_weight": p.train.energy_weight, "force_weight": p.train.force_weight, "ridge": DEFAULT_RIDGE,
                "train": "dft-labelled training structures", "query": "test"}
    stored = _cached(path, settings)
    if stored is None:
        splits = {} if splits is None else splits
        key = (cell.fraction, cell.seed)
        if key not in splits:
            splits[key] = make_split(dataclasses.replace(p.data, dft_fraction=cell.fraction, split_seed=cell.seed))
        split = splits[key]
        model = load_model(cell.model_path)
        if isinstance(model, Committee):
            log(f"  LPR {cell.arm}: not computed for a committee (the last-layer approximation is one network's)")
            return None
        lpr = local_prediction_rigidity(model, Split.labelled(split.train), split.test,
                                        energy_weight=p.train.energy_weight, force_weight=p.train.force_weight)
        values = lpr.all_atoms
        groups = np.concatenate([[str(a.info.get(GROUP, "-"))] * len(a) for a in split.test])
        stored = {"settings": settings, "median": float(np.median(values)), "p10": float(np.percentile(values, 10)),
                  "groups": {g: float(np.median(values[groups == g])) for g in sorted(set(groups))}}
        path.write_text(json.dumps(stored, indent=1))
        log(f"  LPR {cell.arm} f={cell.fraction:g} seed={cell.seed}: median {stored['median']:.3g} 1/eV²")
    return CellRigidity(cell.arm, cell.fraction, cell.seed, stored["median"], stored["p10"], stored["groups"])


def rigidity_markdown(rows: list[CellRigidity], arms: list[str]) -> str:
    """Per arm and fraction: median LPR over test atoms, its 10th percentile, and per group (mean ± std over seeds)."""
    groups = sorted({g for r in rows for g in r.groups})
    header = ["arm", "DFT fraction", "median LPR (1/eV²)", "10th percentile"] + [f"median, {g}" for g in groups]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for arm in arms:
        for f in sorted({r.fraction for r in rows}):
            mine = [r for r in rows if r.arm == arm and r.fraction == f]
            if not mine:
                continue
            cells = [_ms([r.median for r in mine]), _ms([r.p10 for r in mine])]
            cells += [_ms([r.groups[g] for r in mine if g in r.groups]) for g in groups]
            lines.append(f"| {arm} | {f:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def rigidity_metrics(rows: list[CellRigidity]) -> dict[str, float]:
    """``<arm>.f<fraction>.lpr_median``: the mean over seeds of the cells' median LPR."""
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(f"{metric_name(r.arm)}.f{r.fraction:g}.lpr_median", []).append(r.median)
    return {k: statistics.mean(v) for k, v in out.items()}


def _ms(values: list[float]) -> str:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return "-"
    return f"{statistics.mean(values):.3g} ± {statistics.stdev(values):.2g}" if len(values) > 1 else f"{values[0]:.3g}"
