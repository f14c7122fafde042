"""`python -m reports`: render a run's HTML report (see ``--help``)."""

from __future__ import annotations

import argparse
import sys

from benchmarks.core.cli import Parser, UsageError
from benchmarks.core.command import run_command
from reports.render import DEFAULT_THRESHOLD


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m reports", error_prefix="report: error: ",
        description="Render a run folder into one self-contained HTML page (report.html in the run folder).",
        epilog="Runs are named by folder path or by run id under results/ ($KAN_RESULTS). "
        "Exit status 2: a run is missing or holds nothing to show.",
    )
    p.add_argument("run_id", nargs="?", metavar="RUN",
                   help="the run to render (default: the newest run with something to show, together with the "
                        "newest bench, profile, quality and gate runs of the same machine and commit, on one page)")
    p.add_argument("--run", help="the same as RUN")
    p.add_argument("--against", metavar="RUN",
                   help="compare with an older run: per benchmark, the change of its time over the MLP (each "
                        "run's own), judged against its workload; absolute times judged only where both runs' "
                        "conditions match (docs/reading-the-page.md)")
    p.add_argument("--merge", metavar="RUN", nargs="+", default=[],
                   help="more runs (from other machines, say) to show on the same page, labelled by machine")
    p.add_argument("--out", metavar="FILE", help="where to write the page (default: RUN/report.html)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"--against: the change (new / old time over the MLP) beyond which a significant one "
                        f"counts (default {DEFAULT_THRESHOLD})")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command("report", parser(), argv, _report)  # reads runs; writes a page, not a run folder


def _report(args, cmd) -> int:
    if args.run and args.run_id and args.run != args.run_id:
        raise UsageError(f"two runs named ({args.run_id}, --run {args.run}); name one")
    from reports.render import render  # imported here: --help stays quick

    # a ReportError is a UsageError: one line, exit 2
    print(render(args.run or args.run_id, against=args.against, merge=args.merge, out=args.out,
                 threshold=args.threshold))
    return 0


if __name__ == "__main__":
    sys.exit(main())
