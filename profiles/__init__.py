"""Where the time goes: cProfile, py-spy and torch.profiler runs, and the table they feed.

    python -m profiles --model kan --phase train loop      # or: nox -s profile

Modules, in the order data flows through them:

    scenario     what is profiled: a model (by name, from kan.zoo), device and phase, run for
                 a few steps; also the child process py-spy samples (python -m profiles.scenario)
    cprof        cProfile around the measured steps: .pstats, top-N table, seconds per part
    pyspy        py-spy record of the child: speedscope JSON, seconds per part; fault messages
    flamegraph   a flame graph SVG of py-spy's samples, coloured by part
    torch_trace  torch.profiler: chrome trace, key_averages table, seconds per part
    attribution  classify(frame) -> part, the one table the three profilers share; shares and rows
    cli          the command line: runs the profilers, writes attribution.csv through benchmarks.core.record

Nothing here imports the models at import time: ``kan`` is imported inside functions,
and models are asked for by name.
"""
