"""The pipeline's results: arm × DFT fraction, mean ± spread over seeds, against the baseline.

Spread is the sample standard deviation over seeds (0 with one seed).
Improvement is ``(baseline mean − arm mean) / baseline mean × 100`` %, so
positive means the arm has the lower test error.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

from eip2nn.pipeline.config import arm_name, split_arm_name  # noqa: E402
from eip2nn.tables import format_table  # noqa: E402

ARM_LABELS = {"baseline": "baseline (DFT only)", "weak": "weak supervision", "transfer": "pretrain → finetune",
              "both": "pretrain → finetune + weak", "delta": "Δ-learning on the closest EIP",
              "snap": "SNAP fitted to the same labels (reference)", "auto": "auto (chosen on validation)"}


@dataclass
class CellResult:
    """One arm at one DFT fraction and seed."""

    arm: str
    fraction: float
    seed: int
    status: str  # "finished" | "reused" | "failed"
    n_dft_labels: int = 0  # DFT-labelled structures seen (training + validation)
    test_energy_mae: float = math.nan  # meV/atom
    test_force_mae: float = math.nan  # eV/Å
    val_energy_mae: float = math.nan  # meV/atom
    seconds: float = 0.0  # training time of the run that produced the numbers
    run_id: str | None = None
    error: str = ""
    test_stress_mae: float = math.nan  # GPa; NaN when the test set has no stress
    groups: dict[str, tuple[float, float]] = field(default_factory=dict)  # group -> test (E MAE meV/atom, F MAE eV/Å)
    val_force_mae: float = math.nan  # eV/Å
    val_score: float = math.nan  # the training loss on the validation DFT labels (see pipeline.auto); lower is better
    chose: str = ""  # auto cells: the arm chosen
    model_path: str = ""  # the stage's saved model (network cells)

    @property
    def ok(self) -> bool:
        return self.status != "failed"


@dataclass
class Row:
    arm: str
    fraction: float
    n_seeds: int
    n_dft_labels: float
    energy: tuple[float, float]  # mean, spread (meV/atom)
    forces: tuple[float, float]  # mean, spread (eV/Å)
    energy_gain: float  # % vs baseline (nan without a baseline)
    forces_gain: float
    stress: tuple[float, float] = (math.nan, math.nan)  # mean, spread (GPa); NaN without test stress


def _mean_spread(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def _gain(base: float, value: float) -> float:
    return (base - value) / base * 100.0 if base and not math.isnan(base) else math.nan


def metric_name(arm: str) -> str:
    """An arm name as an MLflow metric key may hold it (no @: ``transfer/schnet``)."""
    return arm.replace("@", "/")


def baseline_of(arm: str) -> str:
    """The arm an arm is compared with: ``baseline``, or ``baseline@<backbone>`` for ``<arm>@<backbone>``."""
    return arm_name("baseline", split_arm_name(arm)[1])


def summarise(cells: list[CellResult], arms: list[str], fractions: list[float]) -> list[Row]:
    """One row per arm and fraction that has at least one finished seed; gains against :func:`baseline_of`."""
    rows: list[Row] = []
    base = {}
    baselines = [a for a in arms if a == baseline_of(a)]
    for arm in baselines + [a for a in arms if a not in baselines]:
        for f in sorted(fractions):
            done = [c for c in cells if c.arm == arm and c.fraction == f and c.ok]
            if not done:
                continue
            e, fo = _mean_spread([c.test_energy_mae for c in done]), _mean_spread([c.test_force_mae for c in done])
            is_base = arm in baselines
            if is_base:
                base[(arm, f)] = (e[0], fo[0])
            b = base.get((baseline_of(arm), f), (math.nan, math.nan))
            rows.append(Row(arm, f, len(done), statistics.mean(c.n_dft_labels for c in done), e, fo,
                            math.nan if is_base else _gain(b[0], e[0]),
                            math.nan if is_base else _gain(b[1], fo[0]),
                            _mean_spread([c.test_stress_mae for c in done])))
    return rows


def backbone_gains(rows: list[Row], backbones: list[str]) -> str:
    """Markdown table of a study over backbones: per DFT fraction and arm, each backbone's energy / force gain
    against its own baseline (the baseline rows: its errors, meV/atom / eV/Å)."""
    by = {(r.arm, r.fraction): r for r in rows}
    arms = list(dict.fromkeys(arm for arm, backbone in map(split_arm_name, (r.arm for r in rows)) if backbone))
    header = ["DFT fraction", "arm"] + backbones
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for f in sorted({r.fraction for r in rows}):
        for arm in arms:
            cells = []
            for b in backbones:
                r = by.get((arm_name(arm, b), f))
                if r is None:
                    cells.append("-")
                elif arm == "baseline":
                    cells.append(f"{_pm(r.energy, 2)} / {_pm(r.forces, 3)}")
                else:
                    cells.append(f"{_pct(r.energy_gain) or '-'} / {_pct(r.forces_gain) or '-'}")
            if any(c != "-" for c in cells):
                lines.append(f"| {f:g} | {arm} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def group_rows(cells: list[CellResult], arms: list[str], fractions: list[float]) -> tuple[list[str], list[tuple]]:
    """(groups, one row per arm and fraction: arm, fraction, then "E ± s / F ± s" per group) over finished seeds."""
    groups = sorted({g for c in cells if c.ok for g in c.groups})
    out = []
    for arm in arms:
        for f in sorted(fractions):
            done = [c for c in cells if c.arm == arm and c.fraction == f and c.ok and c.groups]
            if not done:
                continue
            row = [arm, f"{f:g}"]
            for g in groups:
                e = _mean_spread([c.groups[g][0] for c in done if g in c.groups])
                fo = _mean_spread([c.groups[g][1] for c in done if g in c.groups])
                row.append(f"{_pm(e, 2)} / {_pm(fo, 3)}")
            out.append(tuple(row))
    return groups, out


def group_markdown_table(cells: list[CellResult], arms: list[str], fractions: list[float]) -> str:
    """Test errors per group (energy MAE meV/atom / force MAE eV/Å, mean ± spread over seeds); '' with one group."""
    groups, rows = group_rows(cells, arms, fractions)
    if len(groups) < 2 or not rows:
        return ""
    header = ["arm", "DFT fraction"] + [f"{g}: E (meV/atom) / F (eV/Å)" for g in groups]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _pm(ms: tuple[float, float], digits: int) -> str:
    return "-" if math.isnan(ms[0]) else f"{ms[0]:.{digits}f} ± {ms[1]:.{digits}f}"


def _pct(x: float) -> str:
    return "" if math.isnan(x) else f"{x:+.0f}%"


HEADER = ("arm", "DFT fraction", "DFT labels", "seeds", "test energy MAE (meV/atom)", "vs baseline",
          "test force MAE (eV/Å)", "vs baseline")


STRESS_HEADER = ("test stress MAE (GPa)",)


def _with_stress(rows: list[Row]) -> bool:
    return any(not math.isnan(r.stress[0]) for r in rows)


def _header(rows: list[Row]) -> tuple:
    return HEADER + (STRESS_HEADER if _with_stress(rows) else ())


def _cells(r: Row, stress: bool = False) -> tuple:
    return (r.arm, f"{r.fraction:g}", f"{r.n_dft_labels:.0f}", str(r.n_seeds), _pm(r.energy, 2),
            _pct(r.energy_gain), _pm(r.forces, 3), _pct(r.forces_gain)) + ((_pm(r.stress, 3),) if stress else ())


def markdown_table(rows: list[Row]) -> str:
    header = _header(rows)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cells(r, _with_stress(rows))) + " |" for r in rows]
    return "\n".join(lines)


def text_table(rows: list[Row]) -> str:
    return format_table([_header(rows)] + [_cells(r, _with_stress(rows)) for r in rows])


def write_csv(rows: list[Row], path: Path) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arm", "dft_fraction", "n_dft_labels", "n_seeds", "test_energy_mae_meV_atom_mean",
                    "test_energy_mae_meV_atom_spread", "energy_improvement_pct", "test_force_mae_eV_A_mean",
                    "test_force_mae_eV_A_spread", "force_improvement_pct", "test_stress_mae_GPa_mean",
                    "test_stress_mae_GPa_spread"])
        for r in rows:
            w.writerow([r.arm, r.fraction, r.n_dft_labels, r.n_seeds, r.energy[0], r.energy[1], r.energy_gain,
                        r.forces[0], r.forces[1], r.forces_gain, r.stress[0], r.stress[1]])
    return path


def write_cells_csv(cells: list[CellResult], path: Path) -> Path:
    """Every cell (arm, fraction, seed) with its status, numbers and MLflow run."""
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["arm", "dft_fraction", "seed", "status", "n_dft_labels", "test_energy_mae_meV_atom",
                    "test_force_mae_eV_A", "val_energy_mae_meV_atom", "train_seconds", "mlflow_run_id", "error",
                    "test_stress_mae_GPa", "val_force_mae_eV_A", "val_score", "auto_chose"])
        for c in cells:
            w.writerow([c.arm, c.fraction, c.seed, c.status, c.n_dft_labels, c.test_energy_mae, c.test_force_mae,
                        c.val_energy_mae, round(c.seconds, 1), c.run_id or "", c.error, c.test_stress_mae,
                        c.val_force_mae, c.val_score, c.chose])
    return path


def against_reference(rows: list[Row], reference: str = "snap", nn_arms: tuple[str, ...] = ()) -> str:
    """Markdown table: per DFT fraction, the reference arm against ``auto`` (chosen on validation) and against
    the eip2nn arm with the lowest mean test energy error (chosen on the test set: an upper bound)."""
    by = {(r.arm, r.fraction): r for r in rows}
    lines = ["| DFT fraction | DFT labels | reference E / F | auto E / F | auto beats reference on | "
             "best eip2nn arm (by test E) | its E / F | it beats reference on |", "|---|---|---|---|---|---|---|---|"]
    for f in sorted({r.fraction for r in rows if r.arm == reference}):
        ref = by[(reference, f)]
        mine = [r for r in rows if r.fraction == f and r.arm in nn_arms]
        if not mine:
            continue
        best = min(mine, key=lambda r: r.energy[0])
        auto = by.get(("auto", f))
        lines.append(f"| {f:g} | {ref.n_dft_labels:.0f} | {_ef(ref)} | {_ef(auto) if auto else '-'} | "
                     f"{_beats(auto, ref) if auto else '-'} | {best.arm} | {_ef(best)} | {_beats(best, ref)} |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _ef(r: Row) -> str:
    return f"{r.energy[0]:.2f} / {r.forces[0]:.3f}"


def _beats(r: Row, ref: Row) -> str:
    won = [name for name, a, b in (("energy", r.energy[0], ref.energy[0]), ("forces", r.forces[0], ref.forces[0]))
           if a < b]
    return " and ".join(won) or "neither"


def learning_curve(rows: list[Row], path: Path, title: str) -> Path:
    """Test energy and force MAE against the number of DFT labels, log-log, one line per arm.

    Error bars: the spread over seeds. Arms are nudged apart along x (by 3% each) so their bars do not overlap.
    """
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for k, arm in enumerate(dict.fromkeys(r.arm for r in rows)):
        mine = sorted((r for r in rows if r.arm == arm), key=lambda r: r.n_dft_labels)
        x = [r.n_dft_labels * 1.03 ** k for r in mine]
        for ax, key in zip(axes, ("energy", "forces")):
            ax.errorbar(x, [getattr(r, key)[0] for r in mine], yerr=[getattr(r, key)[1] for r in mine],
                        marker="o", capsize=3, label=ARM_LABELS.get(arm, arm))
    for ax, ylabel in zip(axes, ("test energy MAE (meV/atom)", "test force MAE (eV/Å)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):  # 0.2, 30 rather than 2×10⁻¹, 3×10¹
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "235" else ""))
        ax.set_xlabel("DFT-labelled structures")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
