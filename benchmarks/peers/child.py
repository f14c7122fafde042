"""The process that builds and times one side's models for ``python -m benchmarks.peers``.

A peer's process runs in that peer's virtual environment with an import path that holds
the harness (a link to ``benchmarks/``) but not our ``kan`` package, so that pykan's
``kan`` is the one imported; our models' process is the harness's own. It speaks JSON
lines on stdin/stdout::

    child  -> {"hello": {"side", "version", "torch", "threads", "clocks", "status": "ok" | "not available", "reason"}}
    parent -> {"cmd": "build", "cases": [{case fields}, ...]}
    child  -> {"cases": {case id: {"status", "reason", <probe figures>}}}
    parent -> {"cmd": "call", "case": id}            one timed call, by the core's protocol
    child  -> {"status", "reason", "seconds", "switches", "cpu_s", "clock"}
    parent -> {"cmd": "outputs", "widths", "grid_size", "layers", "inputs"}     (peers that compare)
    child  -> {"outputs": [[...]]} or {"error": "..."}
    parent -> {"cmd": "quit"}
"""

from __future__ import annotations

import json
import sys

from benchmarks.core.cli import one_line


def serve(argv: list[str] | None = None) -> None:
    """The child's loop. argv[0] is a JSON object: {"side": "ours" or a peer's name, "threads": n,
    "clocks": {device: "wall" | "cpu"}}: the parent's run decided the threads and each device's
    clock, and every call here is timed with them, so that its samples pair with the parent's."""
    from benchmarks.core.process import channel

    config = json.loads((argv if argv is not None else sys.argv[1:])[0])
    say = channel()
    from benchmarks.core.timer import using_threads

    threads, clocks = int(config["threads"]), config["clocks"]
    with using_threads(threads):
        _serve(config["side"], threads, clocks, say)


def _serve(side: str, threads: int, clocks: dict[str, str], say) -> None:
    import torch

    from benchmarks.core import protocol
    from benchmarks.core.case import Case, make_step
    from benchmarks.core.measure import probe
    from benchmarks.core.process import commands
    from benchmarks.core.timer import make_clock
    from benchmarks.peers import catalog

    peer = catalog.PEERS.get(side)
    problem = catalog.importable(peer) if peer is not None else None
    version = None
    if peer is not None and problem is None:
        from importlib.metadata import PackageNotFoundError, version as installed

        try:
            version = installed(peer.name)
        except PackageNotFoundError:
            version = None
        if version != peer.version:
            problem = f"{peer.name} {version} is installed here, the peers' session pins {peer.spec}"
    say({"hello": {"side": side, "version": version, "torch": torch.__version__, "threads": threads, "clocks": clocks,
                   "status": "not available" if problem else "ok", "reason": problem or ""}})
    steps: dict[str, object] = {}
    timers: dict[str, object] = {}

    def build(command: dict) -> dict:
        built = {}
        for fields in command["cases"]:
            case = Case(**{**fields, "widths": tuple(fields["widths"])})
            try:
                model = peer.build(case.widths, case.grid_size) if peer is not None else None
                step = make_step(case, model=model)
                if case.device not in clocks:
                    raise ValueError(f"no clock for device {case.device!r} in this run")
                timers[case.id] = make_clock(clocks[case.device], case.device)
                built[case.id] = {"status": "ok", "reason": "", **probe(step, case, threads)}
                steps[case.id] = step
            except Exception as e:  # unsupported option, out of memory, no CUDA support, ...
                built[case.id] = {"status": "not available", "reason": one_line(e)}
        return {"cases": built}

    def call(command: dict) -> dict:
        return protocol.timed_call(steps[command["case"]], timers[command["case"]])

    def outputs(command: dict) -> dict:
        try:
            model = peer.build(tuple(command["widths"]), command["grid_size"]).double()
            peer.load_reference(model, command["layers"])
            with torch.no_grad():
                out = model(torch.tensor(command["inputs"], dtype=torch.float64))
            return {"outputs": out.tolist()}
        except Exception as e:
            return {"error": one_line(e)}

    commands(say, {"build": build, "call": call, "outputs": outputs})


def main() -> None:
    """Entry point of the child process (see ``benchmarks.core.process.child_main``)."""
    from benchmarks.core import process

    process.child_main(serve)
