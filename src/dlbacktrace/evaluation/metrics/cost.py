"""Cost: wall time per explanation and peak extra memory while explaining.

Peak memory is the largest increase of the process's resident memory over its value at the
start (CPU), or ``torch.cuda.max_memory_allocated`` growth on CUDA. Lower is better for both.

On CPU a background thread samples the resident size every ``interval`` seconds. A sampler can
miss a peak when the machine does not schedule it (a CPU-quota-throttled container pauses every
thread for up to a period), so the kernel's own high-water mark (``VmHWM``) is read as well:
when it rose during the call, the process reached it during the call, and that exact peak is
used. Nothing is reset, so the user's own high-water mark is untouched.
"""

from __future__ import annotations

import sys
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
    high_water_before = _high_water_mark()
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
    high_water_after = _high_water_mark()
    if high_water_after is not None and high_water_before is not None:
        if high_water_after > high_water_before:
            peak[0] = max(peak[0], high_water_after)
    return Cost(seconds, max(peak[0] - start, 0) / 2**20, result)


def _high_water_mark() -> int | None:
    """The process's peak resident size in bytes so far, or None where the OS has no such count.

    On Linux this is ``VmHWM`` (the peak of this process image; ``ru_maxrss`` also carries a
    parent's peak across ``exec``), elsewhere ``ru_maxrss``.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024
