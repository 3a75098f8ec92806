"""Timing helper shared by the operator benchmarks (``python bench/<script>.py`` puts bench/ on the path)."""
import time

import numpy as np


def interleaved_median_ms(fns, repeats):
    """Median wall time in milliseconds of each function in ``fns``, called in turn.

    Each function is called once to warm up, then ``repeats`` rounds call every function once, so
    load from other processes hits all of them alike.
    """
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, acc in zip(fns, times):
            start = time.perf_counter()
            fn()
            acc.append((time.perf_counter() - start) * 1e3)
    return [float(np.median(t)) for t in times]
