"""Mean ± spread over seeds, as printed by every benchmark."""

from __future__ import annotations

import statistics


def mean_spread(values: list[float], digits: int = 2) -> str:
    """"m ± s" with s the sample standard deviation (just "m" for one value)."""
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"
