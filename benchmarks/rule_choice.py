"""Which rule variants are most faithful on the transformer tasks (DESIGN.md 2.1–2.3)?

The benchmark's own tasks and metrics (``dlbacktrace.evaluation.benchmark``): the MiniLM sentiment
classifier (deleted tokens become ``[MASK]``) and SmolLM2-135M next-token prediction (deleted
tokens become the pad token, and separately are removed through the attention mask). For every
variant below the maps of the same instances are scored by ABPC (LeRF AUC − MoRF AUC of the
explained class's probability) and faithfulness correlation; differences are paired against the
library's defaults, with standard errors of the paired differences.

Variants:

* ``default/centre`` — default mode, layer norm centring explained as an affine op — against
  ``default/identity`` (normalisation passes relevance unchanged; the library default since
  this study found it as good or better);
* ``contrast/split`` — contrast mode, attention split through the softmax rule (library
  default) — against ``contrast/value`` (all relevance to the values) and
  ``contrast/split/identity`` (layer norm as identity: DESIGN.md 2.1 says signed shares work
  only with centring).

Two instance sets are scored (``--n`` instances each: the benchmark's first ``n`` and the next
``n``), so that no choice rests on one set.

Run: ``python benchmarks/rule_choice.py [--n 100] [--gen-n 50] [--tasks text generation]
[--out DIR]``.
Writes ``rule_choice.json`` and ``rule_choice.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dlbacktrace import Backtrace, DLBacktraceError  # noqa: E402
from dlbacktrace.evaluation import metrics as M  # noqa: E402
from dlbacktrace.evaluation.baselines import explain  # noqa: E402
from dlbacktrace.evaluation.benchmark import tasks as T  # noqa: E402

# name -> (mode, attention, norm)
VARIANTS = {
    "default/centre": ("default", "value", "centre"),
    "default/identity": ("default", "value", "identity"),
    "contrast/split": ("contrast", "split", "centre"),
    "contrast/value": ("contrast", "value", "centre"),
    "contrast/split/identity": ("contrast", "split", "identity"),
}
BASE = {"default": "default/centre", "contrast": "contrast/split"}  # the paired reference


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _maps(task: T.Task, variant: str, lo: int, hi: int) -> torch.Tensor:
    mode, attention, norm = VARIANTS[variant]
    bt = Backtrace(task.model, norm=norm)
    out = []
    size = task.chunk
    for start in range(lo, hi, size):
        idx = torch.arange(start, start + size).clamp_max(hi - 1)  # one input signature
        part = {k: v[idx] for k, v in task.inputs.items()}
        method = "dlb-contrast" if mode == "contrast" else "dlb"
        exp = explain(task.model, part, method=method, target=task.target[idx], backtrace=bt,
                      attention=attention)
        out.append(exp.relevance_by_name["input_ids"].detach()[: min(size, hi - start)])
    return torch.cat(out)


def _score(task: T.Task, maps: torch.Tensor, lo: int, hi: int, masked: bool) -> dict:
    x = task.perturb_x[lo:hi]
    target = task.target[lo:hi]
    extra = tuple(e[lo:hi] for e in task.extra)
    forward = task.forward_masked if masked else task.forward
    common = dict(
        removal=T.MASK_DELETED if masked else task.removal, additional_forward_args=extra,
        valid_elements=task.valid_elements[lo:hi], batch_size=64,
    )
    c = M.curves(forward, x, maps, target, fractions=task.fractions, **common)
    fc = M.faithfulness_correlation(forward, x, maps, target, n_samples=12, **common)
    return {"abpc": c.abpc.double(), "faithfulness_correlation": fc.double()}


def _stat(v: torch.Tensor) -> dict:
    v = v[torch.isfinite(v)]
    n = int(v.numel())
    se = float(v.std() / math.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(v.mean()), "se": se, "n": n}


def study(task: T.Task, n: int, removals: list[bool]) -> dict:
    result: dict = {}
    failures: dict = {}
    for set_name, (lo, hi) in (("first", (0, n)), ("second", (n, 2 * n))):
        scores: dict = {}
        for variant in VARIANTS:
            _log(f"{task.name} {set_name}: {variant}")
            try:
                maps = _maps(task, variant, lo, hi)
            except DLBacktraceError as exc:  # e.g. a ledger that breaks: reported, not scored
                failures[f"{set_name} / {variant}"] = f"{type(exc).__name__}: {exc}"
                continue
            for masked in removals:
                key = "attention mask" if masked else task.removal_note.split(";")[0]
                scores.setdefault(key, {})[variant] = _score(task, maps, lo, hi, masked)
        for key, by_variant in scores.items():
            table = {}
            for variant, s in by_variant.items():
                base = by_variant[BASE[VARIANTS[variant][0]]]
                table[variant] = {
                    metric: {
                        **_stat(values),
                        "paired_diff_vs_base": _stat(values - base[metric]),
                    }
                    for metric, values in s.items()
                }
            result[f"{set_name} {n} / {key}"] = table
    if failures:
        result["failed"] = failures
    return result


def _markdown(results: dict) -> str:
    lines = ["# Rule variants on the transformer tasks", "",
             "Mean ± standard error over instances; Δ = paired difference against the library "
             "default of the same mode (default/centre, contrast/split), ± its standard error.",
             ""]  # fmt: skip
    for task, sets in results.items():
        if task == "machine":
            continue
        for name, table in sets.items():
            if name == "failed":
                lines += [f"## {task}: variants that could not be explained", ""]
                lines += [f"- {k}: {v}" for k, v in table.items()] + [""]
                continue
            lines += [f"## {task}: {name}", "", "| variant | ABPC ↑ | Δ ABPC | faithf. corr. ↑ "
                      "| Δ faithf. corr. |", "|---|---|---|---|---|"]  # fmt: skip
            for variant, m in table.items():
                a, f = m["abpc"], m["faithfulness_correlation"]
                da, df = a["paired_diff_vs_base"], f["paired_diff_vs_base"]
                lines.append(
                    f"| {variant} | {a['mean']:.3f} ± {a['se']:.3f} (n={a['n']}) | "
                    f"{da['mean']:+.3f} ± {da['se']:.3f} | {f['mean']:.3f} ± {f['se']:.3f} | "
                    f"{df['mean']:+.3f} ± {df['se']:.3f} |"
                )
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=100, help="tweets per set (two sets)")
    parser.add_argument("--gen-n", type=int, default=50,
                        help="prompts per set (two sets; the benchmark has 100 prompts)")
    parser.add_argument("--tasks", nargs="+", default=["text", "generation"],
                        choices=["text", "generation"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict = {"machine": {"torch": torch.__version__, "threads": 1}}
    for name in args.tasks:
        if name == "text":
            task = T.text_task(2 * args.n, quick=False)
            results[name] = study(task, args.n, [False])
        else:
            task = T.generation_task(2 * args.gen_n, quick=False)
            results[name] = study(task, args.gen_n, [False, True])
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "rule_choice.json").write_text(json.dumps(results, indent=1))
        (args.out / "rule_choice.md").write_text(_markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
