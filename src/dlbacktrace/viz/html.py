"""``explanation_html``: the notebook view of an :class:`~dlbacktrace.Explanation`.

A one-line summary, then token highlights (explanations with tokens) or a small table of each
row's most relevant features. Every name, token and label is HTML-escaped: they come from
users, tokenizers and model configs.
"""

from __future__ import annotations

import html
from typing import TYPE_CHECKING

import numpy as np

from dlbacktrace.viz.features import top_features
from dlbacktrace.viz.tokens import (
    TOKEN_STYLE,
    colour_scale,
    legend_html,
    token_colours,
    token_span_html,
)

if TYPE_CHECKING:
    from dlbacktrace.engine.explanation import Explanation

__all__ = ["explanation_html"]


def _summary(exp: Explanation) -> str:
    text = (f"dlbacktrace · {exp.mode} mode · rows={exp.batch_size} · "
            f"conservation error {exp.conservation_error:.2g}")
    return f"<small>{html.escape(text)}</small>"


def _target(exp: Explanation, row: int) -> str:
    if exp.target is None or exp.target.numel() <= row:
        return f"row {row}"
    return f"row {row}: {exp.output_name(int(exp.target.reshape(-1)[row]))}"


def _token_rows(exp: Explanation, rows: int) -> str:
    name = exp.token_input
    rel = exp.relevance_by_name[name]
    mask = exp.inputs_by_name.get("attention_mask")
    lines = []
    for r in range(rows):
        values = rel[r].detach().cpu().double().numpy().reshape(-1)
        keep = np.ones(values.shape[0], dtype=bool)
        if mask is not None and mask.shape == rel.shape:
            keep = mask[r].detach().cpu().numpy().reshape(-1) != 0
        signed = exp.mode == "contrast"
        scale = colour_scale(values, exclude=~keep)
        colours = token_colours(np.where(keep, values, 0.0), signed, scale=scale)
        spans = "".join(
            token_span_html(exp.tokens[r][j], colours[j], f"{exp.tokens[r][j]}: {values[j]:+.4g}")
            for j in np.flatnonzero(keep)
        )
        lines.append(f"<tr><td>{html.escape(_target(exp, r))}</td><td>{spans}</td>"
                     f"<td>{legend_html(scale, signed)}</td></tr>")
    return f"<table>{''.join(lines)}</table>"


def _feature_rows(exp: Explanation, rows: int, max_display: int) -> str:
    parts = []
    for name in exp.input_names:
        rel = exp.relevance_by_name[name]
        value = exp.inputs_by_name.get(name)
        for r in range(rows if exp.batched(rel) else 1):
            flat = (rel[r] if exp.batched(rel) else rel).detach().cpu().double().numpy()
            labels, shown, where = top_features(flat.reshape(-1), exp.feature_labels(name, r),
                                                max_display)
            row_values = None
            if value is not None and value.numel() == rel.numel():
                row_value = value[r] if exp.batched(rel) else value
                row_values = row_value.detach().cpu().double().reshape(-1).numpy()
            cells = "".join(
                f"<tr><td>{html.escape(label)}</td>"
                f"<td>{'' if row_values is None or j < 0 else f'{row_values[j]:.4g}'}</td>"
                f"<td>{v:+.4g}</td></tr>"
                for label, v, j in zip(labels, shown, where, strict=True)
            )
            caption = html.escape(f"{name} · {_target(exp, r)}")
            parts.append(f"<table><caption>{caption}</caption><tr><th>feature</th>"
                         f"<th>value</th><th>relevance</th></tr>{cells}</table>")
    return "".join(parts)


def explanation_html(exp: Explanation, max_rows: int = 4, max_display: int = 8) -> str:
    """An HTML fragment showing the first rows of ``exp``.

    Parameters
    ----------
    exp
        The explanation.
    max_rows
        The most batch rows shown.
    max_display
        Feature tables: the most lines per row (the rest summed into one).
    """
    rows = min(exp.batch_size or 1, max_rows)
    if exp.tokens is not None and exp.token_input in exp.relevance_by_name:
        body = _token_rows(exp, rows)
    else:
        body = _feature_rows(exp, rows, max_display)
    more = ""
    if (exp.batch_size or 1) > rows:
        more = f"<small>… {exp.batch_size - rows} more rows</small>"
    return f'{TOKEN_STYLE}<div class="dlbt">{_summary(exp)}{body}{more}</div>'
