"""Timing of the registered models: pytest-benchmark suites, the device-aware timer, the run record.

Modules others reuse:

- :mod:`benchmarks.timer`: ``DeviceTimer`` (a clock that waits for CUDA/MPS once per
  measurement), ``synchronize``, ``first_call``, ``sample``, ``set_threads``;
- :mod:`benchmarks.cases`: ``Case`` (model, phase, device, dtype, widths, batch, grid_size)
  and ``make_step(case)``: the model, inputs and the timed ``fn`` with its untimed ``setup``;
- :mod:`benchmarks.memory`: parameter bytes, bytes saved for backward, device peak memory;
- :mod:`benchmarks.record`: the run folder, the one place that reads and writes it.

Entry point: ``python -m benchmarks --help`` (``nox -s bench``). Nothing here imports
``kan`` at import time: models are asked of ``kan.zoo`` by name when a case is built.
"""
