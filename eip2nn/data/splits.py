"""Deterministic index splits of a dataset of ``n`` structures."""

from __future__ import annotations

import math

import numpy as np


def train_val_split(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into sorted (train_idx, val_idx) by a seeded permutation.

    ``val_fraction`` in [0, 1); the validation set has ``round(val_fraction * n)`` items.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = int(round(val_fraction * n))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def nested_fractions(n: int, fractions, seed: int) -> dict[float, np.ndarray]:
    """Sorted index subsets of ``range(n)``, one per fraction, nested by size.

    All subsets are prefixes of one seeded permutation: fraction ``f`` in (0, 1] gets
    the first ``max(1, ceil(f * n))`` items, so each smaller set lies inside each larger.
    """
    bad = [f for f in fractions if not 0.0 < f <= 1.0]
    if bad:
        raise ValueError(f"fractions must be in (0, 1], got {bad}")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    # round before ceil so that e.g. 0.1 * 30 = 3.0000000000000004 gives 3, not 4
    return {f: np.sort(perm[: max(1, math.ceil(round(f * n, 9)))]) for f in fractions}
