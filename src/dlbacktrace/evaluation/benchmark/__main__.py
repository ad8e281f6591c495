"""The benchmark from the command line.

``python -m dlbacktrace.evaluation.benchmark [--quick] [--out DIR] [--tasks ...] [--instances N]``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from dlbacktrace.evaluation.benchmark.run import TASKS, run_benchmark


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dlbacktrace.evaluation.benchmark",
        description="Compare DLBacktrace with other attribution methods on real data.",
    )
    parser.add_argument("--quick", action="store_true", help="few instances (minutes)")
    parser.add_argument("--out", type=Path, default=Path("benchmark-results"))
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=None)
    parser.add_argument("--instances", type=int, default=None, help="instances per task")
    args = parser.parse_args(argv)
    start = time.perf_counter()

    def progress(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f} s] {message}", file=sys.stderr, flush=True)

    run_benchmark(args.quick, args.out, args.tasks, args.instances, progress)
    print(f"results written to {args.out}/results.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
