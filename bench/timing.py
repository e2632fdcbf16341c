"""Timing several callables fairly: warm each up, then time them in interleaved rounds, so
that every one sees the same machine noise (these 2-core machines drift within a run)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Hashable

import numpy as np


def interleaved_medians(runs: dict[Hashable, Callable[[np.ndarray], object]], inputs: dict[int, np.ndarray],
                        rounds: int, warmup: int = 3) -> dict[tuple, float]:
    """Median milliseconds of every (key, batch): ``runs[key](inputs[batch])``."""
    for run in runs.values():
        for x in inputs.values():
            for _ in range(warmup):
                run(x)
    times: dict[tuple, list[float]] = {(key, n): [] for key in runs for n in inputs}
    for _ in range(rounds):  # every callable and batch once in each round
        for key, run in runs.items():
            for n, x in inputs.items():
                t0 = time.perf_counter()
                run(x)
                times[(key, n)].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}
