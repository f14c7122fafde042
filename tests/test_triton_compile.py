"""`python -m benchmarks.studies.triton_compile`: kan-fast's Triton kernels compiled for an H100/H200
(sm_90) by Triton's compiler and ptxas, which run on the CPU; no GPU needed. Skipped where Triton's
NVIDIA backend is not installed.

The compiles run in child processes without TRITON_INTERPRET: tests/test_triton.py sets it in this
process on a machine without CUDA, and the interpreter compiles nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

triton = pytest.importorskip("triton")

from benchmarks.studies import triton_compile  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

try:
    triton_compile.ptxas_path(90)
except Exception as e:  # pragma: no cover - an install without the NVIDIA backend
    pytest.skip(f"Triton's ptxas is not here: {e}", allow_module_level=True)

# What ptxas -v printed for one kernel (recorded from ptxas 13.4, --gpu-name=sm_90a).
RECORDED = """ptxas info    : 11 bytes gmem
ptxas info    : Compiling entry function '_gather_input_grad_kernel' for 'sm_90a'
ptxas info    : Function properties for _gather_input_grad_kernel
    3800 bytes stack frame, 8004 bytes spill stores, 8608 bytes spill loads
ptxas info    : Used 32 registers, used 1 barriers, 3800 bytes cumulative stack size
ptxas info    : Compile time = 840.901 ms
"""


def test_parse_ptxas_reads_registers_and_spills():
    assert triton_compile.parse_ptxas(RECORDED) == {"stack": 3800, "spill_stores": 8004, "spill_loads": 8608,
                                                    "registers": 32}
    with pytest.raises(ValueError, match="no register report"):
        triton_compile.parse_ptxas("ptxas fatal   : Unsupported .version 9.4")


def test_the_plan_follows_the_launch_code():
    """Each layer of the small targets once, both contractions, the launch code's own constants."""
    from kan import triton_spline

    rows = triton_compile.plan_rows("small", (3,), "float32")
    at = {(r["grid_size"], r["layer"], r["contraction"], r["kernel"]): r for r in rows if r["batch"] == 4096}
    forward = at[(5, "784->64", "dense", "forward")]
    assert forward["cardinal"] and forward["constants"] == triton_spline.plan("forward", 4096, 784, 64, 8, 3)[0]
    gathered = at[(50, "784->64", "gather", "gather_input_grad")]
    assert not gathered["cardinal"]  # float32 knots of grid 50 on (-1, 1) are not evenly spaced to rounding
    assert gathered["constants"]["CARDINAL"] is False and gathered["programs"] == (4096 // 16) * 784
    layers = [r["layer"] for r in rows if r["widths"] == [256, 256, 256, 256] and r["kernel"] == "forward"]
    assert layers == ["256->256"]  # three equal layers, compiled once


def child(code: str, interpret: bool = False) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    if interpret:
        env["TRITON_INTERPRET"] = "1"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env, cwd=ROOT)


@pytest.mark.parametrize("cardinal", [True, False])
def test_a_kernel_compiles_for_sm_90_and_reports_its_registers(cardinal):
    code = (
        "import json\n"
        "from kan import triton_spline\n"
        "from benchmarks.studies import triton_compile\n"
        f"constants, _, warps = triton_spline.plan('gather_forward', 64, 3, 5, 8, 3, cardinal={cardinal})\n"
        "found = triton_compile.compile_kernel('gather_forward', constants, 'float32', 90, warps, "
        "triton_spline.NUM_STAGES)\n"
        "print(json.dumps(found))\n")
    done = child(code)
    assert done.returncode == 0, done.stderr[-2000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert 0 < found["registers"] <= 255 and found["spill_stores"] >= 0 and found["shared"] >= 0
    assert found["compile_s"] > 0


def test_bad_input_is_one_line_errors(capsys):
    assert triton_compile.main(["--orders", "7"]) == 2
    assert "spline orders 1 to 5" in capsys.readouterr().err
    done = child("from benchmarks.studies import triton_compile; raise SystemExit(triton_compile.main([]))",
                 interpret=True)
    assert done.returncode == 2 and "TRITON_INTERPRET=1 is set" in done.stderr, done.stderr[-2000:]
    assert len([line for line in done.stderr.splitlines() if "TRITON_INTERPRET" in line]) == 1
