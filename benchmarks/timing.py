"""Timing helpers shared by the benchmarks: medians, variants in turns."""

import statistics
import time


def time_steps(variants, data, steps, repeats):
    """Median seconds per training step of each variant.

    Args:
        variants: List of `(name, model, prepare)`; `prepare()` runs before
            each of the variant's turns (e.g. to set a layer's phase).
        data: Iterable of `(x, y)` batches.
        steps: Integer. Steps per turn (cycling through the batches).
        repeats: Integer. Turns per variant.

    Steps are `train_on_batch` calls. The variants take turns so that drifts
    of a shared machine hit them alike. (Timing whole `fit` calls instead
    gave step times in exact multiples of about 256 ms under Keras 3.)
    """
    batches = list(data)
    for _, model, prepare in variants:  # trace and warm up
        prepare()
        for x, y in batches[:2]:
            model.train_on_batch(x, y)
    times = {name: [] for name, _, _ in variants}
    for _ in range(repeats):
        for name, model, prepare in variants:
            prepare()
            for step in range(steps):
                x, y = batches[step % len(batches)]
                start = time.perf_counter()
                model.train_on_batch(x, y)
                times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def time_turns(functions, repeats):
    """Median seconds of each function, the functions called in turns.

    Returns the medians and, for each function, the median over turns of
    its time divided by the first function's time in the same turn: on a
    shared machine a drift hits both calls of a turn alike, so this ratio
    is steadier than the ratio of medians.
    """
    for function in functions:
        function()  # trace
    times = [[] for _ in functions]
    for _ in range(repeats):
        for function, seconds in zip(functions, times, strict=True):
            start = time.perf_counter()
            function()
            seconds.append(time.perf_counter() - start)
    medians = [statistics.median(seconds) for seconds in times]
    ratios = [
        statistics.median(a / b for a, b in zip(seconds, times[0], strict=True))
        for seconds in times
    ]
    return medians, ratios


def time_call(function, repeats):
    """Median seconds of `function()` over `repeats` calls after one."""
    function()  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
