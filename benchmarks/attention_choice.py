"""Which attention rule is more faithful: ``attention="value"`` or ``"split"`` (DESIGN.md 2.2)?

Token flipping on two real models:

* **MiniLM sentiment** (``dlbacktrace.zoo.train_minilm_sentiment(200, seed=0)``): the first
  ``--n`` held-out tweets; the explained output is the predicted class; deleted tokens are
  **replaced by ``[MASK]``** (length and attention mask unchanged; ``[CLS]``/``[SEP]`` are
  never deleted); the curve is the probability of the explained class.
* **SmolLM2-135M-Instruct** next-token prediction: ``--n`` fixed prompts (below); the explained
  output is the greedy next token; deleted tokens are **removed from attention**
  (``attention_mask`` 0 at their positions; positions of the others unchanged, since a causal LM
  has no mask token); the curve is the probability of the explained token.

For each input, the tokens are deleted in order of relevance, most relevant first (MoRF) and
least relevant first (LeRF), at 0%, 10%, ..., 100% of the tokens. AUC = mean of the curve over
the 11 steps (trapezoid rule on [0, 1]); ABPC = AUC(LeRF) − AUC(MoRF): higher is more faithful.
Four maps per input: attention value/split × the unsigned default map / the signed contrast net
map (one contrast run gives both, since ``total`` is the default-mode map). A random order is
shown as a reference (its expected ABPC is 0).

Run: ``python benchmarks/attention_choice.py [--n 50] [--out benchmarks/results]``.
Writes ``attention_choice.json`` and ``attention_choice.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dlbacktrace import Backtrace  # noqa: E402

STEPS = np.linspace(0.0, 1.0, 11)
MAPS = ("value/default", "value/net", "split/default", "split/net")

PROMPTS = [
    "The capital of France is", "The capital of Japan is", "Water boils at a temperature of",
    "The largest planet in our solar system is", "Monday, Tuesday, Wednesday,",
    "One, two, three, four,", "The opposite of hot is", "Cats and dogs are both",
    "The chemical symbol for gold is", "Shakespeare wrote the play", "A triangle has three",
    "The sun rises in the", "To bake a cake you need flour, sugar and",
    "The Eiffel Tower is located in", "My favourite colour is", "The first man on the moon was",
    "In winter it is usually", "The currency of the United Kingdom is the",
    "Python is a programming", "The square root of sixteen is", "Bread is made from",
    "The Great Wall is in", "Ice is frozen", "The author of Harry Potter is",
    "A week has seven", "Paris is the capital of", "The tallest mountain in the world is",
    "Bees make", "The color of the sky on a clear day is", "Einstein is famous for the theory of",
    "The month after January is", "The primary language spoken in Brazil is",
    "Photosynthesis happens in the", "She opened the door and saw a",
    "Good morning! How are", "The speed of light is very", "Rome is the capital of",
    "The heart pumps", "January, February, March,", "An apple a day keeps the",
    "The Pacific is the largest", "Dogs like to chase", "The keyboard has many",
    "Thank you very", "The Amazon is a river in", "Once upon a",
    "The number after nine is", "Mount Everest is in the", "Berlin is the capital of",
    "The boy kicked the", "Happy birthday to", "Red, green and",
]  # fmt: skip


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _orders(rel: np.ndarray, content: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Content-token indices, most relevant first and least relevant first (stable)."""
    idx = np.flatnonzero(content)
    order = idx[np.argsort(-rel[idx], kind="stable")]
    lerf = idx[np.argsort(rel[idx], kind="stable")]
    return order, lerf


def _variants(order: np.ndarray) -> list[np.ndarray]:
    """Indices deleted at each step."""
    n = len(order)
    return [order[: int(round(f * n))] for f in STEPS]


def _unique_rows(owners: list[int], rows: list[torch.Tensor]) -> tuple[list[int], list[int]]:
    """Indices of the distinct (owner, row) pairs, and for every pair its distinct index: short
    inputs and shared orders repeat the same deletion many times; each is run once."""
    seen: dict[tuple, int] = {}
    first, where = [], []
    for n, (owner, row) in enumerate(zip(owners, rows, strict=True)):
        key = (owner, tuple(row.tolist()))
        if key not in seen:
            seen[key] = len(first)
            first.append(n)
        where.append(seen[key])
    return first, where


def _auc(curve: np.ndarray) -> float:
    return float(np.trapezoid(curve, STEPS)) if hasattr(np, "trapezoid") else float(
        np.trapz(curve, STEPS)
    )


def _summary(curves: dict[str, dict[str, list[np.ndarray]]]) -> dict:
    out = {}
    for name, by in curves.items():
        morf = np.array([_auc(c) for c in by["morf"]])
        lerf = np.array([_auc(c) for c in by["lerf"]])
        abpc = lerf - morf
        out[name] = {
            "auc_morf": float(morf.mean()),
            "auc_lerf": float(lerf.mean()),
            "abpc": float(abpc.mean()),
            "abpc_sem": float(abpc.std(ddof=1) / np.sqrt(len(abpc))),
            "n": len(abpc),
            "morf_curve": np.mean(by["morf"], axis=0).round(5).tolist(),
            "lerf_curve": np.mean(by["lerf"], axis=0).round(5).tolist(),
        }
    return out


def _paired(curves: dict, a: str, b: str) -> dict:
    """Paired difference of ABPC (a − b) over inputs and how often a wins."""
    da = np.array([_auc(x) - _auc(y) for x, y in zip(curves[a]["lerf"], curves[a]["morf"],
                                                      strict=True)])
    db = np.array([_auc(x) - _auc(y) for x, y in zip(curves[b]["lerf"], curves[b]["morf"],
                                                      strict=True)])
    diff = da - db
    return {"mean": float(diff.mean()), "sem": float(diff.std(ddof=1) / np.sqrt(len(diff))),
            "wins": int((diff > 0).sum()), "n": len(diff)}


# ---- MiniLM ------------------------------------------------------------------------------------
def minilm_study(n: int, batch: int = 8) -> dict:
    from dlbacktrace.text import explain_text
    from dlbacktrace.zoo import train_minilm_sentiment

    model, tok, info = train_minilm_sentiment(n_per_class=200, seed=0)
    texts = [t for t in info["test_texts"] if len(tok(t)["input_ids"]) <= 64][:n]
    maps: dict[str, list[np.ndarray]] = {m: [] for m in MAPS}
    targets = None
    for attention in ("value", "split"):
        t0 = time.perf_counter()
        exp = explain_text(model, tok, texts, mode="contrast", attention=attention,
                           batch_size=batch)
        _log(f"minilm explain {attention}: {time.perf_counter() - t0:.1f}s "
             f"(conservation {exp.conservation_error:.1e})")
        maps[f"{attention}/default"] = [exp.total[i].numpy() for i in range(len(texts))]
        maps[f"{attention}/net"] = [exp.relevance[i].numpy() for i in range(len(texts))]
        targets = exp.target
        ids, mask, tables = exp.input_ids, exp.attention_mask, exp.tables
    rng = np.random.default_rng(0)
    maps["random"] = [rng.random(ids.shape[1]) for _ in texts]
    curves: dict[str, dict[str, list[np.ndarray]]] = {}
    for name, rels in maps.items():
        rows, owners = [], []
        for i, rel in enumerate(rels):
            morf, lerf = _orders(rel, tables[i].content)
            for kind, order in (("morf", morf), ("lerf", lerf)):
                for deleted in _variants(order):
                    row = ids[i].clone()
                    row[torch.as_tensor(deleted, dtype=torch.long)] = tok.mask_token_id
                    rows.append(row)
                    owners.append((i, kind))
        first, where = _unique_rows([o[0] for o in owners], rows)
        x = torch.stack([rows[n] for n in first])
        own = torch.tensor([owners[n][0] for n in first])
        m = mask[own]
        probs = []
        with torch.no_grad():
            for s in range(0, len(x), 128):
                p = torch.softmax(model(input_ids=x[s:s + 128], attention_mask=m[s:s + 128]), -1)
                probs.append(p[torch.arange(len(p)), targets[own[s:s + 128]]])
        values = torch.cat(probs)[torch.tensor(where)].numpy().reshape(-1, len(STEPS))
        curves[name] = {"morf": list(values[0::2]), "lerf": list(values[1::2])}
    return {"summary": _summary(curves), "curves": curves, "accuracy": info["accuracy"],
            "n": len(texts)}


# ---- SmolLM2 -----------------------------------------------------------------------------------
def smollm2_study(n: int, cache: str | None, batch: int = 8, width: int = 10) -> dict:
    from dlbacktrace.zoo import load_smollm2

    model, tok = load_smollm2(cache)
    prompts = PROMPTS[:n]
    enc = [tok(p)["input_ids"] for p in prompts]
    assert max(map(len, enc)) <= width, max(map(len, enc))
    ids = torch.full((len(enc), width), tok.pad_token_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    lengths = torch.tensor([len(e) for e in enc])
    for i, e in enumerate(enc):
        ids[i, : len(e)] = torch.tensor(e)
        mask[i, : len(e)] = 1
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
    last = lengths - 1
    next_tok = logits[torch.arange(len(enc)), last].argmax(-1)
    bt = Backtrace(model)
    maps: dict[str, list[np.ndarray]] = {m: [] for m in MAPS}
    vocab = logits.shape[-1]
    for attention in ("value", "split"):
        t0 = time.perf_counter()
        worst = 0.0
        for s in range(0, len(enc), batch):
            rows = torch.arange(s, s + batch).clamp(max=len(enc) - 1)
            seed = torch.zeros(batch, width, vocab)
            seed[torch.arange(batch), last[rows], next_tok[rows]] = 1.0
            if s + batch > len(enc):
                seed[len(enc) - s :] = 0.0  # rows that only pad the batch
            exp = bt.explain(input_ids=ids[rows], attention_mask=mask[rows], use_cache=False,
                             seed=seed, mode="contrast", attention=attention)
            worst = max(worst, exp.conservation_error)
            real = min(batch, len(enc) - s)
            tot = exp.total_by_name["input_ids"][:real]
            net = exp.relevance_by_name["input_ids"][:real]
            maps[f"{attention}/default"] += [r.numpy() for r in tot]
            maps[f"{attention}/net"] += [r.numpy() for r in net]
        _log(f"smollm2 explain {attention}: {time.perf_counter() - t0:.1f}s "
             f"(conservation {worst:.1e})")
    rng = np.random.default_rng(0)
    maps["random"] = [rng.random(width) for _ in enc]
    curves: dict[str, dict[str, list[np.ndarray]]] = {}
    for name, rels in maps.items():
        masks, owners = [], []
        for i, rel in enumerate(rels):
            morf, lerf = _orders(rel, mask[i].numpy() != 0)
            for order in (morf, lerf):
                for deleted in _variants(order):
                    row = mask[i].clone()
                    row[torch.as_tensor(deleted, dtype=torch.long)] = 0
                    masks.append(row)
                    owners.append(i)
        first, where = _unique_rows(owners, masks)
        m = torch.stack([masks[n] for n in first])
        own = torch.tensor([owners[n] for n in first])
        x = ids[own]
        probs = []
        with torch.no_grad():
            for s in range(0, len(x), 64):
                o = own[s:s + 64]
                hidden = model.model(input_ids=x[s:s + 64], attention_mask=m[s:s + 64],
                                     use_cache=False).last_hidden_state
                logits = model.lm_head(hidden[torch.arange(len(o)), last[o]])
                probs.append(torch.softmax(logits, -1)[torch.arange(len(o)), next_tok[o]])
        values = torch.cat(probs)[torch.tensor(where)].numpy().reshape(-1, len(STEPS))
        curves[name] = {"morf": list(values[0::2]), "lerf": list(values[1::2])}
    return {"summary": _summary(curves), "curves": curves, "n": len(enc)}


def _markdown(results: dict) -> str:
    lines = ["# Attention rule choice: token flipping (value vs split)", ""]
    for task, res in results["tasks"].items():
        lines += [f"## {task} ({res['n']} inputs; {res['deletion']})", "",
                  "| map | AUC MoRF ↓ | AUC LeRF ↑ | ABPC ↑ (± s.e.m.) |", "|---|---|---|---|"]
        for name, s in res["summary"].items():
            lines.append(f"| {name} | {s['auc_morf']:.4f} | {s['auc_lerf']:.4f} | "
                         f"{s['abpc']:.4f} ± {s['abpc_sem']:.4f} |")
        lines.append("")
        for pair, d in res["paired"].items():
            lines.append(f"- paired ABPC {pair}: {d['mean']:+.4f} ± {d['sem']:.4f} "
                         f"(split better on {d['wins']}/{d['n']} inputs)")
        lines.append("")
    lines += [f"**Choice:** {results['choice']}", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--smollm2-cache", default=None, help="folder to cache SmolLM2 weights")
    parser.add_argument("--tasks", nargs="*", default=["minilm", "smollm2"])
    args = parser.parse_args()
    results: dict = {"tasks": {}, "torch": torch.__version__, "steps": STEPS.tolist()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if "minilm" in args.tasks:
        res = minilm_study(args.n)
        res["deletion"] = "tokens replaced by [MASK], explained class probability"
        results["tasks"]["MiniLM sentiment"] = res
    if "smollm2" in args.tasks:
        res = smollm2_study(args.n, args.smollm2_cache)
        res["deletion"] = "tokens removed via attention_mask 0, explained token probability"
        results["tasks"]["SmolLM2 next token"] = res
    for res in results["tasks"].values():
        res["paired"] = {
            f"{m} split − value": _paired(res["curves"], f"split/{m}", f"value/{m}")
            for m in ("default", "net")
        }
        wins = sum(d["mean"] > 2 * d["sem"] for d in res["paired"].values())
        losses = sum(d["mean"] < -2 * d["sem"] for d in res["paired"].values())
        res["split_clearly_better"] = int(wins)
        res["split_clearly_worse"] = int(losses)
    total = len(results["tasks"]) * 2
    better = sum(r["split_clearly_better"] for r in results["tasks"].values())
    worse = sum(r["split_clearly_worse"] for r in results["tasks"].values())
    if better == total:
        results["choice"] = "split: better than value in every task and map (> 2 s.e.m.)"
    elif worse > 0 and better == 0:
        results["choice"] = "value: split is clearly worse in some task/map and never better"
    else:
        results["choice"] = "value (kept): split is not clearly better in every task and map"
    for res in results["tasks"].values():
        res["curves"] = {k: {kk: [c.round(5).tolist() for c in vv] for kk, vv in v.items()}
                         for k, v in res["curves"].items()}
    (out / "attention_choice.json").write_text(json.dumps(results, indent=1))
    (out / "attention_choice.md").write_text(_markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
