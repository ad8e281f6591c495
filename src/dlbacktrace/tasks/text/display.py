"""Token heat maps: rich (terminal), HTML (notebooks and standalone files), matplotlib.

Colours and token spans come from :mod:`dlbacktrace.viz.tokens`: unsigned relevance shades from
white to red; signed relevance (contrast net map) is red for evidence for the explained output
and blue for evidence against it. Each row is scaled by its own largest absolute value. ``rich``
and ``matplotlib`` are imported only when used (``pip install dlbacktrace[text]``).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlbacktrace.engine.errors import InputError
from dlbacktrace.viz.tokens import TOKEN_STYLE as _STYLE
from dlbacktrace.viz.tokens import token_colours
from dlbacktrace.viz.tokens import token_span_html as _span_html

if TYPE_CHECKING:
    from dlbacktrace.tasks.text.views import GenerationExplanation, TextExplanation

__all__ = [
    "generation_html",
    "generation_rich",
    "plot_generation_matrix",
    "save_html",
    "text_html",
    "text_rich",
    "token_colours",
]


def _require(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise ImportError(
            f"this display needs {module!r}; install it with `pip install dlbacktrace[text]`"
        ) from exc


def _page(body: str, title: str) -> str:
    return (
        f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"{_STYLE}</head><body>{body}</body></html>"
    )


def text_html(exp: TextExplanation, full_page: bool = False) -> str:
    """One heat-mapped line per text, with the explained class and its probability."""
    signed = exp.mode == "contrast"
    probs = exp.probabilities
    rows = []
    for i, table in enumerate(exp.tables):
        rel = exp.relevance[i].numpy()
        content = table.content
        colours = token_colours(np.where(content, rel, 0.0), signed)
        spans = []
        for j in np.flatnonzero(~table.padding):
            cls = "t" if content[j] else "t sp"
            spans.append(_span_html(table.texts[j], colours[j],
                                    f"{table.tokens[j]}: {rel[j]:+.4g}", cls))
        p = float(probs[i, exp.target[i]]) if probs.dim() == 2 else float(probs[i])
        rows.append(
            f"<tr><td>{html.escape(exp.label(i))}<br><small>p={p:.3f}</small></td>"
            f"<td>{''.join(spans)}</td></tr>"
        )
    body = (
        f'<div class="dlbt"><small>dlbacktrace · {exp.mode} mode · attention={exp.attention}'
        f"</small><table>{''.join(rows)}</table></div>"
    )
    return _page(body, "dlbacktrace text explanation") if full_page else _STYLE + body


def generation_html(exp: GenerationExplanation, full_page: bool = False) -> str:
    """The generated text, then one heat-mapped context line per generated token."""
    signed = exp.mode == "contrast"
    table = exp.table
    lines = []
    for k in range(exp.steps):
        stop = exp.prompt_length + k
        rel = exp.matrix[k, :stop].numpy()
        colours = token_colours(rel, signed)
        spans = [
            _span_html(table.texts[j], colours[j], f"{table.tokens[j]}: {rel[j]:+.4g}",
                       "t sp" if table.special[j] else "t")
            for j in range(stop)
        ]
        token = table.texts[stop]
        lines.append(
            f"<tr><td><span class='t gen'>{html.escape(token)}</span><br>"
            f"<small>p={float(exp.probabilities[k]):.3f}</small></td>"
            f"<td>{''.join(spans)}</td></tr>"
        )
    body = (
        f'<div class="dlbt"><small>dlbacktrace · {exp.mode} mode · attention={exp.attention}'
        f"</small><p><b>{html.escape(exp.prompt_text)}</b>"
        f"<span class='gen'>{html.escape(exp.generated_text)}</span></p>"
        f"<table>{''.join(lines)}</table></div>"
    )
    return _page(body, "dlbacktrace generation explanation") if full_page else _STYLE + body


def save_html(document: str, path: str | Path) -> Path:
    """Write an HTML document (UTF-8) and return its path."""
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        path = path.with_suffix(".html")
    path.write_text(document, encoding="utf-8")
    return path


def _rich_line(texts: list[str], rel: np.ndarray, signed: bool, dim: np.ndarray) -> Any:
    text_mod = _require("rich.text")
    colours = token_colours(rel, signed)
    line = text_mod.Text()
    for j, piece in enumerate(texts):
        r, g, b = (int(c) for c in colours[j])
        style = f"black on rgb({r},{g},{b})" + (" dim" if dim[j] else "")
        line.append(piece.replace("\n", "↵"), style=style)
    return line


def text_rich(exp: TextExplanation) -> Any:
    """A rich renderable (``rich.print(exp)`` uses it): one heat-mapped line per text."""
    table_mod = _require("rich.table")
    out = table_mod.Table(title=f"dlbacktrace · {exp.mode} mode", show_lines=False)
    out.add_column("class")
    out.add_column("tokens")
    for i, table in enumerate(exp.tables):
        keep = ~table.padding
        rel = np.where(table.content, exp.relevance[i].numpy(), 0.0)[keep]
        texts = [t for t, k in zip(table.texts, keep, strict=True) if k]
        out.add_row(exp.label(i), _rich_line(texts, rel, exp.mode == "contrast",
                                             table.special[keep]))
    return out


def generation_rich(exp: GenerationExplanation) -> Any:
    """A rich renderable: each generated token with its heat-mapped context."""
    table_mod = _require("rich.table")
    out = table_mod.Table(title=f"dlbacktrace · generation · {exp.mode} mode")
    out.add_column("token")
    out.add_column("p", justify="right")
    out.add_column("context")
    for k in range(exp.steps):
        stop = exp.prompt_length + k
        line = _rich_line(exp.table.texts[:stop], exp.matrix[k, :stop].numpy(),
                          exp.mode == "contrast", exp.table.special[:stop])
        out.add_row(repr(exp.table.texts[stop]), f"{float(exp.probabilities[k]):.3f}", line)
    return out


def plot_generation_matrix(
    exp: GenerationExplanation, ax: Any = None, max_columns: int | None = None
) -> Any:
    """Heat map of ``exp.matrix`` (rows: generated tokens, columns: earlier tokens).

    ``max_columns`` keeps only the last columns of long prompts. Returns the ``Figure``
    (built without pyplot, so no global figure state is touched).
    """
    _require("matplotlib")
    from matplotlib.figure import Figure

    matrix = exp.matrix.numpy()[:, :-1] if exp.matrix.shape[1] > 1 else exp.matrix.numpy()
    labels = exp.table.texts[: matrix.shape[1]]
    first = 0
    if max_columns is not None:
        if max_columns < 1:
            raise InputError(f"max_columns must be positive, got {max_columns}")
        first = max(0, matrix.shape[1] - max_columns)
    matrix, labels = matrix[:, first:], labels[first:]
    signed = exp.mode == "contrast"
    if ax is None:
        size = (max(4.0, 0.28 * matrix.shape[1] + 2), max(2.5, 0.3 * len(matrix) + 2))
        fig = Figure(figsize=size)
        ax = fig.add_subplot(1, 1, 1)
    else:
        fig = ax.figure
    vmax = float(np.abs(matrix).max()) or 1.0
    image = ax.imshow(matrix, cmap="RdBu_r" if signed else "Reds", aspect="auto",
                      vmin=-vmax if signed else 0.0, vmax=vmax, interpolation="nearest")
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels([t.replace("\n", "↵") for t in labels], rotation=90, fontsize=7)
    ax.set_yticks(range(exp.steps))
    ax.set_yticklabels([t.replace("\n", "↵") for t in exp.generated_tokens], fontsize=7)
    ax.axvline(exp.prompt_length - first - 0.5, color="black", linewidth=0.8)
    ax.set_xlabel("earlier tokens (prompt | generated)")
    ax.set_ylabel("generated token")
    fig.colorbar(image, ax=ax, label="relevance (net)" if signed else "relevance")
    return fig
