"""Plain-text tables for terminal output."""

from __future__ import annotations


def format_table(rows: list[tuple]) -> str:
    """Left-aligned columns; the first row is the header, underlined with dashes."""
    rows = [tuple(map(str, r)) for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)
