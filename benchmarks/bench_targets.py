"""Several targets of one input on one forward record (not a test; prints Markdown).

``Backtrace.explain(x, targets=[...])`` records the forward once and computes the shares once;
each target is one relevance stream through the transposed ops. This script measures, for
K = 16 targets of one input:

* **streamed**: one ``explain(x, targets=K targets)`` call;
* **one by one**: K separate ``explain(x, target=t)`` calls (each records its own forward);
* **K fwd+grad** (the denominator): K plain forward + input-gradient passes, one per target;
* **fwd + K grads**: the autograd analogue of a shared record, one forward and K backward
  passes (``retain_graph``), for reference.

Cases (random init, fixed seeds, eval mode): an MLP 1024-4096-4096-100 (batch 1), torchvision
resnet18 at 224 px (batch 1), a MiniLM-sized BERT classifier with 16 labels (128 tokens, sdpa).
Timing: one warm-up (the first call, which includes the capture, is reported on its own), then
``--repeats`` interleaved repeats; medians. Peak memory as in ``bench_core.py`` (VmHWM after
a reset, above the RSS before the model was built).

Run: ``python benchmarks/bench_targets.py [--repeats 5] [--cases mlp resnet18 bert]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import _CpuMeter, _release_freed_heap  # noqa: E402

from dlbacktrace import Backtrace  # noqa: E402

K = 16


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _case(name: str) -> tuple[nn.Module, dict[str, Any], Callable[[int], torch.Tensor]]:
    """(model, explain inputs, gradient pass for target t)."""
    torch.manual_seed(0)
    if name == "mlp":
        model = nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(),
                              nn.Linear(4096, 100)).eval()
        x = torch.randn(1, 1024)
        return model, {"args": (x,), "kwargs": {}}, _input_grad(model, x)
    if name == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(weights=None).eval()
        x = torch.randn(1, 3, 224, 224)
        return model, {"args": (x,), "kwargs": {}}, _input_grad(model, x)
    if name == "bert":
        from transformers import BertConfig, BertForSequenceClassification

        cfg = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                         intermediate_size=1536, num_labels=16, attn_implementation="sdpa")
        model = BertForSequenceClassification(cfg).eval()
        ids = torch.randint(1000, 20000, (1, 128))
        mask = torch.ones(1, 128, dtype=torch.long)
        embed = model.get_input_embeddings()

        def grad(t: int) -> torch.Tensor:
            e = embed(ids).detach().requires_grad_(True)
            logits = model(inputs_embeds=e, attention_mask=mask).logits
            return torch.autograd.grad(logits[0, t], e)[0]

        return model, {"args": (), "kwargs": {"input_ids": ids, "attention_mask": mask}}, grad
    raise SystemExit(f"unknown case {name!r}")


def _input_grad(model: nn.Module, x: torch.Tensor) -> Callable[[int], torch.Tensor]:
    def grad(t: int) -> torch.Tensor:
        leaf = x.detach().requires_grad_(True)
        return torch.autograd.grad(model(leaf)[0, t], leaf)[0]

    return grad


def _fwd_k_grads(model: nn.Module, inputs: dict[str, Any], name: str) -> Callable[[], Any]:
    def run() -> Any:
        if name == "bert":
            embed = model.get_input_embeddings()
            e = embed(inputs["kwargs"]["input_ids"]).detach().requires_grad_(True)
            out = model(inputs_embeds=e, attention_mask=inputs["kwargs"]["attention_mask"]).logits
            leaf = e
        else:
            leaf = inputs["args"][0].detach().requires_grad_(True)
            out = model(leaf)
        return [torch.autograd.grad(out[0, t], leaf, retain_graph=t < K - 1)[0]
                for t in range(K)]

    return run


def bench(name: str, repeats: int, meter: _CpuMeter) -> dict[str, Any]:
    _release_freed_heap()  # an earlier case's freed heap must not hide this one's weights
    rss0 = meter.current()
    model, inputs, grad = _case(name)
    bt = Backtrace(model)
    targets = list(range(K))
    args, kwargs = inputs["args"], inputs["kwargs"]
    fns: dict[str, Callable[[], Any]] = {
        "k_fwd_grad": lambda: [grad(t) for t in targets],
        "fwd_k_grads": _fwd_k_grads(model, inputs, name),
        "streamed": lambda: bt.explain(*args, targets=targets, **kwargs),
        "one_by_one": lambda: [bt.explain(*args, target=t, **kwargs) for t in targets],
    }
    start = time.perf_counter()
    check = fns["streamed"]()
    first = time.perf_counter() - start
    single = [bt.explain(*args, target=t, **kwargs) for t in (0, K - 1)]
    first_input = check.input_names[0]

    def relative(a: Any, b: Any) -> float:
        ra, rb = a.relevance_by_name[first_input], b.relevance_by_name[first_input]
        return float((ra - rb).abs().max() / rb.abs().max().clamp_min(1e-30))

    agree = max(relative(check[k], s) for k, s in zip((0, K - 1), single, strict=True))
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - t0)
    peaks = {key: meter.peak_of(fn) for key, fn in fns.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    base = peaks["k_fwd_grad"]

    def mem(key: str) -> float | None:
        if rss0 is None or base is None or peaks[key] is None:
            return None
        return (peaks[key] - rss0) / (base - rss0)

    return {"case": name, "first_call_s": first, "median_s": med,
            "streamed_over_k_fwd_grad": med["streamed"] / med["k_fwd_grad"],
            "one_by_one_over_k_fwd_grad": med["one_by_one"] / med["k_fwd_grad"],
            "fwd_k_grads_over_k_fwd_grad": med["fwd_k_grads"] / med["k_fwd_grad"],
            "streamed_speedup": med["one_by_one"] / med["streamed"],
            "memory_streamed": mem("streamed"), "memory_one_by_one": mem("one_by_one"),
            "peak_mb": {k: None if v is None or rss0 is None else (v - rss0) / 2**20
                        for k, v in peaks.items()},
            "relative_difference_to_single": agree,
            "conservation_error": check.conservation_error}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--cases", nargs="*", default=["mlp", "resnet18", "bert"])
    args = parser.parse_args()
    meter = _CpuMeter()
    load = os.getloadavg()[0]
    rows = []
    for name in args.cases:
        res = bench(name, args.repeats, meter)
        _log(str(res))
        rows.append(res)

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.2f}×"

    lines = [f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
             f"{load:.1f} → {os.getloadavg()[0]:.1f}; K = {K} targets, batch 1; ratios over "
             f"{K} forward + input-gradient passes; memory: {meter.method}", "",
             "| case | streamed (one call) | one by one | fwd + K grads | speed-up | "
             "peak mem streamed / one by one | max rel. diff to single | first call |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(
            f"| {r['case']} | {f(r['streamed_over_k_fwd_grad'])} | "
            f"{f(r['one_by_one_over_k_fwd_grad'])} | {f(r['fwd_k_grads_over_k_fwd_grad'])} | "
            f"{r['streamed_speedup']:.1f}× | {f(r['memory_streamed'])} / "
            f"{f(r['memory_one_by_one'])} | {r['relative_difference_to_single']:.1e} | "
            f"{r['first_call_s']:.1f} s |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
