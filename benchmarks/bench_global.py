"""Global-explanation benchmark: throughput (local vs Ray) and peak memory vs dataset size.

Run ``python benchmarks/bench_global.py [--quick]``. Nothing is asserted; tables go to stdout.

* Throughput: explanations per second of ``aggregate`` on UCI German credit (an MLP over the
  one-hot encoded attributes, rows tiled to a larger data set) and scikit-learn digits (a small
  CNN), with the local backend and with Ray and 2 workers (tasks of 1 CPU each) on this machine.
  Each backend is warmed up first (capture, Ray start-up and worker imports are reported on
  their own), then timed on the whole data set. The Ray result is checked against the local one.
* Memory: peak resident memory above the level before the call (``VmHWM`` after resetting it
  through ``/proc/self/clear_refs``) and the ``tracemalloc`` peak, while aggregating data sets
  of growing size streamed from a generator (so the data itself is never held): flat numbers
  mean constant memory in the dataset size.
"""

from __future__ import annotations

import argparse
import os
import time
import tracemalloc
from pathlib import Path

import numpy as np
import torch

from dlbacktrace import Backtrace
from dlbacktrace.aggregate import aggregate
from dlbacktrace.examples.datasets import load_digits, load_german_credit


def _train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> torch.nn.Module:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    X, Y = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), Y).backward()
        opt.step()
    return model.eval()


def german_mlp() -> tuple[torch.nn.Module, np.ndarray, list[str]]:
    train, _ = load_german_credit().split(0.2, seed=0)
    torch.manual_seed(0)
    f = train.x.shape[1]
    model = torch.nn.Sequential(torch.nn.Linear(f, 64), torch.nn.ReLU(), torch.nn.Linear(64, 32),
                                torch.nn.ReLU(), torch.nn.Linear(32, 2))
    return _train(model, train.x, train.y, 200), train.x, train.feature_names


def digits_cnn() -> tuple[torch.nn.Module, np.ndarray]:
    data = load_digits()
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(32 * 2 * 2, 10),
    )
    return _train(model, data.x, data.y, 60), data.x


def tile(x: np.ndarray, rows: int) -> np.ndarray:
    reps = -(-rows // len(x))
    return np.concatenate([x] * reps)[:rows]


def throughput(name, model, x, batch_size, ray_ok: bool) -> list[str]:
    lines = []
    bt = Backtrace(model)
    t0 = time.perf_counter()
    aggregate(bt, x[:batch_size], batch_size=batch_size)  # capture
    capture = time.perf_counter() - t0
    t0 = time.perf_counter()
    local = aggregate(bt, x, batch_size=batch_size)
    t_local = time.perf_counter() - t0
    lines.append(f"| {name} | local, {torch.get_num_threads()} threads | {len(x)} | {batch_size} "
                 f"| {len(x) / t_local:,.0f} | {t_local:.2f} s | capture {capture:.2f} s |")
    threads = torch.get_num_threads()
    if threads > 1:  # the same work on one thread (what each Ray worker gets)
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        aggregate(bt, x, batch_size=batch_size)
        t_one = time.perf_counter() - t0
        torch.set_num_threads(threads)
        lines.append(f"| {name} | local, 1 thread | {len(x)} | {batch_size} | "
                     f"{len(x) / t_one:,.0f} | {t_one:.2f} s | |")
    if ray_ok:
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        aggregate(model, x[:4 * batch_size], batch_size=batch_size, backend="ray",
                  num_workers=2)  # start workers, import torch, capture in each
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        remote = aggregate(model, x, batch_size=batch_size, backend="ray", num_workers=2)
        t_ray = time.perf_counter() - t0
        ray.shutdown()
        diff = max(float(np.max(np.abs(m.sums[f] - remote.inputs[n].sums[f])))
                   for n, m in local.inputs.items() for f in m.sums)
        same = "bit-identical to local" if diff == 0 else f"max |diff| vs local {diff:.1e}"
        lines.append(f"| {name} | ray, 2 workers | {len(x)} | {batch_size} | "
                     f"{len(x) / t_ray:,.0f} | {t_ray:.2f} s | start-up+warm-up {warm:.1f} s; "
                     f"{same} |")
    return lines


def _rss_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def memory(model, x, sizes, batch_size) -> list[str]:
    bt = Backtrace(model)
    aggregate(bt, x[:batch_size], batch_size=batch_size)  # capture outside the measurement
    lines = []
    for rows in sizes:
        def stream(rows=rows):
            rng = np.random.default_rng(0)
            for lo in range(0, rows, batch_size):
                idx = rng.integers(0, len(x), size=min(batch_size, rows - lo))
                yield torch.from_numpy(x[idx])

        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _rss_kb("VmRSS:")
        tracemalloc.start()
        t0 = time.perf_counter()
        g = aggregate(bt, stream(), batch_size=batch_size, sample_size=1024)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        extra = _rss_kb("VmHWM:") - before
        lines.append(f"| {rows:,} | {g.rows:,} | {extra / 1024:.1f} MiB | {peak / 2**20:.2f} MiB |"
                     f" {rows / elapsed:,.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data sets")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray rows")
    args = parser.parse_args()
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray  # noqa: F401

        ray_ok = not args.no_ray
    except ImportError:
        ray_ok = False
    scale = 1 if args.quick else 4
    print(f"torch threads {torch.get_num_threads()}, load average "
          f"{os.getloadavg()[0]:.2f}, cpus {os.cpu_count()}\n")
    german, gx, _ = german_mlp()
    cnn, dx = digits_cnn()
    print("| data | backend | rows | batch | explanations/s | time | notes |")
    print("|---|---|---|---|---|---|---|")
    for line in throughput(f"German credit MLP ({gx.shape[1]} features)", german,
                           tile(gx, 20_000 * scale), 512, ray_ok):
        print(line, flush=True)
    for line in throughput("digits CNN (1x8x8)", cnn, tile(dx, 4_000 * scale), 256, ray_ok):
        print(line, flush=True)
    print("\nPeak memory while aggregating German credit rows streamed from a generator "
          "(sample_size=1024):\n")
    print("| rows | explained | peak RSS above start | tracemalloc peak | rows/s |")
    print("|---|---|---|---|---|")
    sizes = [2_000 * scale, 8_000 * scale, 32_000 * scale]
    for line in memory(german, gx, sizes, 512):
        print(line, flush=True)


if __name__ == "__main__":
    main()
