"""Readable units and labels shared by the tables and the charts."""

from __future__ import annotations

import math
import re

import pandas as pd

WIDTH_SEPARATOR = re.compile(r"[x×\-, ]+")


def is_missing(v: object) -> bool:
    """None, NaN or pandas' NA: a figure the record does not have."""
    if v is None or v is pd.NA:
        return True
    try:
        return math.isnan(v)
    except TypeError:
        return False


def byte_unit(n: float) -> tuple[float, str]:
    """A scale and unit for a byte count: (1/2**20, "MiB") for 3_000_000."""
    for power, unit in ((3, "GiB"), (2, "MiB"), (1, "KiB")):
        if n >= 1024**power:
            return 1024.0**-power, unit
    return 1.0, "B"


def width_list(widths: object) -> tuple[int, ...] | None:
    """"784x64x10" (or "784-64-10") as (784, 64, 10); None when it is not a list of widths."""
    try:
        return tuple(int(w) for w in WIDTH_SEPARATOR.split(str(widths).strip("[]() ")))
    except ValueError:
        return None


def width_separator(widths: object) -> str:
    """The separator a widths label uses: "x" in "784x64x10"."""
    found = WIDTH_SEPARATOR.search(str(widths))
    return found.group(0) if found else "x"


def shape_label(widths: object, batch: object, grid: object) -> str:
    """"784-64-10 · batch 256 · grid 5"; parts the record lacks are left out."""
    parts = [str(widths)]
    if not is_missing(batch):
        parts.append(f"batch {int(batch)}")
    if not is_missing(grid):
        parts.append(f"grid {int(grid)}")
    return " · ".join(parts)


def shape_sort_key(widths: object, batch: object, grid: object) -> tuple:
    """Shapes in reading order: fewer layers first, then by widths, batch, grid size."""
    w = width_list(widths) or ()
    return (len(w), w, -1 if is_missing(batch) else batch, -1 if is_missing(grid) else grid)
