"""Fit a SNAP potential to DFT energies and forces by weighted ridge regression (the FitSNAP approach).

Rows: each labelled structure's energy per atom, weight √(w_E / n_structures),
and each force component, weight √(w_F / n_components) (w_E, w_F from
:class:`SnapConfig`): the least-squares loss is eip2nn's NN training loss,
w_E ⟨(ΔE/n)²⟩ + w_F ⟨ΔF²⟩, means over the training structures. Columns:
per element, the atom count (β0, the per-element energy offset, not
penalised) and the ``compute snap`` bispectrum columns (linear, or linear and
quadratic), standardised to unit norm on the training rows so that one grid
of ridge strengths ``alphas`` suits every data set. Minimises
``‖X β − y‖² + α ‖β_standardised‖²`` (weighted rows) for every α from one eigendecomposition
of the (projected, standardised) Gram matrix per candidate. The linear
candidate's columns are a subset of the quadratic one's, so one LAMMPS pass
serves both. The candidate and α with the lowest validation loss
``w_E ⟨(ΔE/n)²⟩ + w_F ⟨ΔF²⟩`` win; the model is the fit on the training
structures (without a validation set: k-fold cross-validation, then a refit
on all training structures).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
from ase import Atoms
from ase.data import atomic_numbers

from eip2nn.keys import REF_ENERGY, REF_FORCES, structure_name
from eip2nn.snap.bispectrum import BispectrumCalculator, DesignRows, n_bispectrum, n_per_element
from eip2nn.snap.config import SnapConfig
from eip2nn.snap.model import SnapModel

_GRAM_CHUNK_ROWS = 4096  # rows per matrix product when accumulating Gram matrices


class _Rows(NamedTuple):
    """One labelled structure's unweighted design, columns per element [count, bispectrum block]."""

    energy: np.ndarray  # (P,) design of the energy per atom
    energy_label: float  # eV/atom
    forces: np.ndarray  # (3n, P), or (0, P) when the structure has no force labels
    force_labels: np.ndarray  # (3n,) eV/Å, or (0,)


@dataclass
class SnapFit:
    """What :func:`fit_snap` returns."""

    model: SnapModel
    choice: dict  # quadratic, alpha, n_coefficients, selection ("validation" | "k-fold cross-validation")
    table: list[dict]  # every candidate: quadratic, alpha, n_coefficients, val_energy_mae_meV_per_atom,
    #                    val_force_mae_eV_per_A (None without force labels), val_loss
    seconds: float  # wall time of the whole fit, bispectrum included
    notes: list[str] = field(default_factory=list)


def fit_snap(train: list[Atoms], val: list[Atoms], species: list[str], cfg: SnapConfig | None = None) -> SnapFit:
    """Fit SNAP to the REF_ENERGY / REF_FORCES labels of ``train``, choosing linear/quadratic and α on ``val``."""
    t0 = time.perf_counter()
    cfg = cfg or SnapConfig()
    species = list(species)
    notes: list[str] = []
    train_named = _labelled(train, "training", species, notes)
    val_named = _labelled(val, "validation", species, notes)
    if not train_named:
        raise ValueError(f"no labelled training structure: none of the {len(train)} has {REF_ENERGY!r} in atoms.info")
    t_rows = time.perf_counter()
    layout = _Layout(species, cfg.twojmax, any(cfg.candidates()))
    with BispectrumCalculator(species, cfg, quadratic=any(cfg.candidates())) as calc:
        def design(named):  # a generator: training rows need not all be held at once
            return (_design(calc.rows(a, name), a) for name, a in named)

        val_rows = list(design(val_named))
        if val_rows:  # only the training Gram matrices are needed, not the rows
            selection, train_normal = "validation", _normal(design(train_named))
        else:
            train_rows = list(design(train_named))
    notes.append(f"bispectrum rows of {len(train_named) + len(val_named)} structures: "
                 f"{time.perf_counter() - t_rows:.1f} s")
    _note_missing_elements(train_named, species, notes)
    if val_rows:
        table = _score([train_normal], [val_rows], layout, cfg)
        notes.append(f"chose on {len(val_rows)} validation structures; the model is fitted on the "
                     f"{len(train_named)} training structures only")
    else:
        selection, train_normal, table = _cross_validation(train_rows, layout, cfg, notes)
    best = min(range(len(table)), key=lambda k: table[k]["val_loss"])
    choice = {k: table[best][k] for k in ("quadratic", "alpha", "n_coefficients")} | {"selection": selection}
    _note_grid_edge(choice["alpha"], cfg.alphas, notes)
    columns = layout.columns(choice["quadratic"])
    beta = _ridge_path(train_normal, columns, layout, cfg, [choice["alpha"]])[:, 0]
    model = _model(beta, layout, cfg, choice["quadratic"])
    model.info = {"choice": choice, "n_train": len(train_named), "n_val": len(val_named),
                  "energy_weight": cfg.energy_weight, "force_weight": cfg.force_weight}
    return SnapFit(model, choice, table, time.perf_counter() - t0, notes)


# -- inputs ----------------------------------------------------------------------------------
def _labelled(structures: list[Atoms], what: str, species: list[str], notes: list[str]) -> list[tuple[str, Atoms]]:
    """(name, atoms) of the structures with REF_ENERGY; ValueError naming a structure with another element."""
    known = {atomic_numbers.get(s, -1) for s in species}
    out, unlabelled, no_forces = [], 0, 0
    for i, atoms in enumerate(structures):
        name = structure_name(atoms, i, unnamed=f"{what} structure")
        other = sorted({s for s, z in zip(atoms.get_chemical_symbols(), atoms.numbers) if z not in known})
        if other:
            raise ValueError(f"{name}: element(s) {other} not in the SNAP species {species}")
        if REF_ENERGY not in atoms.info:
            unlabelled += 1
            continue
        forces = atoms.arrays.get(REF_FORCES)
        if forces is not None and np.shape(forces) != (len(atoms), 3):
            raise ValueError(f"{name}: {REF_FORCES} has shape {np.shape(forces)}, expected ({len(atoms)}, 3)")
        if not np.isfinite(atoms.info[REF_ENERGY]) or (forces is not None and not np.isfinite(forces).all()):
            raise ValueError(f"{name}: non-finite {REF_ENERGY} or {REF_FORCES}")
        no_forces += forces is None
        out.append((name, atoms))
    if unlabelled:
        notes.append(f"{unlabelled} {what} structures without {REF_ENERGY} not used")
    if no_forces:
        notes.append(f"{no_forces} {what} structures without {REF_FORCES}: energy row only")
    return out


class _Layout:
    """Columns of the full design: per element [count, n_per bispectrum columns (linear then quadratic)]."""

    def __init__(self, species: list[str], twojmax: int, quadratic: bool):
        self.species, self.twojmax = species, twojmax
        self.n_linear = n_bispectrum(twojmax)
        self.block = 1 + n_per_element(twojmax, quadratic)

    def columns(self, quadratic: bool) -> np.ndarray:
        """Indices of a candidate's columns: per element the count, then K linear (and the quadratic) columns."""
        width = self.block if quadratic else 1 + self.n_linear
        return np.concatenate([e * self.block + np.arange(width) for e in range(len(self.species))])

    def constant(self, columns: np.ndarray) -> np.ndarray:
        """Mask over ``columns``: the unpenalised count (β0) columns."""
        return columns % self.block == 0


def _design(rows: DesignRows, atoms: Atoms) -> _Rows:
    """Insert the count column before each element block; energy per atom; forces if labelled."""
    n, n_el = len(atoms), len(rows.counts)
    energy = np.insert(rows.energy.reshape(n_el, -1), 0, rows.counts, axis=1).ravel() / n
    forces, labels = np.zeros((0, energy.size)), np.zeros(0)
    if REF_FORCES in atoms.arrays:
        forces = np.insert(rows.forces.reshape(3 * n, n_el, -1), 0, 0.0, axis=2).reshape(3 * n, -1)
        labels = np.asarray(atoms.arrays[REF_FORCES], dtype=float).ravel()
    return _Rows(energy, float(atoms.info[REF_ENERGY]) / n, forces, labels)


# -- ridge ------------------------------------------------------------------------------------
class _Normal(NamedTuple):
    """Unweighted normal-equation parts of a set of structures: energy and force Gram matrices, X^T y, row counts."""

    energy_gram: np.ndarray  # (P, P)
    energy_xty: np.ndarray  # (P,)
    n_energies: int
    force_gram: np.ndarray  # (P, P)
    force_xty: np.ndarray  # (P,)
    n_forces: int  # force components

    def __sub__(self, other: "_Normal") -> "_Normal":
        return _Normal(*(a - b for a, b in zip(self, other)))

    def __add__(self, other: "_Normal") -> "_Normal":
        return _Normal(*(a + b for a, b in zip(self, other)))

    def weighted(self, cfg: SnapConfig) -> tuple[np.ndarray, np.ndarray]:
        """Gram matrix and X^T y of the loss w_E ⟨(ΔE/n)²⟩ + w_F ⟨ΔF²⟩ (means over these structures)."""
        w_e = cfg.energy_weight / max(self.n_energies, 1)
        w_f = cfg.force_weight / max(self.n_forces, 1)
        return w_e * self.energy_gram + w_f * self.force_gram, w_e * self.energy_xty + w_f * self.force_xty


def _normal(rows: Iterable[_Rows]) -> _Normal:
    """The :class:`_Normal` parts of the structures ``rows`` (read once, force rows a chunk at a time)."""
    energies, labels, chunk, chunk_y = [], [], [], []
    force_gram = force_xty = None
    n_forces = 0

    def flush():
        nonlocal force_gram, force_xty, n_forces
        x, y = np.concatenate(chunk), np.concatenate(chunk_y)
        force_gram = x.T @ x if force_gram is None else force_gram + x.T @ x
        force_xty = x.T @ y if force_xty is None else force_xty + x.T @ y
        n_forces += len(y)
        chunk.clear()
        chunk_y.clear()

    for r in rows:
        energies.append(r.energy)
        labels.append(r.energy_label)
        chunk.append(r.forces)
        chunk_y.append(r.force_labels)
        if sum(len(c) for c in chunk) >= _GRAM_CHUNK_ROWS:
            flush()
    if chunk:
        flush()
    energies = np.array(energies)
    return _Normal(energies.T @ energies, energies.T @ np.array(labels), len(labels), force_gram, force_xty, n_forces)


def _ridge_path(normal: _Normal, columns: np.ndarray, layout: _Layout, cfg: SnapConfig,
                alphas: list[float]) -> np.ndarray:
    """(len(columns), n_alpha) minimisers of ‖Xβ − y‖² + α‖s ∘ β‖² (weighted rows of ``normal``) over the
    penalised columns, s their norms; the constant (β0) columns are unpenalised, eliminated exactly; a zero
    column gets β = 0."""
    gram, xty = normal.weighted(cfg)
    gram, xty, constant = gram[np.ix_(columns, columns)], xty[columns], layout.constant(columns)
    pen = ~constant
    g_cc, g_cp, g_pp = gram[np.ix_(constant, constant)], gram[np.ix_(constant, pen)], gram[np.ix_(pen, pen)]
    g_cc_pinv = np.linalg.pinv(g_cc, hermitian=True)
    g_t = g_pp - g_cp.T @ g_cc_pinv @ g_cp  # Gram of the penalised columns with the constants projected out
    b_t = xty[pen] - g_cp.T @ g_cc_pinv @ xty[constant]
    diag = np.clip(np.diag(g_t), 0.0, None)
    zero = diag <= 1e-14 * max(diag.max(initial=0.0), 1e-300)  # (numerically) zero columns: β = 0
    scale = np.where(zero, 1.0, np.sqrt(diag))
    g_s = g_t / np.outer(scale, scale)
    g_s[zero], g_s[:, zero] = 0.0, 0.0
    eigenvalues, vectors = np.linalg.eigh(g_s)
    eigenvalues = np.clip(eigenvalues, 0.0, None)  # G is positive semi-definite; round-off may say otherwise
    projected = vectors.T @ np.where(zero, 0.0, b_t / scale)
    beta_s = vectors @ (projected[:, None] / (eigenvalues[:, None] + np.asarray(alphas)[None, :]))
    beta_p = beta_s / scale[:, None]
    beta_p[zero] = 0.0
    out = np.zeros((len(constant), len(alphas)))
    out[pen] = beta_p
    out[constant] = g_cc_pinv @ (xty[constant][:, None] - g_cp @ beta_p)
    return out


# -- selection ----------------------------------------------------------------------------------
def _errors(rows: list[_Rows], columns: np.ndarray, betas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Energy-per-atom errors (n_structures, n_alpha), eV/atom, and force-component errors (m, n_alpha), eV/Å."""
    energies = np.array([r.energy[columns] for r in rows])
    e_err = energies @ betas - np.array([r.energy_label for r in rows])[:, None]
    f_err = [r.forces[:, columns] @ betas - r.force_labels[:, None] for r in rows if len(r.force_labels)]
    return e_err, np.concatenate(f_err) if f_err else np.zeros((0, betas.shape[1]))


def _table_rows(quadratic: bool, columns: np.ndarray, e_err: np.ndarray, f_err: np.ndarray,
                cfg: SnapConfig) -> list[dict]:
    out = []
    for k, alpha in enumerate(cfg.alphas):
        has_f = len(f_err) > 0
        loss = cfg.energy_weight * np.mean(e_err[:, k] ** 2) + (cfg.force_weight * np.mean(f_err[:, k] ** 2) if has_f else 0)
        out.append({"quadratic": quadratic, "alpha": alpha, "n_coefficients": len(columns),
                    "val_energy_mae_meV_per_atom": 1e3 * float(np.mean(np.abs(e_err[:, k]))),
                    "val_force_mae_eV_per_A": float(np.mean(np.abs(f_err[:, k]))) if has_f else None,
                    "val_loss": float(loss)})
    return out


def _score(normals: list[_Normal], held_out: list[list[_Rows]], layout: _Layout, cfg: SnapConfig) -> list[dict]:
    """Table of every (candidate, α): fitted on each of ``normals``, scored on the pooled errors of the
    structures ``held_out`` from it (one validation set, or the folds of a cross-validation)."""
    table = []
    for quadratic in cfg.candidates():
        columns = layout.columns(quadratic)
        e_errs, f_errs = [], []
        for normal, rows in zip(normals, held_out):
            e_err, f_err = _errors(rows, columns, _ridge_path(normal, columns, layout, cfg, cfg.alphas))
            e_errs.append(e_err)
            f_errs.append(f_err)
        table += _table_rows(quadratic, columns, np.concatenate(e_errs), np.concatenate(f_errs), cfg)
    return table


def _cross_validation(train: list[_Rows], layout: _Layout, cfg: SnapConfig,
                      notes: list[str]) -> tuple[str, _Normal, list[dict]]:
    """(selection, normal parts of all of ``train``, table) from k-fold cross-validation over whole structures."""
    k = min(cfg.cv_folds, len(train))
    if k < 2:
        raise ValueError("no labelled validation structure and fewer than 2 labelled training structures: "
                         "nothing to choose the SNAP hyperparameters on")
    fold_of = np.random.default_rng(cfg.seed).permutation(len(train)) % k
    folds = [[r for r, f in zip(train, fold_of) if f == j] for j in range(k)]
    parts = [_normal(rows) for rows in folds]
    total = parts[0]
    for part in parts[1:]:
        total = total + part
    table = _score([total - part for part in parts], folds, layout, cfg)
    notes.append(f"no labelled validation structure: chose by {k}-fold cross-validation (seed {cfg.seed}) on the "
                 f"{len(train)} training structures, then refitted on all of them")
    return f"{k}-fold cross-validation", total, table


def _model(beta: np.ndarray, layout: _Layout, cfg: SnapConfig, quadratic: bool) -> SnapModel:
    per_element = beta.reshape(len(layout.species), -1)
    return SnapModel(species=layout.species, twojmax=cfg.twojmax, rcutfac=cfg.rcutfac, rfac0=cfg.rfac0,
                     rmin0=cfg.rmin0, quadratic=quadratic,
                     coefficients={e: per_element[i] for i, e in enumerate(layout.species)})


# -- notes ------------------------------------------------------------------------------------------
def _note_missing_elements(train_named: list[tuple[str, Atoms]], species: list[str], notes: list[str]) -> None:
    present = set().union(*(set(a.get_chemical_symbols()) for _, a in train_named))
    missing = [s for s in species if s not in present]
    if missing:
        notes.append(f"element(s) {missing} absent from the labelled training structures: their coefficients are 0")


def _note_grid_edge(alpha: float, alphas: list[float], notes: list[str]) -> None:
    if len(alphas) > 1 and alpha == max(alphas):
        notes.append(f"chosen alpha {alpha:g} is the grid's largest: a wider grid may do better")
    elif len(alphas) > 1 and alpha == min(alphas):
        notes.append(f"chosen alpha {alpha:g} is the grid's smallest: the fit is barely regularised")
