"""``python -m benchmarks.peers``: other KAN packages timed beside ours, each in its own environment.

    python -m benchmarks.peers [--peer pykan,flashkan,inkan] [--python NAME=PATH ...]
                               [--suite quick] [--grids 5,50] [--model kan,kan-fast,mlp,mlp-param]
                               [--device cpu] [--threads N]

(``nox -s peers`` builds each peer's virtual environment under ``.nox/peer-<name>`` and
runs this with ``--python`` pointing at them.)

For each workload of the suite (phase, device, shape, grid size), our models (in this
process) and each peer's model (in a child process running in the peer's environment,
where our ``kan`` is not importable: ``benchmarks.peers.child``) take turns call by call,
in rotating order, until the ratios to the MLPs are clear or the suite's time is spent:
the bench's own protocol (``benchmarks.core.measure.time_group``), so a peer's ratio to
an MLP, or to one of ours, compares samples taken side by side.

A peer that cannot be used (its environment missing, its import failing, an option it does
not support, out of memory) is recorded as ``not available`` with the reason, and the
others go on. Where a peer computes our reference's function, the ``equivalence`` column
says how far its output is from ours given the same weights (``benchmarks.peers.catalog``).

The run folder holds the bench's files (``measurements.jsonl``, ``benchmarks.csv`` with the
peers' rows named ``peer:<package>`` and ``package`` naming the version) and ``peers.json``
(the settings, and each peer's version and status). Bad input (an unknown peer): one line
naming the valid ones, exit 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
from pathlib import Path

from benchmarks.core import cli, record
from benchmarks.core.machine import machine_label
from benchmarks.core.cli import Parser, UsageError
from benchmarks.core.command import Command, run_command
from benchmarks.core.process import Child, ChildError
from benchmarks.core.protocol import Candidate
from benchmarks.core.units import format_seconds
from benchmarks.peers.catalog import PEERS, reference_layers

ROOT = Path(__file__).resolve().parents[2]
PREFIX = "peer:"
OUR_MODELS = ("kan", "kan-fast", "mlp", "mlp-param")


class RemoteStep:
    """A case built in a peer's process: timed there, by the core's protocol, on command."""

    def __init__(self, child: Child, case):
        self.child, self.case = child, case

    def timed_call(self) -> dict:
        return self.child.ask({"cmd": "call", "case": self.case.id})


def start(name: str, python: Path, threads: int, clocks: dict[str, str], scratch: Path) -> Child:
    """The peer's process, in its environment, importing the harness but not our ``kan``; it
    times with the run's ``threads`` and clock per device (``clocks``: {device: "wall" | "cpu"})."""
    harness = scratch / name
    harness.mkdir()
    (harness / "benchmarks").symlink_to(ROOT / "benchmarks", target_is_directory=True)
    code = (f"import sys; sys.path[:0] = [{str(harness)!r}]; "
            "from benchmarks.peers.child import main; main()")
    return Child(name, [str(python), "-I", "-c", code, json.dumps({"side": name, "threads": threads, "clocks": clocks})],
                 cwd=scratch, env=dict(os.environ))


def peer_python(name: str, given: dict[str, str]) -> Path:
    """The interpreter of a peer's environment: ``--python NAME=PATH``, else ``.nox/peer-NAME``."""
    if name in given:
        return Path(given[name])
    return ROOT / ".nox" / f"peer-{name}" / ("Scripts/python.exe" if sys.platform == "win32" else "bin/python")


def python_arg(text: str) -> tuple[str, str]:
    """An argparse type: ``NAME=PATH``, a peer's interpreter."""
    name, _, path = text.partition("=")
    if name not in PEERS or not path:
        raise argparse.ArgumentTypeError(f"--python takes NAME=PATH with NAME one of {', '.join(PEERS)}, got {text!r}")
    return name, path


def parser() -> Parser:
    p = Parser(prog="python -m benchmarks.peers", description=__doc__.splitlines()[0])
    p.add_argument("--peer", type=cli.names(list(PEERS), "peer"), action=cli.Names, default=list(PEERS),
                   help=f"peers, comma-separated (default: {','.join(PEERS)})")
    p.add_argument("--python", type=python_arg, action="append", default=[], metavar="NAME=PATH",
                   help="a peer's interpreter (default: .nox/peer-NAME/bin/python, made by nox -s peers)")
    p.add_argument("--suite", default="quick", help="the bench suite whose shapes and phases to take")
    p.add_argument("--grids", type=cli.int_list("--grids"), default=None, metavar="G,G",
                   help="grid sizes (default: the suite's)")
    cli.add_models(p, default=list(OUR_MODELS), help=f"our models beside the peers (default: {','.join(OUR_MODELS)})")
    cli.add_devices(p, default="cpu", multiple=False)
    cli.add_threads(p, help="intra-op threads in every process (default: torch's choice)")
    return p


def main(argv: list[str] | None = None) -> int:
    return run_command("peers", parser(), argv, _peers)


def _peers(args, cmd: Command) -> int:
    from benchmarks.core.timer import clock_name, torch_threads, using_threads
    from benchmarks.suite import suites

    try:
        selection = suites.select(args.suite, args.model, [args.device])
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.grids:
        selection = dataclasses.replace(selection, suite=dataclasses.replace(selection.suite, grid_sizes=args.grids))
    # the run's threads and clocks, decided once: this process and every peer's time with them
    threads = torch_threads() if args.threads is None else args.threads
    clocks = {device: clock_name(device, threads) for device in selection.devices}
    run = cmd.open(label="peers", settings={
        "peers": args.peer, "models": list(selection.models), "suite": selection.suite.name,
        "grids": list(selection.suite.grid_sizes), "threads": threads, "clocks": clocks})
    print(f"peers: {', '.join(args.peer)} beside {', '.join(selection.models)}, suite {selection.suite.name}, "
          f"grids {','.join(map(str, selection.suite.grid_sizes))}, {threads} threads "
          f"({', '.join(f'{d}: {c} clock' for d, c in clocks.items())}); run folder {run.path}", flush=True)
    status: dict[str, dict] = {}
    with using_threads(threads):
        _measure(cmd, args.peer, dict(args.python), selection, threads, clocks, status)
    from benchmarks.suite import summary

    frame = record.bench_table(run.measurements())
    run.write_table("benchmarks", frame)
    run.write_json("peers.json", {"peers": {n: {**s, "spec": PEERS[n].spec} for n, s in status.items()},
                                  "models": list(selection.models), "suite": selection.suite.name,
                                  "grids": list(selection.suite.grid_sizes), "threads": threads,
                                  "clocks": clocks})
    print()
    print(summary.summary(frame))
    if cmd.interrupted:
        print(f"interrupted: kept the {len(frame)} finished measurements")
    return 0


def _start_children(peers: list[str], given: dict[str, str], threads: int, clocks: dict[str, str],
                    scratch: Path, status: dict[str, dict], children: dict[str, Child]) -> None:
    """Start each peer's process; fills ``status`` (each peer's status, reason and version) and
    ``children`` (the peers that answered ready), as it goes, so that an interrupt closes those started."""
    for name in peers:
        python = peer_python(name, given)
        if not python.exists():
            status[name] = {"status": "not available", "reason": f"no environment at {python.parent.parent} "
                            f"(nox -s peers makes it)", "version": None}
            continue
        child = start(name, python, threads, clocks, scratch)
        try:
            hello = child.receive()["hello"]
        except ChildError as e:
            child.close()
            status[name] = {"status": "not available", "reason": str(e).splitlines()[0], "version": None}
            continue
        status[name] = {k: hello[k] for k in ("status", "reason", "version")}
        if hello["status"] == "ok":
            children[name] = child
        else:
            child.close()


def _add_peer_case(case, children: dict[str, Child], status: dict[str, dict], rows: dict, candidates: dict) -> None:
    """The peer's row for ``case`` and, where its process built the model, its candidate (a remote step)."""
    name = case.model.removeprefix(PREFIX)
    rows[case.id] = {"package": f"{name} {status[name]['version'] or PEERS[name].version}"}
    if name not in children:
        rows[case.id].update(status="not available", reason=status[name]["reason"])
        return
    try:
        built = children[name].ask({"cmd": "build", "cases": [case_fields(case)]})["cases"][case.id]
    except ChildError as e:
        built = {"status": "not available", "reason": str(e).splitlines()[0]}
    if built["status"] != "ok":
        rows[case.id].update(status="not available", reason=built["reason"])
        return
    rows[case.id].update({k: v for k, v in built.items() if k not in ("status", "reason")})
    candidates[case.id] = Candidate(case.id, RemoteStep(children[name], case))


def _measure(cmd: Command, peers: list[str], given: dict[str, str], selection, threads: int,
             clocks: dict[str, str], status: dict[str, dict]) -> None:
    """Start the peers' processes (``status``: each one's status, reason and version) and time every
    group of the selection with the peers' cases beside ours, each row appended as it finishes."""
    children: dict[str, Child] = {}
    compared: dict[tuple, dict[str, str]] = {}  # (widths, grid size) -> each peer's equivalence
    with tempfile.TemporaryDirectory(prefix="kan-peers-") as scratch, cmd.interruptible():
        try:
            _start_children(peers, given, threads, clocks, Path(scratch), status, children)
            for name, s in status.items():
                shown = f"{s['version']}" if s["status"] == "ok" else f"not available: {s['reason']}"
                print(f"  {name:9} {shown}", flush=True)
            for group in selection.groups():
                _measure_group(cmd.run, group, peers, children, status, compared, selection.suite, threads)
        finally:
            for child in children.values():
                child.close()


def _measure_group(run, group, peers, children, status, compared, suite, threads: int) -> None:
    from benchmarks.core.case import Case, zoo
    from benchmarks.core.measure import Group, build_candidates, time_group

    gridded = group.cases[0].grid_size if any(c.grid_size for c in group.cases) else None
    peer_cases = [Case(f"{PREFIX}{name}", c.phase, c.device, c.dtype, c.widths, c.batch, gridded)
                  for c in group.cases[:1] for name in peers] if gridded else []
    rows, candidates = build_candidates(Group(group.cases, group.companions), threads=threads)
    for case in peer_cases:
        _add_peer_case(case, children, status, rows, candidates)
    both = Group(tuple(group.cases) + tuple(peer_cases), group.companions)
    measured = time_group(both, candidates, rows, suite, threads=threads)
    shape = (group.cases[0].widths, gridded)
    if gridded and shape not in compared:
        compared[shape] = equivalences(children, group.cases[0], gridded)
    equivalence = compared.get(shape, {})
    for case in both.cases:
        facts = {"machine": machine_label(),
                 "family": "kan" if case.model.startswith(PREFIX) else zoo().entry(case.model).family}
        if case.model.startswith(PREFIX):
            facts["equivalence"] = equivalence.get(case.model.removeprefix(PREFIX))
        m = dataclasses.replace(measured[case.id], facts={**measured[case.id].facts, **facts})
        run.append_jsonl(record.MEASUREMENTS, m.to_json())
        said = m.status if m.status != "ok" else format_seconds(m.median_s)
        print(f"  {case.id:55} {said}", flush=True)


def case_fields(case) -> dict:
    return {"model": case.model, "phase": case.phase, "device": case.device, "dtype": case.dtype,
            "widths": list(case.widths), "batch": case.batch, "grid_size": case.grid_size}


def equivalences(children: dict[str, Child], case, grid_size: int) -> dict[str, str]:
    """For each peer that computes our reference's function: its largest output difference from
    ``kan`` given the same weights, relative to the largest output (float64, 64 inputs in range)."""
    import torch

    from benchmarks.core.case import zoo

    torch.manual_seed(0)
    reference = zoo().build("kan", case.widths, grid_size=grid_size).double()
    inputs = torch.rand(64, case.widths[0], dtype=torch.float64) * 2 - 1  # (64, in)
    with torch.no_grad():
        ours = reference(inputs)  # (64, out)
    layers = reference_layers(reference)
    out = {}
    for name, peer in PEERS.items():
        if peer.load_reference is None:
            out[name] = f"not comparable: {peer.not_comparable}"
            continue
        if name not in children:
            continue
        try:
            theirs = torch.tensor(children[name].ask({"cmd": "outputs", "widths": list(case.widths),
                                                      "grid_size": grid_size, "layers": layers,
                                                      "inputs": inputs.tolist()})["outputs"], dtype=torch.float64)
        except ChildError as e:
            out[name] = f"not compared: {str(e).splitlines()[0]}"
            continue
        error = float((theirs - ours).abs().max() / ours.abs().max())
        out[name] = f"max |{name} - kan| / max |kan| = {error:.2g} (same weights, float64)"
    return out
