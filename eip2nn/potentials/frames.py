"""Put an arbitrary periodic cell into LAMMPS's restricted triclinic frame.

LAMMPS wants cell rows ``a = (ax, 0, 0)``, ``b = (bx, by, 0)``,
``c = (cx, cy, cz)`` with positive diagonal. For a cell ``A`` (rows are
lattice vectors, Å) we build the lower-triangular ``L`` with the same
lengths and angles and ``Q = A^-1 L`` (orthogonal, since ``L L^T = A A^T``);
``Q`` is a reflection when ``A`` is left-handed, which is harmless for the parity-invariant
potentials used here. Vectors map as ``x_lmp = x @ Q``; forces come back as
``f = f_lmp @ Q.T`` and stress tensors as ``S = Q @ S_lmp @ Q.T``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class LammpsFrame(NamedTuple):
    """A cell in LAMMPS form. Lengths in Å."""

    rotation: np.ndarray  # (3, 3) orthogonal Q, x_lmp = x @ Q
    cell: np.ndarray  # (3, 3) lower-triangular rows, = cell @ Q
    boxhi: np.ndarray  # (3,) (lx, ly, lz) with boxlo at the origin
    tilts: tuple[float, float, float]  # (xy, xz, yz)


def lammps_frame(cell: np.ndarray) -> LammpsFrame:
    """The LAMMPS frame for a (3, 3) cell whose rows are lattice vectors.

    Closed forms rather than LAPACK: 3x3 LAPACK calls cost milliseconds when
    BLAS threads compete with other processes, which dominated labelling time.
    """
    cell = np.asarray(cell, dtype=float)
    a, b, c = cell
    ax = np.sqrt(a @ a)
    a_hat = a / ax
    bx = b @ a_hat
    by = np.sqrt(max(b @ b - bx * bx, 0.0))
    cx = c @ a_hat
    cy = (b @ c - bx * cx) / by
    cz_sq = c @ c - cx * cx - cy * cy
    cz = np.sqrt(max(cz_sq, 0.0))
    lower = np.array([[ax, 0.0, 0.0], [bx, by, 0.0], [cx, cy, cz]])
    # Q = cell^-1 @ lower is orthogonal because both have the same Gram matrix;
    # det(Q) = -1 (a reflection) for a left-handed cell, see the module docstring.
    rotation = inverse_3x3(cell) @ lower
    return LammpsFrame(rotation=rotation, cell=lower,
                       boxhi=np.array([ax, by, cz]), tilts=(bx, cx, cy))


def inverse_3x3(m: np.ndarray) -> np.ndarray:
    """Inverse of a (3, 3) matrix by the adjugate formula (no LAPACK)."""
    (a, b, c), (d, e, f), (g, h, i) = np.asarray(m, dtype=float).tolist()
    co = [e * i - f * h, f * g - d * i, d * h - e * g]
    det = a * co[0] + b * co[1] + c * co[2]
    if abs(det) < 1e-12:
        raise ValueError("singular 3x3 matrix (cell of zero volume)")
    return np.array([[co[0], c * h - b * i, b * f - c * e],
                     [co[1], a * i - c * g, c * d - a * f],
                     [co[2], b * g - a * h, a * e - b * d]]) / det


def voigt_to_matrix(v: np.ndarray) -> np.ndarray:
    """ASE Voigt (xx, yy, zz, yz, xz, xy) -> symmetric (3, 3)."""
    xx, yy, zz, yz, xz, xy = v
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


def matrix_to_voigt(m: np.ndarray) -> np.ndarray:
    """Symmetric (3, 3) -> ASE Voigt (xx, yy, zz, yz, xz, xy)."""
    return np.array([m[0, 0], m[1, 1], m[2, 2], m[1, 2], m[0, 2], m[0, 1]])
