"""Cost of explaining text models with dlbacktrace.tasks.text (not a test; prints Markdown).

* **SmolLM2-135M-Instruct** (real, float32): a 128-token prompt, 16 greedy tokens
  (``min_new_tokens=16``), sequence of 144 tokens.
  (a) explaining one generated token (the last one, w.r.t. all 143 tokens before it; batch 1)
      / one forward + input-gradient pass over the same 144 tokens (gradient of that token's
      logit w.r.t. ``inputs_embeds``; target ≤ 3×);
  (b) explaining all 16 generated tokens (``explain_continuation``: one record of the
      sequence, one relevance stream per token, all 16 in one call by default; also in calls of
      4) / ``model.generate`` of those 16 tokens (target ≤ 8×) and / 16 forward + gradient
      passes (target ≤ 0.8×);
  (c) peak memory of (a) and (b) / peak memory of the forward+gradient pass (target ≤ 2×).
* **MiniLM** (real all-MiniLM-L6-v2 encoder, masked mean pooling, a linear head): 8 texts of
  128 tokens through ``explain_text`` / forward + gradient w.r.t. ``inputs_embeds``.

Timing: first calls (which include ``torch.export`` capture) are reported separately; then
every callable gets one warm-up and ``--repeats`` interleaved timed runs; medians are compared
(the machine may be shared, so the min-based ratio is shown too).
Peak memory: the kernel's peak-RSS counter is reset (``/proc/self/clear_refs``) right before
one steady-state call and ``VmHWM`` read after it (the method of ``bench_core.py``); the figure
is that peak minus the RSS before the model was loaded (weights + inputs + engine state +
transients), so both sides of the ratio include the weights. Before each measurement freed heap
is returned to the OS (``malloc_trim``), so an earlier, larger call does not inflate a peak.

Run: ``python benchmarks/bench_text.py [--repeats 5] [--smollm2-cache DIR] [--json PATH]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_core import _CpuMeter  # noqa: E402

from dlbacktrace.engine.state import seeded  # noqa: E402
from dlbacktrace.tasks.text import explain_text  # noqa: E402
from dlbacktrace.tasks.text.generation import explain_continuation  # noqa: E402

PROMPT_TOKENS, NEW_TOKENS = 128, 16


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def _interleaved(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    for fn in fns.values():  # warm-up
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_timed(fn))
    return times


def _prompt_ids(tok: Any, n: int) -> torch.Tensor:
    text = (
        "The history of the city goes back many centuries. Merchants came from the coast to "
        "trade salt, wool and grain, and the river carried their boats to the markets inland. "
    )
    ids = tok(text * 20, return_tensors="pt")["input_ids"][0]
    return ids[:n]


def bench_smollm2(repeats: int, cache: str | None, meter: _CpuMeter) -> dict[str, Any]:
    from dlbacktrace.examples.zoo import load_smollm2

    rss0 = meter.current()
    model, tok = load_smollm2(cache)
    prompt = _prompt_ids(tok, PROMPT_TOKENS)

    def generate() -> torch.Tensor:
        with torch.no_grad():
            return model.generate(
                input_ids=prompt[None], attention_mask=torch.ones(1, PROMPT_TOKENS,
                                                                  dtype=torch.long),
                max_new_tokens=NEW_TOKENS, min_new_tokens=NEW_TOKENS, do_sample=False,
                pad_token_id=tok.pad_token_id,
            )[0]

    full = generate()
    L = full.numel()
    last_pos, last_tok = L - 2, int(full[-1])
    embed = model.get_input_embeddings()

    def forward_grad() -> torch.Tensor:
        x = embed(full[None]).detach().requires_grad_(True)
        logits = model(inputs_embeds=x, use_cache=False).logits
        (grad,) = torch.autograd.grad(logits[0, last_pos, last_tok], x)
        return grad

    base_peak = meter.peak_of(forward_grad)

    def explain_one() -> Any:
        return explain_continuation(model, tok, full[:L - 1], full[L - 1:])

    def explain_all() -> Any:
        return explain_continuation(model, tok, full[:PROMPT_TOKENS], full[PROMPT_TOKENS:])

    def explain_all_8() -> Any:  # calls of 4 tokens (the key keeps its old name)
        return explain_continuation(model, tok, full[:PROMPT_TOKENS], full[PROMPT_TOKENS:],
                                    batch_size=4)

    first_one = _timed(explain_one)
    first_all = _timed(explain_all)
    first_all_8 = _timed(explain_all_8)
    _log(f"smollm2 first calls (capture): one {first_one:.1f}s, all {first_all:.1f}s, "
         f"all in calls of 4 {first_all_8:.1f}s")
    check = explain_all()
    one_peak = meter.peak_of(explain_one)
    all_peak = meter.peak_of(explain_all)
    all_8_peak = meter.peak_of(explain_all_8)
    times = _interleaved({"forward_grad": forward_grad, "explain_one": explain_one,
                          "generate": generate, "explain_all": explain_all,
                          "explain_all_8": explain_all_8}, repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    low = {k: min(v) for k, v in times.items()}
    def mem(p: int | None) -> float | None:
        if p is None or rss0 is None or base_peak is None:
            return None
        return (p - rss0) / (base_peak - rss0)

    return {
        "sequence": L, "first_call_s": {"one": first_one, "all": first_all, "all_8": first_all_8},
        "median_s": med, "min_s": low,
        "a_one_token_over_fwd_grad": med["explain_one"] / med["forward_grad"],
        "a_min_ratio": low["explain_one"] / low["forward_grad"],
        "b_all_tokens_over_generate": med["explain_all"] / med["generate"],
        "b_min_ratio": low["explain_all"] / low["generate"],
        "b_all_tokens_over_fwd_grad": med["explain_all"] / med["forward_grad"],
        "b_all_tokens_over_k_fwd_grad": med["explain_all"] / (NEW_TOKENS * med["forward_grad"]),
        "b_min_over_k_fwd_grad": low["explain_all"] / (NEW_TOKENS * low["forward_grad"]),
        "c_memory_one_over_fwd_grad": mem(one_peak),
        "c_memory_all_over_fwd_grad": mem(all_peak),
        "b_all_tokens_chunks_of_8_over_generate": med["explain_all_8"] / med["generate"],
        "c_memory_all_chunks_of_8_over_fwd_grad": mem(all_8_peak),
        "peak_mb": {k: None if v is None or rss0 is None else (v - rss0) / 2**20
                    for k, v in (("forward_grad", base_peak), ("explain_one", one_peak),
                                 ("explain_all", all_peak), ("explain_all_8", all_8_peak))},
        "conservation_error": check.explanation.conservation_error,
    }


def bench_minilm(repeats: int, meter: _CpuMeter) -> dict[str, Any]:
    from dlbacktrace.examples.zoo import SentenceClassifier, load_minilm

    rss0 = meter.current()
    encoder, tok = load_minilm()
    with seeded(0):
        model = SentenceClassifier(encoder, 2).eval()
    words = "the quick brown fox jumps over the lazy dog while people watch " * 20
    texts = [f"{i} " + words for i in range(8)]
    enc = tok(texts, truncation=True, max_length=128, padding=True, return_tensors="pt")
    texts = tok.batch_decode(enc["input_ids"], skip_special_tokens=True)
    enc = tok(texts, truncation=True, max_length=128, padding="max_length", return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    embed = encoder.get_input_embeddings()

    class Embedded(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = encoder(inputs_embeds=x, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).to(hidden.dtype)
            return model.head((hidden * m).sum(1) / m.sum(1).clamp(min=1.0))

    wrapped = Embedded()

    def forward_grad() -> torch.Tensor:
        x = embed(ids).detach().requires_grad_(True)
        logits = wrapped(x)
        (grad,) = torch.autograd.grad(logits.max(-1).values.sum(), x)
        return grad

    base_peak = meter.peak_of(forward_grad)

    def explain() -> Any:
        return explain_text(model, tok, texts, truncation=True, max_length=128, bucket=16,
                            batch_size=8)

    first = _timed(explain)
    exp = explain()
    assert exp.input_ids.shape == (8, 128), exp.input_ids.shape
    times = _interleaved({"forward_grad": forward_grad, "explain": explain}, repeats)
    peak = meter.peak_of(explain)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "first_call_s": first, "median_s": med,
        "explain_over_fwd_grad": med["explain"] / med["forward_grad"],
        "min_ratio": min(times["explain"]) / min(times["forward_grad"]),
        "memory_over_fwd_grad": None if peak is None or rss0 is None or base_peak is None
        else (peak - rss0) / (base_peak - rss0),
        "conservation_error": exp.conservation_error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--smollm2-cache", default=None)
    parser.add_argument("--cases", nargs="*", default=["smollm2", "minilm"])
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    meter = _CpuMeter()
    results: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                               "load_average": os.getloadavg(), "memory_method": meter.method}
    if "minilm" in args.cases:
        results["minilm"] = bench_minilm(args.repeats, meter)
        _log(json.dumps(results["minilm"], indent=1))
    if "smollm2" in args.cases:
        results["smollm2"] = bench_smollm2(args.repeats, args.smollm2_cache, meter)
        _log(json.dumps(results["smollm2"], indent=1))
    results["load_average_end"] = os.getloadavg()
    lines = [f"torch {results['torch']}, {results['threads']} threads, load average "
             f"{results['load_average'][0]:.1f} → {results['load_average_end'][0]:.1f}; "
             f"memory: {meter.method}", "",
             "| case | ratio (median) | ratio (min) | target |", "|---|---|---|---|"]
    s = results.get("smollm2")
    if s:
        def f(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.2f}×"

        lines += [
            f"| SmolLM2 (a) explain 1 token / fwd+grad ({s['sequence']} tok) | "
            f"{f(s['a_one_token_over_fwd_grad'])} | {f(s['a_min_ratio'])} | ≤ 3× |",
            f"| SmolLM2 (b) explain 16 tokens / generate 16 | "
            f"{f(s['b_all_tokens_over_generate'])} | {f(s['b_min_ratio'])} | ≤ 8× |",
            f"| SmolLM2 (b') explain 16 tokens / 16 fwd+grad | "
            f"{f(s['b_all_tokens_over_k_fwd_grad'])} | {f(s['b_min_over_k_fwd_grad'])} | ≤ 0.8× |",
            f"| SmolLM2 (c) peak memory 1 token / fwd+grad | "
            f"{f(s['c_memory_one_over_fwd_grad'])} | | ≤ 2× |",
            f"| SmolLM2 (c) peak memory 16 tokens / fwd+grad | "
            f"{f(s['c_memory_all_over_fwd_grad'])} | | ≤ 2× |",
            f"| SmolLM2 (b) 16 tokens in calls of 4 / generate 16 | "
            f"{f(s['b_all_tokens_chunks_of_8_over_generate'])} | | — |",
            f"| SmolLM2 (c) peak memory 16 tokens in calls of 4 / fwd+grad | "
            f"{f(s['c_memory_all_chunks_of_8_over_fwd_grad'])} | | — |",
        ]
    m = results.get("minilm")
    if m:
        mem = m["memory_over_fwd_grad"]
        lines += [
            f"| MiniLM 8×128 explain_text / fwd+grad | {m['explain_over_fwd_grad']:.2f}× | "
            f"{m['min_ratio']:.2f}× | — |",
            f"| MiniLM 8×128 peak memory / fwd+grad | "
            f"{'n/a' if mem is None else f'{mem:.2f}×'} | | ≤ 2× |",
        ]
    print("\n".join(lines))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
