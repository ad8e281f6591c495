"""Explanations as plain, JSON-friendly rows: what reports, the CLI and the dashboard show.

Each row holds the prediction with its probabilities and the explained target; what the
relevance looks like for a person (top pixels of an image, per-token relevance of a text,
per-feature relevance of a table row) comes from the input's
:class:`~dlbacktrace.io.kinds.InputKind`. The conservation ledger summarises the whole call.
"""

from __future__ import annotations

from typing import Any

import torch

from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.io.kinds import InputKind, RowInputs, registered_kinds

__all__ = ["explanation_rows", "ledger", "prediction"]

# Kinds that are not registered here (an old record, a plugin not loaded) get generic rows.
_GENERIC = InputKind()


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


def _row_inputs(exp: Explanation, args: tuple[torch.Tensor, ...] | None,
                kwargs: dict[str, torch.Tensor] | None, tokens: list[list[str]] | None,
                feature_names: list[str] | None) -> RowInputs:
    """What the rows show beside the maps: given explicitly, else the explanation's context."""
    carried = exp.inputs_by_name
    if args is None and kwargs is None:
        args = tuple(carried[n] for n in exp.input_names if n in carried)
        kwargs = dict(carried)
    if feature_names is None and exp.input_names:
        feature_names = exp.feature_names_by_name.get(exp.input_names[0])
    return RowInputs(args or (), kwargs or {}, tokens if tokens is not None else exp.tokens,
                     feature_names)


def explanation_rows(
    exp: Explanation,
    kind: str,
    *,
    args: tuple[torch.Tensor, ...] | None = None,
    kwargs: dict[str, torch.Tensor] | None = None,
    names: list[str] | None = None,
    tokens: list[list[str]] | None = None,
    feature_names: list[str] | None = None,
    labels: list[str] | None = None,
    top_k: int = 10,
    figures: bool = True,
) -> list[dict[str, Any]]:
    """One dict per explained row (batch element): prediction, target, maps, top features.

    Parameters
    ----------
    exp
        The explanation.
    kind
        Name of the input kind (an unregistered name gets generic rows).
    args, kwargs
        The explained inputs (images and table values are shown from them); default: the
        inputs the explanation carries (``exp.inputs_by_name``, in input order).
    names
        One name per row (default ``#i``).
    tokens
        Tokens per text row; default ``exp.tokens``.
    feature_names
        Names of table columns; default the explanation's feature names of its first input.
    labels
        Class names for the prediction; default ``exp.output_names``.
    top_k
        How many top features each row lists.
    figures
        Embed figures (image heat maps) as PNG data.
    """
    input_kind = registered_kinds().get(kind) or _GENERIC
    maps = _maps(exp, input_kind.relevance_input(exp.input_names))
    n = int(maps["relevance"].shape[0]) if maps["relevance"].dim() else 1
    parts = input_kind.report_rows(
        maps, _row_inputs(exp, args, kwargs, tokens, feature_names), top_k=top_k,
        figures=figures,
    )
    labels = labels if labels is not None else exp.output_names
    rows = []
    for i in range(n):
        row: dict[str, Any] = {
            "index": i,
            "name": names[i] if names and i < len(names) else f"#{i}",
            "prediction": prediction(exp.output[i], labels),
            "target": None if exp.target is None else exp.target.reshape(n, -1)[i].tolist(),
            "relevance_sum": float(maps["relevance"][i].sum()),
        }
        row.update(parts[i])
        if len(row["target"] or []) == 1:
            row["target"] = row["target"][0]
        rows.append(row)
    return rows
