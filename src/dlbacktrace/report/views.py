"""Explanations as plain, JSON-friendly rows: what reports, the CLI and the dashboard show.

One function per input kind turns relevance into what a person reads: top pixels of an image,
per-token relevance of a text, per-feature relevance of a table row, plus the prediction with
its probabilities and the conservation ledger. All array work is vectorised per row.
"""

from __future__ import annotations

from typing import Any

import torch

from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.report.figures import contrast_png, heatmap_png, token_color

__all__ = ["explanation_rows", "ledger", "prediction"]


def prediction(output: torch.Tensor, labels: list[str] | None = None, k: int = 5) -> dict:
    """Predicted class and the top-k probabilities of one output row (logits)."""
    logits = output.detach().to(torch.float64)
    if logits.dim() >= 2:  # [T, V] of a language model: the last position
        logits = logits.reshape(-1, logits.shape[-1])[-1]
    logits = logits.reshape(-1)
    if logits.numel() == 1:
        p = float(torch.sigmoid(logits)[0])
        return {
            "class": int(p >= 0.5),
            "label": (labels or ["negative", "positive"])[int(p >= 0.5)],
            "logit": float(logits[0]),
            "probabilities": [{"label": "positive", "p": p}, {"label": "negative", "p": 1 - p}],
        }
    probs = torch.softmax(logits, dim=0)
    top = probs.topk(min(k, probs.numel()))
    names = labels if labels and len(labels) == probs.numel() else None
    best = int(probs.argmax())
    return {
        "class": best,
        "label": names[best] if names else str(best),
        "logit": float(logits[best]),
        "probabilities": [
            {"label": names[i] if names else str(i), "p": float(p)}
            for p, i in zip(top.values.tolist(), top.indices.tolist(), strict=True)
        ],
    }


def ledger(exp: Explanation, k: int = 12) -> dict[str, Any]:
    """Conservation ledger: seed total, input total, absorbed per node (largest first)."""
    absorbed = sorted(exp.absorbed.items(), key=lambda kv: -abs(kv[1]))
    return {
        "seed_total": float(exp.seed.abs().sum(dtype=torch.float64)),
        "input_total": exp.total_input_relevance,
        "absorbed_total": exp.total_absorbed,
        "conservation_error": float(exp.conservation_error),
        "absorbed": [{"node": n, "value": float(v)} for n, v in absorbed[:k]],
        "absorbed_nodes": len(absorbed),
    }


def _maps(exp: Explanation, name: str) -> dict[str, torch.Tensor]:
    maps = {"relevance": exp.relevance_by_name[name].detach().to(torch.float64)}
    if exp.net_by_name is not None:
        total = exp.total_by_name[name].detach().to(torch.float64)
        net = exp.net_by_name[name].detach().to(torch.float64)
        maps["positive"] = ((total + net) / 2).clamp_min(0)
        maps["negative"] = ((total - net) / 2).clamp_min(0)
    return maps


def _image_row(maps: dict[str, torch.Tensor], i: int, image: torch.Tensor, k: int,
               figures: bool) -> dict[str, Any]:
    rel = maps["relevance"][i]
    heat = rel.reshape(-1, *rel.shape[-2:]).sum(dim=0) if rel.dim() > 2 else rel
    order = heat.abs().flatten().argsort(descending=True)[:k]
    width = heat.shape[-1]
    row: dict[str, Any] = {
        "top_features": [
            {"feature": f"pixel ({int(j) // width}, {int(j) % width})",
             "relevance": float(heat.flatten()[j])}
            for j in order.tolist()
        ],
        "shape": list(rel.shape),
    }
    if figures:
        row["heatmap_png"] = heatmap_png(image, rel)
        if "positive" in maps:
            row["contrast_png"] = contrast_png(
                image, maps["positive"][i], maps["negative"][i], rel
            )
    return row


def _text_row(maps: dict[str, torch.Tensor], i: int, tokens: list[str], mask: torch.Tensor | None,
              k: int) -> dict[str, Any]:
    keep = mask[i].bool() if mask is not None else torch.ones_like(maps["relevance"][i]).bool()
    values = {key: m[i][keep].tolist() for key, m in maps.items()}
    rel = values["relevance"]
    scale = max((abs(v) for v in rel), default=0.0)
    items = []
    for j, token in enumerate(tokens[: len(rel)]):
        item = {"token": token, "relevance": rel[j], "color": token_color(rel[j], scale)}
        if "positive" in values:
            item["positive"] = values["positive"][j]
            item["negative"] = values["negative"][j]
        items.append(item)
    ranked = sorted(range(len(items)), key=lambda j: -abs(items[j]["relevance"]))[:k]
    return {
        "tokens": items,
        "top_features": [
            {"feature": f"{items[j]['token']} @{j}", "relevance": items[j]["relevance"]}
            for j in ranked
        ],
    }


def _table_row(maps: dict[str, torch.Tensor], i: int, values: torch.Tensor,
               feature_names: list[str], k: int) -> dict[str, Any]:
    rel = maps["relevance"][i].reshape(-1)
    scale = float(rel.abs().max()) if rel.numel() else 0.0
    features = []
    for j, name in enumerate(feature_names):
        item = {
            "name": name,
            "value": float(values[i].reshape(-1)[j]),
            "relevance": float(rel[j]),
            "width": 0.0 if scale == 0 else 100.0 * abs(float(rel[j])) / scale,
        }
        if "positive" in maps:
            item["positive"] = float(maps["positive"][i].reshape(-1)[j])
            item["negative"] = float(maps["negative"][i].reshape(-1)[j])
        features.append(item)
    features.sort(key=lambda f: -abs(f["relevance"]))
    return {
        "features": features,
        "top_features": [{"feature": f["name"], "relevance": f["relevance"]}
                         for f in features[:k]],
    }


def _tensor_row(maps: dict[str, torch.Tensor], i: int, k: int) -> dict[str, Any]:
    rel = maps["relevance"][i]
    flat = rel.reshape(-1)
    order = flat.abs().argsort(descending=True)[:k]
    return {
        "shape": list(rel.shape),
        "top_features": [
            {"feature": str(tuple(int(c) for c in torch.unravel_index(j, rel.shape)))
             if rel.dim() else "()", "relevance": float(flat[j])}
            for j in order
        ],
    }


def explanation_rows(
    exp: Explanation,
    kind: str,
    *,
    args: tuple[torch.Tensor, ...] = (),
    kwargs: dict[str, torch.Tensor] | None = None,
    names: list[str] | None = None,
    tokens: list[list[str]] | None = None,
    feature_names: list[str] | None = None,
    labels: list[str] | None = None,
    top_k: int = 10,
    figures: bool = True,
) -> list[dict[str, Any]]:
    """One dict per explained row (batch element): prediction, target, maps, top features."""
    kwargs = kwargs or {}
    if kind == "text" and "input_ids" in exp.input_names:
        name = "input_ids"
    else:
        name = exp.input_names[0]
    maps = _maps(exp, name)
    n = int(maps["relevance"].shape[0]) if maps["relevance"].dim() else 1
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            "index": i,
            "name": names[i] if names and i < len(names) else f"#{i}",
            "prediction": prediction(exp.output[i], labels),
            "target": None if exp.target is None else exp.target.reshape(n, -1)[i].tolist(),
            "relevance_sum": float(maps["relevance"][i].sum()),
        }
        if kind == "image":
            row.update(_image_row(maps, i, args[0][i], top_k, figures))
        elif kind == "text" and tokens is not None:
            row.update(_text_row(maps, i, tokens[i], kwargs.get("attention_mask"), top_k))
        elif kind == "table":
            fnames = feature_names or [f"x{j}" for j in range(args[0].shape[-1])]
            row.update(_table_row(maps, i, args[0], fnames, top_k))
        else:
            row.update(_tensor_row(maps, i, top_k))
        if len(row["target"] or []) == 1:
            row["target"] = row["target"][0]
        rows.append(row)
    return rows
