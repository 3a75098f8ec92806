"""Timing helpers shared by the benchmarks (``python bench/<script>.py`` puts bench/ on the path)."""
import time

import numpy as np


def interleaved_median_wall_cpu_ms(fns, repeats, warmup=1, min_seconds=0.0):
    """Per function in ``fns``: median wall and process-CPU milliseconds, calls interleaved.

    Every function is called ``warmup`` times first, then rounds call each once in turn, so load
    from other processes hits all of them alike: at least ``repeats`` rounds, and more until the
    rounds have taken ``min_seconds`` (short calls need many samples for a stable median). CPU time
    (all threads of this process) is less sensitive than wall time to other jobs on shared cores.

    Returns
    -------
    list of (wall_ms, cpu_ms), one per function.
    """
    for _ in range(warmup):
        for fn in fns:
            fn()
    wall, cpu = [[] for _ in fns], [[] for _ in fns]
    begin = time.perf_counter()
    rounds = 0
    while rounds < repeats or time.perf_counter() - begin < min_seconds:
        rounds += 1
        for fn, w, c in zip(fns, wall, cpu):
            start, start_cpu = time.perf_counter(), time.process_time()
            fn()
            w.append((time.perf_counter() - start) * 1e3)
            c.append((time.process_time() - start_cpu) * 1e3)
    return [(float(np.median(w)), float(np.median(c))) for w, c in zip(wall, cpu)]


def interleaved_median_ms(fns, repeats, min_seconds=0.0):
    """Median wall milliseconds of each function (one warm-up call, then at least ``repeats``
    interleaved rounds lasting at least ``min_seconds``)."""
    return [w for w, _ in interleaved_median_wall_cpu_ms(fns, repeats, min_seconds=min_seconds)]
