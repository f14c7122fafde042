"""`python -m benchmarks.peers`: bad input, a peer that cannot be used, the adapters, the page.

The adapters' tests run where `nox -s peers` has made a peer's environment
(`.nox/peer-<name>`), and are skipped with that reason elsewhere (CI installs no peer).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from benchmarks.core import record
from benchmarks.core.case import Case
from benchmarks.peers import catalog, cli

ROOT = Path(__file__).resolve().parents[1]


def test_an_unknown_peer_is_one_line_naming_the_valid_ones(capsys):
    assert cli.main(["--peer", "flashkan,nosuch"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "unknown peer 'nosuch'; valid peers: pykan, flashkan, inkan" in err


@pytest.mark.slow
def test_a_peer_that_cannot_be_used_is_recorded_and_the_run_goes_on(tmp_path, monkeypatch, capsys):
    """flashkan's 'environment' here is the harness's interpreter with flashkan made unimportable;
    pykan's does not exist at all. Both are 'not available' with the reason; our models are measured."""
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path))
    broken = tmp_path / "python-without-flashkan"
    # the child is started as PYTHON -I -c CODE CONFIG: run CODE with flashkan blocked
    broken.write_text(f"#!/bin/sh\nexec {sys.executable} -I -c "
                      "\"import sys; sys.modules['flashkan'] = None; exec(sys.argv.pop(1))\" \"$3\" \"$4\"\n")
    broken.chmod(0o755)
    status = cli.main(["--peer", "flashkan,pykan", f"--python=flashkan={broken}",
                       f"--python=pykan={tmp_path / 'none' / 'bin' / 'python'}",
                       "--suite", "smoke", "--model", "kan,mlp", "--threads", "1"])
    assert status == 0, capsys.readouterr().err
    (run,) = record.runs(tmp_path)
    table = run.read_bench_table()
    peers = table[table["model"].str.startswith("peer:")]
    assert set(peers["status"]) == {"not available"} and len(peers) == 6  # 2 peers x 3 phases
    flash = peers[peers["model"] == "peer:flashkan"]
    assert flash["reason"].str.contains("cannot import flashkan.network").all()
    assert peers[peers["model"] == "peer:pykan"]["reason"].str.contains("no environment at").all()
    ours = table[~table["model"].str.startswith("peer:")]
    assert set(ours["status"]) == {"ok"} and set(ours["model"]) == {"kan", "mlp"}
    doc = run.read_json("peers.json")
    assert doc["peers"]["flashkan"]["status"] == "not available" and doc["peers"]["flashkan"]["spec"] == "flashkan==0.2.0"

    from reports.render import render

    page = render(str(run.path)).read_text()
    assert "peer:flashkan" in page and "not available" in page


def installed(name: str) -> Path | None:
    python = ROOT / ".nox" / f"peer-{name}" / "bin" / "python"
    return python if python.exists() else None


@pytest.mark.slow
@pytest.mark.parametrize("name", list(catalog.PEERS))
def test_each_adapter_builds_the_right_shapes(name):
    python = installed(name)
    if python is None:
        pytest.skip(f"{name} is not installed here (nox -s peers makes .nox/peer-{name})")
    with tempfile.TemporaryDirectory() as scratch:
        child = cli.start(name, python, threads=1, clocks={"cpu": "cpu"}, scratch=Path(scratch))
        try:
            hello = child.receive()["hello"]
            assert hello["status"] == "ok" and hello["version"] == catalog.PEERS[name].version, hello
            case = Case(f"peer:{name}", "forward", "cpu", "float32", (4, 3, 2), batch=8, grid_size=5)
            built = child.ask({"cmd": "build", "cases": [cli.case_fields(case)]})["cases"][case.id]
            assert built["status"] == "ok", built
            assert built["parameters"] > 0 and built["saved_bytes"] > 0
            call = child.ask({"cmd": "call", "case": case.id})
            assert call["status"] == "ok" and call["seconds"] > 0
            if catalog.PEERS[name].load_reference is not None:
                from kan import zoo

                torch.manual_seed(0)
                reference = zoo.build("kan", [4, 3, 2], grid_size=5).double()
                x = torch.rand(16, 4, dtype=torch.float64) * 2 - 1
                out = child.ask({"cmd": "outputs", "widths": [4, 3, 2], "grid_size": 5,
                                 "layers": catalog.reference_layers(reference), "inputs": x.tolist()})["outputs"]
                theirs = torch.tensor(out, dtype=torch.float64)  # (16, 2)
                assert theirs.shape == (16, 2)
                with torch.no_grad():
                    assert torch.allclose(theirs, reference(x), rtol=1e-6, atol=1e-7)
        finally:
            child.close()


def test_the_reference_layers_travel_as_plain_lists():
    from kan import zoo

    model = zoo.build("kan", [4, 3, 2], grid_size=5)
    layers = catalog.reference_layers(model)
    assert [(len(s), len(s[0]), len(s[0][0]), len(b), len(b[0])) for s, b in layers] == [(3, 4, 8, 3, 4),
                                                                                         (2, 3, 8, 2, 3)]
    json.dumps(layers)  # what crosses to a peer's process


# A stand-in for a peer package, loaded into the peer's process before the child starts: it
# replaces flashkan's catalog entry with a model whose forward sleeps. A sleep takes wall time
# and next to no CPU time, so the peer's samples tell which clock its process timed them by.
FAKE_PEER = '''
import dataclasses, time
from importlib.metadata import version

import torch

SLEEP_S = {sleep}


class Sleepy(torch.nn.Module):
    def __init__(self, widths, grid_size):
        super().__init__()
        self.linear = torch.nn.Linear(widths[0], widths[-1])

    def forward(self, x):
        time.sleep(SLEEP_S)
        return self.linear(x)


def install():
    from benchmarks.peers import catalog

    catalog.PEERS["flashkan"] = dataclasses.replace(
        catalog.PEERS["flashkan"], name="torch", spec="torch==" + version("torch"), module="torch",
        build=Sleepy, load_reference=None, not_comparable="a stand-in")
'''
SLEEP_S = 0.04


def fake_peer_python(tmp_path: Path) -> Path:
    """An 'interpreter' for the peer's environment: the harness's, with the stand-in installed
    into the child (started as PYTHON -I -c CODE CONFIG) once CODE has set its import path."""
    (tmp_path / "fakepeer.py").write_text(FAKE_PEER.format(sleep=SLEEP_S))
    prelude = (f"import sys; sys.path.append({str(tmp_path)!r}); code = sys.argv.pop(1); "
               "head, _, tail = code.partition('from benchmarks.peers.child'); exec(head); "
               "import fakepeer; fakepeer.install(); exec('from benchmarks.peers.child' + tail)")
    python = tmp_path / "python-with-a-fake-peer"
    python.write_text(f"#!/bin/sh\nexec {sys.executable} -I -c \"{prelude}\" \"$3\" \"$4\"\n")
    python.chmod(0o755)
    return python


def test_at_one_thread_a_peer_and_our_models_are_timed_by_the_same_cpu_clock(tmp_path, monkeypatch, capsys):
    """`--threads 1` times our models by the process's CPU time; the peer's process must time its
    calls by the same clock, or a ratio would pair CPU time with wall time. The peer's forward
    sleeps SLEEP_S: on the CPU clock its forward takes a small part of that, on the wall clock more."""
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    status = cli.main(["--peer", "flashkan", f"--python=flashkan={fake_peer_python(tmp_path)}",
                       "--suite", "smoke", "--model", "mlp,mlp-param", "--threads", "1"])
    assert status == 0, capsys.readouterr().err
    (run,) = record.runs(tmp_path / "results")
    table = run.read_bench_table()
    assert set(table["status"]) == {"ok"}, table[["model", "phase", "status", "reason"]]
    assert set(table["model"]) == {"mlp", "mlp-param", "peer:flashkan"}  # mlp-param: a grid, so a peer row
    assert set(table["clock"]) == {"cpu"} and set(table["threads"]) == {1}  # both sides, every phase
    peer = table[(table["model"] == "peer:flashkan") & table["phase"].isin(["forward", "train"])]
    assert len(peer) == 2 and (peer["median_s"] < SLEEP_S / 2).all(), peer[["phase", "median_s"]]
    assert run.read_json("peers.json")["clocks"] == {"cpu": "cpu"}


def test_a_call_timed_by_another_clock_than_the_runs_fails_the_candidate():
    """A peer's process that timed a call by the wall clock, in a run timed by the CPU clock: the
    call is refused, never paired with the others' samples."""
    from benchmarks.core import protocol
    from benchmarks.core.timer import CpuTimer

    class Remote:
        def timed_call(self):
            return {"status": "ok", "reason": "", "seconds": 0.01, "switches": 0, "cpu_s": 0.01, "clock": "wall"}

    c = protocol.Candidate("peer:x", Remote())
    protocol.turns([c], CpuTimer(), repeats=2, warmup=0)
    assert c.status == "error" and c.reason == "timed by the wall clock, not the run's cpu clock"
    assert c.samples == []
