"""The measuring core: one description of a case, one clock, one set of protocols, one record.

    case       Case (model, phase, device, dtype, widths, batch, grid) and make_step: the model,
               data and the timed step of each phase; the one loss and optimizer of every phase
    timer      DeviceTimer: a host clock that waits for CUDA/MPS before its stop reading;
               CpuTimer (the process's CPU time) for the CPU on one thread; clock_name picks
               one from the device and the run's threads, make_clock builds it from its name
               (in a child too); using_threads applies a run's thread count and restores
    protocol   first_call and rounds (one candidate), turns (candidates side by side),
               paired_turns (two processes, the gate)
    measure    a group of cases (a workload's models and their MLPs) timed in turns until its
               ratios are clear: a Measurement per case, with its paired ratios to the MLPs
    measurement  Measurement: a case, its threads and clock, raw samples, rounds, disturbed
               flags, first call, status; medians, spread and stability derived from it;
               its JSON form (measurements.jsonl), which reads earlier harnesses' rows too
    process    a child process spoken to in JSON lines (the gate's sides, the peers)
    memory     parameter bytes, bytes saved for backward, device peak memory
    record     the run folder: every file a run writes, read and written here only
    stats      medians, intervals and the one rule for "slower" and "faster"
    cli        argument parsing with one-line errors; the options several commands share, checked
               as they are parsed; announcing the run folder a command wrote
    command    run_command: the one frame of every command (its run folder, SIGTERM, state, exit status)
    manifest   run.json: what made a run folder (kind, command, settings, times, state)

It imports no model at import time and nothing from the commands built on it.
"""
