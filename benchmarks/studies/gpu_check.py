"""What a GPU run of the bench says at its busy shape: ``python -m benchmarks.studies.gpu_check RUN``.

Reads a bench run folder's ``benchmarks.csv`` and prints, for each model at the suite's busy
shape ([1024, 1024, 1024]), the median, the device's busy share, the achieved FLOP/s as a
share of the device's peak for the math that ran, the share of memory bandwidth, and the
eager against the CUDA-graph step; then how many rows were launch-bound and whether each of
them carries the label. The check of the FLOP convention: the width-matched MLP's forward
there should reach a large share of the fp32 peak (a matmul-bound step on a busy device).

It is the last step of ``benchmarks/studies/gpu_check.sh``; exit status 1 when the table
holds no accelerator row or a launch-bound row lacks its label.
"""

from __future__ import annotations

import math
import sys

from benchmarks.core.cli import Parser, UsageError
from benchmarks.core.command import run_command
from benchmarks.core.units import format_seconds

BUSY_WIDTHS = "1024x1024x1024"


def _pct(v) -> str:
    return "-" if v is None or not isinstance(v, float) or math.isnan(v) else f"{v:.0%}"


def report(frame) -> tuple[list[str], bool]:
    """(lines to print, whether every launch-bound row is labelled) for a bench table."""
    acc = frame[frame["device_s"].notna() | frame["peak_flops"].notna()]
    if acc.empty:
        return ["no accelerator rows in this table (a CPU run, or the device columns are missing)"], False
    lines = []
    busy = acc[(acc["widths"] == BUSY_WIDTHS) & (acc["status"] == "ok")]
    if busy.empty:
        lines.append(f"no ok row at the busy shape {BUSY_WIDTHS}")
    else:
        batch = int(busy["batch"].iloc[0])
        lines.append(f"at [{BUSY_WIDTHS.replace('x', ', ')}] batch {batch} "
                     f"({busy['peak_source'].dropna().iloc[0] if busy['peak_source'].notna().any() else 'no peak'}):")
        lines.append(f"  {'model':<14} {'phase':<9} {'mode':<11} {'median':>10} {'busy':>6} {'TFLOP/s':>8} "
                     f"{'of peak':>8} {'math':>5} {'of BW':>6}  launch-bound")
        for _, r in busy.sort_values(["phase", "model"]).iterrows():
            tflops = r["flops"] / r["median_s"] / 1e12 if r["median_s"] > 0 else math.nan
            mode = r["mode"] if isinstance(r["mode"], str) else "eager"
            median = format_seconds(r["median_s"], unit="ms", spec=".3f")
            lines.append(f"  {r['model']:<14} {r['phase']:<9} {mode:<11} {median:>10} "
                         f"{_pct(r['device_busy']):>6} {tflops:>8.2f} {_pct(r['flop_share']):>8} "
                         f"{str(r['math']):>5} {_pct(r['bandwidth_share']):>6}  {r['launch_bound']}")
        mlp = busy[(busy["model"] == "mlp") & (busy["phase"] == "forward") & busy["mode"].isna()]
        if len(mlp):
            share = float(mlp["flop_share"].iloc[0])
            lines.append(f"width-matched MLP forward: {_pct(share)} of {mlp['math'].iloc[0]} peak"
                         + ("" if share >= 0.4 else "  <- low: check the FLOP count and the peak before trusting the rest"))
    measured = acc[acc["device_busy"].notna()]
    should = measured[measured["device_busy"] < 0.5]
    labelled = should[should["launch_bound"] == "yes"]
    wrong = measured[(measured["device_busy"] >= 0.5) & (measured["launch_bound"] == "yes")]
    ok = len(labelled) == len(should) and wrong.empty
    lines.append(f"launch-bound: {len(should)} of {len(measured)} rows with a busy share under 50%; "
                 f"{len(labelled)} labelled, {len(wrong)} labelled wrongly" + ("" if ok else "  <- MISMATCH"))
    lost = acc[acc["status"] != "ok"]
    for _, r in lost.iterrows():
        lines.append(f"not ok: {r['benchmark']}: {r['status']}: {r['reason']}")
    return lines, ok


def parser() -> Parser:
    p = Parser(prog="python -m benchmarks.studies.gpu_check", description=__doc__.splitlines()[0],
               error_prefix="gpu_check: error: ")
    p.add_argument("run", help="a bench run folder (path or run id)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command("gpu_check", parser(), argv, _check)  # reads a run; writes none


def _check(args, cmd) -> int:
    from benchmarks.core import record

    try:
        frame = record.open_run(args.run).read_bench_table()
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    lines, ok = report(frame)
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
