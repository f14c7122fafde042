"""`python -m benchmarks` on bad input: one line naming the bad value and the valid ones, exit 2."""

from __future__ import annotations

import pytest
import torch

from benchmarks.suite.cli import main


@pytest.fixture(autouse=True)
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("KAN_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def _error(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize(
    "argv, bad, valid",
    [
        (["--model", "kan,nope"], "unknown model 'nope'", "valid models: kan, kan-fast, fourier-kan"),
        (["--device", "tpu"], "unknown device 'tpu'", "valid devices: cpu, cuda, mps"),
        (["--device", "cuda:1"], "a device type, not an index: 'cuda:1'", "CUDA_VISIBLE_DEVICES=1"),
        (["--suite", "huge"], "unknown suite 'huge'", "valid suites: smoke, quick, full"),
        (["--dtype", "float8"], "unknown dtype 'float8'", "valid dtypes: float32, bfloat16"),
        (["--threads", "0"], "threads must be a positive integer", ""),
        (["--suite", "smoke", "-k", "no-such-case"], "no case of the selection has 'no-such-case' in its id",
         "ids look like kan-forward-cpu-float32-2x5x1-b64-g5"),
    ],
)
def test_bad_value_is_one_line_and_exit_2(argv, bad, valid, capsys, results):
    assert main(argv) == 2
    line = _error(capsys)
    assert line.startswith("error: ") and bad in line and valid in line
    assert not results.exists()  # nothing was run, no run folder made


def test_unknown_option_and_malformed_number_are_one_line(capsys):
    for argv in (["--modle", "kan"], ["--threads", "many"]):
        assert main(argv) == 2
        assert _error(capsys).startswith("error: ")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_a_device_asked_for_but_absent_is_an_error(capsys):
    assert main(["--device", "cuda"]) == 2
    line = _error(capsys)
    assert "device 'cuda' was asked for but cuda is not available" in line and "devices here: cpu" in line


def test_help_lists_the_choices(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for word in ["smoke", "quick", "full", "cpu, cuda, mps", "float32, bfloat16", "kan-fast", "mlp-param"]:
        assert word in out


def test_the_first_line_counts_the_cases_this_machine_times_and_the_absent_devices_apart():
    """On a laptop without a GPU the quick suite's first line said "168 cases (126 on devices not present here,
    skipped)" and then timed 42: it names the number timed here, and which devices the rest were for."""
    from benchmarks.suite import cli, suites

    selection = suites.select("quick", ["kan", "mlp", "mlp-param"])
    cases, present = selection.cases(), selection.present_devices()
    here = sum(1 for c in cases if c.device in present)
    missing = [d for d in selection.devices if d not in present]
    line = cli.opening(selection, here, 0, [], "1 (--threads)", "results/x")
    if missing:
        assert line.startswith(f"bench: suite quick, {here} cases on {', '.join(present)} ({len(cases) - here} more "
                               f"on {', '.join(missing)}, not present here: skipped); threads 1 (--threads)")
    else:
        assert line.startswith(f"bench: suite quick, {here} cases; threads")
    assert line.endswith("run folder results/x")


def test_the_clock_is_said_once_with_what_it_counts():
    from benchmarks.suite.cli import clock_words

    assert clock_words(["cpu"]) == ("; clock: cpu, the process's CPU time (one thread on the CPU: time the OS gave "
                                    "other processes is not counted)")
    assert clock_words(["cpu", "wall"]).endswith("is not counted); wall")
    assert clock_words([]) == ""


def test_busy_machine_warning():
    from benchmarks.core.cli import busy_warning

    assert busy_warning([0.3, 0.2, 0.1], 2) is None
    assert busy_warning(None, 2) is None
    assert "load average 4.8 on 2 cores" in busy_warning([4.8, 4.0, 3.0], 2)
    assert "--threads 1 helps" in busy_warning([4.8, 4.0, 3.0], 2)
    # a run already on one thread is not told to take one
    said = busy_warning([4.8, 4.0, 3.0], 2, threads=1)
    assert "load average 4.8 on 2 cores" in said and "--threads 1" not in said
