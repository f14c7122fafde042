"""Seconds as people read them: the one time formatter that the terminal summaries, the gate's
table, the studies and the HTML page share, so that a figure reads the same everywhere; and the
studies' aligned text tables."""

from __future__ import annotations

import math

UNITS = ((1.0, "s"), (1e3, "ms"), (1e6, "µs"), (1e9, "ns"))


def time_unit(seconds: float) -> tuple[float, str]:
    """A scale and unit that keep ``seconds`` readable: (1e3, "ms") for 0.012."""
    for scale, unit in UNITS[:-1]:
        if seconds >= 1 / scale:
            return scale, unit
    return UNITS[-1]


def format_seconds(seconds: object, unit: str | None = None, spec: str = ".3g", missing: str = "–",
                   suffix: bool = True) -> str:
    """``seconds`` as "12.3 ms": in its readable unit, or in ``unit`` where a column must share one
    (the gate's table); ``missing`` for None, NaN, infinity or a value that is not a number."""
    try:
        value = float(seconds)
    except (TypeError, ValueError):
        return missing
    if not math.isfinite(value):
        return missing
    scale, unit = ({u: s for s, u in UNITS}[unit], unit) if unit else time_unit(value)
    return f"{value * scale:{spec}} {unit}" if suffix else f"{value * scale:{spec}}"


def text_table(records: list[dict], right: tuple[str, ...] = ()) -> str:
    """``records`` (dicts of strings, same keys) as aligned text; columns in ``right`` flush right."""
    if not records:
        return "(no rows)"
    columns = list(records[0])
    cells = [columns] + [[str(r[c]) for c in columns] for r in records]
    widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) if c in right else cell.ljust(w)
                       for c, cell, w in zip(columns, row, widths)).rstrip() for row in cells]
    return "\n".join(lines)
