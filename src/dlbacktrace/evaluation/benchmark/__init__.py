"""The benchmark: DLBacktrace against other attribution methods on real data and models.

``python -m dlbacktrace.evaluation.benchmark --quick`` or ``run_benchmark(quick=True, out=path)``.
"""

from dlbacktrace.evaluation.benchmark.prompts import benchmark_prompts
from dlbacktrace.evaluation.benchmark.run import TASKS, machine, run_benchmark

__all__ = ["TASKS", "benchmark_prompts", "machine", "run_benchmark"]
