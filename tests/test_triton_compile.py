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


def compiled(kernel: str, batch: int, in_features: int, out_features: int, cardinal: bool = True,
             dtype: str = "float32") -> dict:
    """``triton_compile.compile_kernel`` of one launch (coeff 8, order 3), in a child without the interpreter."""
    done = child(
        "import json\n"
        "from kan import triton_spline\n"
        "from benchmarks.studies import triton_compile\n"
        f"constants, _, warps = triton_spline.plan({kernel!r}, {batch}, {in_features}, {out_features}, 8, 3, "
        f"cardinal={cardinal}, double={dtype == 'float64'})\n"
        "print(json.dumps(constants.get('STORED')))\n"
        f"found = triton_compile.compile_kernel({kernel!r}, constants, {dtype!r}, 90, warps, "
        f"triton_spline.NUM_STAGES, {{'B': {batch}, 'IN': {in_features}, 'OUT': {out_features}}})\n"
        "print(json.dumps(found))\n")
    assert done.returncode == 0, done.stderr[-2000:]
    stored, found = done.stdout.strip().splitlines()[-2:]
    return dict(json.loads(found), stored=json.loads(stored))


@pytest.mark.parametrize("cardinal", [True, False])
def test_a_kernel_compiles_for_sm_90_and_reports_its_registers(cardinal):
    found = compiled("local_bases", 64, 3, 5, cardinal)
    assert 0 < found["registers"] <= 255 and found["spill_stores"] >= 0 and found["shared"] >= 0
    assert found["compile_s"] > 0
    assert found["loop_instructions"] is None  # the local bases: no loop


@pytest.mark.parametrize("kernel,shape,stored", [("forward", (64, 64, 64), False),
                                                 ("forward", (8192, 1024, 1024), True),
                                                 ("weight_grad", (8192, 1024, 1024), True),
                                                 ("input_grad", (64, 64, 64), None)])
def test_the_dense_kernels_compile_in_float64(kernel, shape, stored):
    """tl.dot of float64 tiles into a float64 accumulator: the product's type is the accumulator's
    (Triton 3.6 takes float32 unless told, and refuses the pair); evaluated and stored bases."""
    found = compiled(kernel, *shape, dtype="float64")
    assert found["stored"] is stored
    assert 0 < found["registers"] <= 255 and found["loop_instructions"] > 0


def test_a_kernels_main_loop_is_counted_from_its_machine_code():
    found = compiled("gather_forward", 64, 3, 64)
    # a 16 x 64 tile over 256 threads: 4 outputs a thread, order + 1 = 4 bases and SiLU each
    assert found["loop_fma"] == 4 * 5
    assert found["loop_instructions"] > found["loop_fma"] and found["loop_loads"] > 0


SASS = """
        /*0000*/                   MOV R1, c[0x0][0x28] ;
.L_x_0:
        /*0010*/                   LDG.E R2, desc[UR4][R4.64] ;
        /*0020*/                   FFMA R3, R2, R2, R3 ;
        /*0030*/                   DFMA R6, R8, R8, R6 ;
        /*0040*/               @P0 BRA `(.L_x_0) ;
        /*0050*/                   ISETP.GE.AND P1, PT, R0, 0x10, PT ;
.L_x_1:
        /*0060*/                   LDG.E.128 R8, desc[UR4][R10.64] ;
        /*0070*/              @!P1 BRA `(.L_x_1) ;
        /*0080*/                   EXIT ;
.L_x_2:
        /*0090*/                   BRA `(.L_x_2);
"""


OUTER = """
.L_x_5:
        /*0000*/                   LDG.E R2, desc[UR4][R4.64] ;
.L_x_6:
        /*0010*/                   FFMA R3, R2, R2, R3 ;
        /*0020*/               @P0 BRA `(.L_x_6) ;
        /*0030*/                   FFMA R3, R2, R2, R3 ;
        /*0040*/                   MOV R1, R2 ;
        /*0050*/               @P1 BRA `(.L_x_5) ;
"""


def test_main_loop_is_the_innermost_loop_with_the_most_multiply_adds():
    # two innermost loops: 4 instructions with 2 multiply-adds, 2 with none
    assert triton_compile.main_loop(SASS) == {"loop_instructions": 4, "loop_fma": 2, "loop_loads": 1}
    # a loop around another is not innermost, though it holds more multiply-adds
    assert triton_compile.main_loop(OUTER) == {"loop_instructions": 2, "loop_fma": 1, "loop_loads": 0}
    no_loop = SASS.split(".L_x_1:")[0].replace("@P0 BRA `(.L_x_0)", "NOP")
    assert triton_compile.main_loop(no_loop + ".L_x_2:\n        /*0090*/                   BRA `(.L_x_2);\n") == \
        {"loop_instructions": None, "loop_fma": None, "loop_loads": None}


def test_bad_input_is_one_line_errors(capsys):
    assert triton_compile.main(["--orders", "7"]) == 2
    assert "spline orders 1 to 5" in capsys.readouterr().err
    done = child("from benchmarks.studies import triton_compile; raise SystemExit(triton_compile.main([]))",
                 interpret=True)
    assert done.returncode == 2 and "TRITON_INTERPRET=1 is set" in done.stderr, done.stderr[-2000:]
    assert len([line for line in done.stderr.splitlines() if "TRITON_INTERPRET" in line]) == 1
