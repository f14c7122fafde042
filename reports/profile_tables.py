"""The profiles' tables: the synchronisation lesson (each part's share with and without a device
sync, against the noise between profiled runs) and each profiler's overhead."""

from __future__ import annotations

import pandas as pd

from benchmarks.core.schema import PARTS
from benchmarks.core.units import format_seconds as fmt_time
from reports.tables import Cell, Table, said


def sync_pairs(attribution: pd.DataFrame) -> pd.DataFrame:
    """Share per part with and without synchronisation, where a profile has both.

    Rows: machine, scenario, profiler, model, device, phase, part, unsynchronized, synchronized.
    """
    a = attribution.assign(machine=attribution["machine"] if "machine" in attribution else "")
    a = a[a["synchronized"].notna()]
    keys = ["machine", "scenario", "profiler", "model", "device", "phase"]
    out = []
    for k, g in a.groupby(keys, dropna=False):
        if set(g["synchronized"]) != {True, False}:
            continue
        shares = {}
        for sync, h in g.groupby("synchronized"):
            values = h.groupby("part")["seconds"].sum(min_count=1)
            if not (values.notna().any() and values.sum() > 0):
                values = h.groupby("part")["share"].sum(min_count=1)
            shares[bool(sync)] = values / values.sum()
        for part in sorted(set(shares[True].index) | set(shares[False].index)):
            out.append(dict(zip(keys, k), part=part, unsynchronized=float(shares[False].get(part, 0.0)),
                            synchronized=float(shares[True].get(part, 0.0))))
    return pd.DataFrame(out, columns=keys + ["part", "unsynchronized", "synchronized"])


ASYNC_DEVICES = ("cuda", "mps", "xpu")


def noise_sentence(noise: list[dict]) -> str:
    """What the loop profiled twice says of the CPU's two loops: how large the noise between profiled
    runs was, and whether the synchronised loop's difference stays within it."""
    if not noise:
        return ("This run profiled only the CPU, where work runs as it is called: the two loops are one "
                "computation, so where the columns below differ it is noise between two profiled runs "
                "(profile the loop again to see how large that noise is here).")
    parts = []
    for n in noise:
        moved = n.get("largest_synchronized_points")
        said = f"{n['profiler']}: the same loop profiled twice moved a part's share by up to {n['largest_noise_points']:.0f} points"
        if n.get("sampling_points") is not None:
            said += f" (sampling alone moves one by up to {n['sampling_points']:.0f})"
        if moved is not None:
            said += (f", the synchronised loop by up to {moved:.0f}, "
                     + ("within that noise" if n.get("within_noise") else "more than that noise (the load moved between the runs)"))
        parts.append(said)
    return ("This run profiled only the CPU, where work runs as it is called: the two loops are one computation, "
            "so their differences below are noise between profiled runs. " + "; ".join(parts) + ".")


def sync_lesson(pairs: pd.DataFrame, noise: list[dict] | None = None) -> tuple[list[str], Table | None]:
    """A sentence with this run's own example of the lesson, and the shares before and after synchronising.

    ``noise``: the loop_noise entries of profile.json (the loop profiled twice), which say on the
    CPU how large the noise between profiled runs was."""
    if pairs.empty:
        return [], None
    pairs = pairs.assign(moved=pairs["unsynchronized"] - pairs["synchronized"],
                         asynchronous=pairs["device"].map(lambda d: str(d).split(":")[0] in ASYNC_DEVICES))
    pairs = pairs.sort_values("asynchronous", ascending=False, kind="stable")
    on_device = pairs[pairs["asynchronous"]]
    if not on_device.empty and on_device["moved"].max() >= 0.1:
        top = on_device.loc[on_device["moved"].idxmax()]
        example = (f"In this run {top['profiler']} on {top['device']} ({top['scenario']}) put "
                   f"{top['unsynchronized']:.0%} of the time in {top['part']} without synchronisation "
                   f"and {top['synchronized']:.0%} with it.")
    elif on_device.empty:
        example = noise_sentence([n for n in noise or [] if str(n.get("device", "cpu")).startswith("cpu")])
    else:
        example = "In this run synchronising moved no part's share by as much as 10 points."
    several_machines = pairs["machine"].nunique() > 1
    profile_keys = ["machine", "scenario", "profiler", "model", "device", "phase"]
    profiles = list(pairs.groupby(profile_keys, dropna=False, sort=True).groups)
    parts = sorted(set(pairs["part"]), key=lambda p: (p not in PARTS, PARTS.index(p) if p in PARTS else 0, p))
    rows = []
    for part in parts:
        cells = [Cell(part)]
        for profile in profiles:
            match = (pairs["part"] == part)
            for key, value in zip(profile_keys, profile):
                match &= pairs[key] == value
            r = pairs[match]
            if r.empty:
                cells += [Cell("–", cls="num"), Cell("–", cls="num")]
                continue
            r = r.iloc[0]
            cells += [Cell(f"{r['unsynchronized']:.0%}", cls="num"),
                      Cell(f"{r['synchronized']:.0%}",
                           cls="num" + (" moved" if r["asynchronous"] and abs(r["moved"]) >= 0.1 else ""))]
        rows.append(cells)
    names = [" · ".join(str(v) for v in (p[0] if several_machines else "", p[2], p[3], p[4], p[1]) if v)
             for p in profiles]
    table = Table("Share of time per part, without and with synchronisation",
                  ["part"] + ["as written", "synchronized"] * len(profiles),
                  rows, groups=[("", 1)] + [(n, 2) for n in names])
    return [example], table


PROFILER_ORDER = ["cprofile", "torch", "py-spy"]


def overhead_table(overhead: dict, caption: str = "") -> Table | None:
    """profile.json's "overhead": per scenario, its measured steps' time without a profiler and under each,
    with the factor it slowed them by."""
    scenarios = overhead.get("scenarios") if isinstance(overhead, dict) else None
    if not isinstance(scenarios, dict) or not scenarios:
        return None
    names = sorted({n for said in scenarios.values() for n in (said.get("profilers") or {})},
                   key=lambda n: (PROFILER_ORDER.index(n) if n in PROFILER_ORDER else len(PROFILER_ORDER), n))
    rows = []
    for stem, said in scenarios.items():
        steps = said.get("steps")
        cells = [Cell(str(stem), f"{steps} steps" if steps else ""), Cell(fmt_time(said.get("bare_s")), cls="num")]
        for name in names:
            under = (said.get("profilers") or {}).get(name)
            if not isinstance(under, dict):
                cells.append(Cell("–", cls="num"))
                continue
            factor = under.get("factor")
            if factor and factor < 1:  # no profiler speeds the steps up: the load moved more than it costs
                cost = "faster than without a profiler: the load moved between the runs, no cost measured"
            else:
                cost = f"{factor:.3g}× the bare time" if factor else ""
            cells.append(Cell(fmt_time(under.get("seconds")), cost, "num"))
        rows.append(cells)
    return Table(caption, ["scenario", "no profiler"] + names, rows,
                 note="the same measured steps, timed without a profiler and under each, one run after another")


def profiler_sentence(settings: dict) -> str:
    """What the share chart's bars may be compared by, and what py-spy --native does to the process it samples."""
    said = ("Each profiler slows the steps it watches by its own factor (the table below), so the bars compare by "
            "their shares of the time, never by their times.")
    if isinstance(settings, dict) and settings.get("py_spy_native"):
        said += (" py-spy ran with --native: to read the C++ frames it pauses the process it samples while it "
                 "unwinds each stack, which slows that process most of all.")
    return said
