"""``python -m benchmarks.studies.triton_compile``: kan-fast's Triton kernels compiled for a GPU, on any machine.

    python -m benchmarks.studies.triton_compile [--arch 90] [--orders 3] [--dtype float32]
                                                [--shapes all|small|big] [--sms 132]

Triton's compiler and the ptxas it ships run on the CPU, so what a kernel costs in registers can
be known without a GPU. For every layer of every shape and grid of kan-fast's CUDA targets
(``benchmarks.studies.targets``, ``TARGETS["cuda"]``), each kernel that layer launches, for
both contractions (dense and gather), is compiled for the compute capability ``--arch`` (90:
H100 and H200) with the constants, tiles and warps of the launch code
(``kan.triton_spline.plan``), which sizes some tiles by the GPU's SMs (``--sms``). Each row
gives the launch's ``programs`` (a launch of fewer programs than SMs leaves SMs idle), and ptxas
reports, per kernel:

- ``registers`` per thread (at most 255);
- ``spill_stores`` and ``spill_loads``: bytes of registers spilled to local memory. A kernel
  that spills waits on memory for its own variables, and is slow on any GPU;
- ``stack``: the stack frame, in bytes;
- ``shared``: the shared memory Triton allocated, in bytes;
- ``loop_instructions``, ``loop_fma``, ``loop_loads``: the kernel's main loop in its machine code
  (nvdisasm, which ships beside ptxas; of the innermost loops, the one with the most
  multiply-adds), per thread and iteration: all its instructions, its
  multiply-adds and its loads from global memory. A warp issues every instruction of the loop,
  so where multiply-adds are a small share of them, the loop costs that many times its arithmetic;
- ``compile_s``: the compile time on this machine (a cache of the study's own, so nothing is
  read from an earlier compile), which a GPU run pays once per kernel and constants.

The grid's knots decide between the cardinal recursion and de Boor's triangle (``cardinal``,
as the layer finds it for float32 knots on (-1, 1)). Kernels with the same constants are
compiled once. The rows go to ``triton_compile.csv`` in the run folder and print as a table.
Nothing here says how fast a kernel runs: only a GPU says that
(``python -m benchmarks.studies.triton_gpu``).
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Optional

from benchmarks.core import cli
from benchmarks.core.cli import Parser, UsageError
from benchmarks.core.command import Command, run_command
from benchmarks.core.units import text_table

ARCHES = (80, 86, 89, 90)
DTYPES = {"float32": "fp32", "float64": "fp64"}
CSV = "triton_compile"
# the kernels' index and count tensors; every other pointer is of the layer's dtype
INDEX_POINTERS = {"span_ptr": "*i32", "starts_ptr": "*i32", "rows_ptr": "*i64",
                  "finite_in_ptr": "*i1", "finite_out_ptr": "*i32"}
PTXAS_INFO = re.compile(
    r"(?P<stack>\d+) bytes stack frame, (?P<spill_stores>\d+) bytes spill stores, "
    r"(?P<spill_loads>\d+) bytes spill loads.*?Used (?P<registers>\d+) registers", re.S)


def points(shapes: str) -> list[tuple[list[int], int, int]]:
    """(widths, batch, grid) of the CUDA targets, as the GPU study takes them."""
    from benchmarks.studies import triton_gpu

    return triton_gpu.SHAPES[shapes]


def cardinal(grid_size: int, order: int) -> bool:
    """Whether a layer's float32 knots on (-1, 1) at this grid are cardinal (``kan.fast.is_cardinal``)."""
    from kan.fast import FastBSplineKANLinear

    return FastBSplineKANLinear(1, 1, grid_size=grid_size, spline_order=order).knot_geometry().cardinal


def parse_ptxas(log: str) -> dict:
    """registers, spill_stores, spill_loads and stack from ``ptxas -v``'s report of one kernel."""
    found = PTXAS_INFO.search(log)
    if found is None:
        raise ValueError(f"no register report in ptxas's output: {log.strip()[-200:]!r}")
    return {key: int(value) for key, value in found.groupdict().items()}


def ptxas_path(arch: int) -> str:
    """The ptxas that Triton itself runs for this compute capability."""
    from triton.backends.nvidia import compiler

    return compiler.get_ptxas(arch).path


def compile_kernel(kernel: str, constants: dict, dtype: str, arch: int, num_warps: int,
                   num_stages: int, sizes: Optional[dict] = None) -> dict:
    """Compile one kernel for ``arch``; its resources (``parse_ptxas``), shared memory and compile time.

    ``sizes``: the launch's B, IN and OUT. As Triton specialises a launch (its pointers are 16-byte
    aligned, as torch allocates them; an integer that 16 divides), the compile is told so, which
    lets it vectorise loads; without ``sizes`` no integer is taken as divisible."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from kan import triton_spline

    function = triton_spline.jit_function(kernel)
    signature, attrs = {}, {}
    for index, name in enumerate(inspect.signature(function.fn).parameters):
        if name.endswith("_ptr") or (sizes or {}).get(name, 1) % 16 == 0:
            attrs[(index,)] = [["tt.divisibility", 16]]
        if name in constants:
            signature[name] = "constexpr"
        elif name in INDEX_POINTERS:
            signature[name] = INDEX_POINTERS[name]
        else:  # the kernels' pointers end in _ptr, their other arguments are 32-bit sizes
            signature[name] = f"*{DTYPES[dtype]}" if name.endswith("_ptr") else "i32"
    started = time.perf_counter()
    compiled = triton.compile(ASTSource(fn=function, signature=signature, constexprs=constants, attrs=attrs),
                              target=GPUTarget("cuda", arch, 32),
                              options={"num_warps": num_warps, "num_stages": num_stages})
    seconds = time.perf_counter() - started
    ptx = compiled.asm["ptx"]
    gpu = re.search(r"\.target\s+(\S+)", ptx).group(1)
    with tempfile.TemporaryDirectory() as folder:
        source = os.path.join(folder, "kernel.ptx")
        with open(source, "w") as f:
            f.write(ptx)
        done = subprocess.run([ptxas_path(arch), "-v", f"--gpu-name={gpu}", source, "-o",
                               os.path.join(folder, "kernel.cubin")], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"ptxas failed: {(done.stderr or done.stdout).strip()[-300:]}")
        machine_code = disassemble(os.path.join(folder, "kernel.cubin"), arch)
    return {**parse_ptxas(done.stderr + done.stdout), "shared": int(compiled.metadata.shared),
            "compile_s": round(seconds, 2), **main_loop(machine_code)}


def disassemble(cubin: str, arch: int) -> str:
    """The machine code (SASS) of a cubin, by the nvdisasm that ships beside Triton's ptxas."""
    tool = os.path.join(os.path.dirname(ptxas_path(arch)), "nvdisasm")
    done = subprocess.run([tool, "-c", cubin], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"nvdisasm failed: {(done.stderr or done.stdout).strip()[-300:]}")
    return done.stdout


SASS_LABEL = re.compile(r"^\s*\.(L_x_\d+):")
SASS_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)([^;]*);")
SASS_TARGET = re.compile(r"`\(\.(L_x_\d+)\)")


def main_loop(sass: str) -> dict:
    """The instructions of a kernel's main loop: of the innermost loops (ranges of machine code that
    a branch jumps back to the start of, holding no other), the one with the most multiply-adds,
    then the longest. ``loop_instructions`` in all, ``loop_fma`` multiply-adds (FFMA, DFMA) and
    ``loop_loads`` loads from global memory (LDG), each per thread and iteration; None for a kernel
    without a loop. Every thread of a warp issues the same instructions, so what a loop costs is its
    instructions, not its multiply-adds alone."""
    opcodes: list[str] = []
    labels: dict[str, int] = {}
    loops = []
    for line in sass.splitlines():
        label = SASS_LABEL.match(line)
        if label:
            labels[label.group(1)] = len(opcodes)
            continue
        instruction = SASS_INSTRUCTION.match(line)
        if instruction is None:
            continue
        opcode, operands = instruction.groups()
        target = SASS_TARGET.search(operands) if opcode.startswith("BRA") else None
        # a branch to itself is the trap that ends every kernel, not a loop
        if target and labels.get(target.group(1), len(opcodes)) < len(opcodes):
            loops.append((labels[target.group(1)], len(opcodes)))
        opcodes.append(opcode.split(".")[0])
    if not loops:
        return {"loop_instructions": None, "loop_fma": None, "loop_loads": None}
    innermost = [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]
    fma = {loop: sum(op in ("FFMA", "DFMA") for op in opcodes[loop[0]:loop[1] + 1]) for loop in innermost}
    start, end = max(innermost, key=lambda loop: (fma[loop], loop[1] - loop[0]))
    body = opcodes[start:end + 1]
    return {"loop_instructions": len(body), "loop_fma": fma[(start, end)], "loop_loads": body.count("LDG")}


def plan_rows(shapes: str, orders: tuple[int, ...], dtype: str, sms: int = 132) -> list[dict]:
    """One row per (shape, layer, contraction, kernel) to compile, with the launch code's constants."""
    from kan import triton_spline
    from kan.fast import gathers

    rows = []
    for widths, batch, grid_size in points(shapes):
        for order in orders:
            knots_cardinal = cardinal(grid_size, order) if dtype == "float32" else True
            coeff = grid_size + order
            for in_features, out_features in dict.fromkeys(zip(widths, widths[1:])):  # each distinct layer once
                for contraction in ("dense", "gather"):
                    if contraction == "gather" and not gathers("gather", grid_size, order, False, triton=True):
                        continue
                    stored = triton_spline.stores_bases(batch, in_features, out_features, coeff)
                    for kernel in triton_spline.launched(contraction == "gather", stored):
                        constants, programs, warps = triton_spline.plan(
                            kernel, batch, in_features, out_features, coeff, order, knots_cardinal,
                            double=dtype == "float64", sms=sms)
                        rows.append({"widths": list(widths), "batch": batch, "grid_size": grid_size,
                                     "order": order, "layer": f"{in_features}->{out_features}",
                                     "contraction": contraction, "kernel": kernel, "cardinal": knots_cardinal,
                                     "programs": programs[0] * programs[1], "warps": warps,
                                     "constants": constants})
    return rows


def parser() -> Parser:
    p = Parser(prog="python -m benchmarks.studies.triton_compile", description=__doc__.split("\n")[0],
               error_prefix="triton_compile: ")
    p.add_argument("--arch", type=int, choices=ARCHES, default=90,
                   help="compute capability to compile for (90: H100, H200; 80: A100; 89: L4, L40S, RTX 4090)")
    p.add_argument("--orders", type=cli.int_list("--orders"), default=(3,), metavar="K,K",
                   help="spline orders, 1 to 5 (default 3, the targets')")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--shapes", choices=("all", "small", "big"), default="all")
    p.add_argument("--sms", type=cli.count(), default=132,
                   help="streaming multiprocessors the launches are sized for, as the launch code sizes them "
                        "for the GPU it runs on (132: H100 SXM, H200; 108: A100)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    return run_command("triton-compile", parser(), argv, _study)


def _study(args, cmd: Command) -> int:
    from kan import fast

    orders = tuple(dict.fromkeys(args.orders))
    if any(not 1 <= order <= 5 for order in orders):
        raise UsageError(f"--orders: the kernels take spline orders 1 to 5, not {', '.join(map(str, orders))}")
    kernels = fast.triton_kernels()
    if kernels is None:
        raise UsageError("Triton does not import here")
    if kernels.interpreted():
        raise UsageError("TRITON_INTERPRET=1 is set: the interpreter compiles nothing; unset it")
    try:
        ptxas_path(args.arch)
    except Exception as e:  # an install without the NVIDIA backend
        raise UsageError(f"Triton's ptxas is not found here ({cli.one_line(e)})")
    planned = plan_rows(args.shapes, orders, args.dtype, args.sms)
    # a cache of its own, so that compile_s is a compile's time, not a read of an earlier one
    os.environ["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix="kan-triton-compile-")
    run = cmd.open(label="triton-compile", settings={"arch": args.arch, "orders": list(orders), "dtype": args.dtype,
                                                    "shapes": args.shapes, "sms": args.sms, "triton": __import__("triton").__version__,
                                                    "ptxas": ptxas_version(args.arch)})
    print(f"triton_compile: {len(planned)} kernel launches of kan-fast's CUDA targets, compiled for sm_{args.arch}; "
          f"run folder {run.path}", flush=True)
    compiled: dict[tuple, dict] = {}
    rows = []
    with cmd.interruptible():
        for row in planned:
            in_features, out_features = map(int, row["layer"].split("->"))
            sizes = {"B": row["batch"], "IN": in_features, "OUT": out_features}
            key = (row["kernel"], row["warps"], tuple(sorted(row["constants"].items())),
                   tuple(size % 16 == 0 for size in sizes.values()))
            if key not in compiled:
                try:
                    compiled[key] = compile_kernel(row["kernel"], row["constants"], args.dtype, args.arch,
                                                   row["warps"], kernels.NUM_STAGES, sizes)
                except Exception as e:  # one kernel's failure is its row, not the end of the study
                    compiled[key] = {"error": cli.one_line(e)}
                print(f"  {row['kernel']:>17} {row['layer']:>11} grid {row['grid_size']:<3} order {row['order']} "
                      f"{_resources(compiled[key])}", flush=True)
            rows.append({**{k: v for k, v in row.items() if k != "constants"}, **compiled[key],
                         "constants": row["constants"]})
    run.write_rows(CSV, rows)
    print()
    print(text_table([_shown(row) for row in rows], right=("programs", "registers", "spilled", "shared", "compile_s", "loop")))
    spilling = sorted({row["kernel"] for row in rows if row.get("spill_stores")})
    failed = [row for row in rows if "error" in row]
    print()
    print(f"spilling registers: {', '.join(spilling) if spilling else 'none'}")
    if cmd.interrupted:
        print(f"interrupted: kept the {len(rows)} finished rows")
    return 1 if failed else 0


def ptxas_version(arch: int) -> str:
    try:
        return subprocess.run([ptxas_path(arch), "--version"], capture_output=True, text=True).stdout.strip().splitlines()[-1]
    except Exception as e:
        return f"unknown ({cli.one_line(e)})"


def _resources(found: dict) -> str:
    if "error" in found:
        return f"error: {found['error']}"
    loop = "" if found.get("loop_instructions") is None else \
        f", loop {found['loop_instructions']} instructions ({found['loop_fma']} fma, {found['loop_loads']} loads)"
    return (f"{found['registers']} registers, {found['spill_stores']} B spilled, {found['shared']} B shared, "
            f"{found['compile_s']:.1f} s{loop}")


def _shown(row: dict) -> dict:
    error = row.get("error")
    return {"shape": f"[{','.join(map(str, row['widths']))}] b{row['batch']} g{row['grid_size']}",
            "order": str(row["order"]), "layer": row["layer"], "contraction": row["contraction"],
            "kernel": row["kernel"], "knots": "cardinal" if row["cardinal"] else "de Boor",
            "programs": str(row["programs"]), "warps": str(row["warps"]),
            "registers": "-" if error else str(row["registers"]),
            "spilled": "-" if error else f"{row['spill_stores']} B",
            "shared": "-" if error else f"{row['shared']} B",
            "compile_s": "-" if error else f"{row['compile_s']:.1f}",
            "loop": "-" if error or row.get("loop_instructions") is None else
            f"{row['loop_instructions']} ({row['loop_fma']} fma, {row['loop_loads']} ld)",
            "note": f"error: {error}" if error else ""}


if __name__ == "__main__":
    sys.exit(main())
