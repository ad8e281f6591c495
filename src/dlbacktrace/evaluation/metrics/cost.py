"""Cost: wall time per explanation and peak extra memory while explaining.

Peak memory is the largest increase of the process's resident memory over its value at the
start, sampled every ``interval`` seconds by a background thread (CPU), or
``torch.cuda.max_memory_allocated`` growth on CUDA. Lower is better for both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Cost:
    """Wall time (s) and peak extra memory (MB) of one call, and what it returned."""

    seconds: float
    peak_memory_mb: float
    result: Any = None


def measure(fn: Callable[[], Any], interval: float = 0.002, device: str = "cpu") -> Cost:
    """Run ``fn()`` once; its wall time and peak extra memory (MB)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        start_mem = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        result = fn()
        torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        peak = (torch.cuda.max_memory_allocated() - start_mem) / 2**20
        return Cost(seconds, peak, result)
    import psutil

    proc = psutil.Process()
    start = proc.memory_info().rss
    peak = [start]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            done.wait(interval)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    try:
        result = fn()
    finally:
        seconds = time.perf_counter() - t0
        done.set()
        thread.join()
    peak[0] = max(peak[0], proc.memory_info().rss)
    return Cost(seconds, (peak[0] - start) / 2**20, result)
