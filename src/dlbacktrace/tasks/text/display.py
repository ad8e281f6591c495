"""Token heat maps: rich (terminal), HTML (notebooks and standalone files), matplotlib.

Colours and token spans come from :mod:`dlbacktrace.viz.tokens`: unsigned relevance shades from
white to red; signed relevance (contrast net map) is red for evidence for the explained output
and blue for evidence against it. Each row is scaled by its own largest absolute value, special
tokens (BOS/EOS, chat markers, ``[CLS]``) left out of that maximum unless
``include_special=True`` (a special first token is often an attention sink whose relevance
would wash out every other token; values above the scale are clipped to the end colour). Every
row shows its scale as a colour bar with the value range. ``rich`` and ``matplotlib`` are
imported only when used (``pip install dlbacktrace[text]``).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlbacktrace.engine.errors import InputError
from dlbacktrace.viz.tokens import (
    NEWLINE_MARK,
    colour_scale,
    legend_html,
    token_colours,
    visible_token,
)
from dlbacktrace.viz.tokens import TOKEN_STYLE as _STYLE
from dlbacktrace.viz.tokens import token_span_html as _span_html

if TYPE_CHECKING:
    from dlbacktrace.tasks.text.views import GenerationExplanation, TextExplanation

__all__ = [
    "generation_html",
    "generation_rich",
    "legend_rich",
    "plot_generation_matrix",
    "row_scale",
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


def row_scale(values: np.ndarray, special: np.ndarray, include_special: bool = False) -> float:
    """The colour scale of one row: its largest ``|relevance|``, special tokens left out
    unless ``include_special``.

    Parameters
    ----------
    values
        The row's relevance per shown token.
    special
        Which of those tokens are special (BOS/EOS/pad, chat markers, ``[CLS]``/``[SEP]``).
    include_special
        Let special tokens set the scale too.
    """
    return colour_scale(values, None if include_special else special)


def _scale_note(include_special: bool) -> str:
    if include_special:
        return "colour scale of each row: up to its largest |relevance|"
    return ("colour scale of each row: up to its largest |relevance| among non-special tokens; "
            "special tokens (greyed) are left out of the scale and clipped to its end colour")


def _caption(exp: Any, include_special: bool) -> str:
    return (f"<small>dlbacktrace · {html.escape(exp.mode)} mode · attention="
            f"{html.escape(str(exp.attention))}</small><br>"
            f"<small class='note'>{html.escape(_scale_note(include_special))}</small>")


def text_html(exp: TextExplanation, full_page: bool = False, *,
              include_special: bool = False) -> str:
    """One heat-mapped line per text, with the explained class, its probability and the
    row's colour scale.

    Parameters
    ----------
    exp
        The text explanation.
    full_page
        A standalone document instead of a fragment.
    include_special
        Let special tokens set each row's colour scale.
    """
    signed = exp.mode == "contrast"
    probs = exp.probabilities
    rows = []
    for i, table in enumerate(exp.tables):
        rel = exp.relevance[i].numpy()
        shown = ~table.padding
        scale = row_scale(rel[shown], table.special[shown], include_special)
        colours = token_colours(np.where(shown, rel, 0.0), signed, scale=scale)
        spans = []
        for j in np.flatnonzero(shown):
            cls = "t sp" if table.special[j] else "t"
            spans.append(_span_html(table.texts[j], colours[j],
                                    f"{table.tokens[j]}: {rel[j]:+.4g}", cls))
        p = float(probs[i, exp.target[i]]) if probs.dim() == 2 else float(probs[i])
        rows.append(
            f"<tr><td>{html.escape(exp.label(i))}<br><small>p={p:.3f}</small>"
            f"{legend_html(scale, signed)}</td><td>{''.join(spans)}</td></tr>"
        )
    body = (
        f'<div class="dlbt">{_caption(exp, include_special)}'
        f"<table>{''.join(rows)}</table></div>"
    )
    return _page(body, "dlbacktrace text explanation") if full_page else _STYLE + body


def generation_html(exp: GenerationExplanation, full_page: bool = False, *,
                    include_special: bool = False) -> str:
    """The generated text, then one heat-mapped context line per generated token, each with
    its colour scale.

    Parameters
    ----------
    exp
        The generation explanation.
    full_page
        A standalone document instead of a fragment.
    include_special
        Let special tokens set each row's colour scale.
    """
    signed = exp.mode == "contrast"
    table = exp.table
    lines = []
    for k in range(exp.steps):
        stop = exp.prompt_length + k
        rel = exp.matrix[k, :stop].numpy()
        scale = row_scale(rel, table.special[:stop], include_special)
        colours = token_colours(rel, signed, scale=scale)
        spans = [
            _span_html(table.texts[j], colours[j], f"{table.tokens[j]}: {rel[j]:+.4g}",
                       "t sp" if table.special[j] else "t")
            for j in range(stop)
        ]
        token = table.texts[stop]
        lines.append(
            f"<tr><td><span class='t gen'>{html.escape(token)}</span><br>"
            f"<small>p={float(exp.probabilities[k]):.3f}</small>"
            f"{legend_html(scale, signed)}</td>"
            f"<td>{''.join(spans)}</td></tr>"
        )
    body = (
        f'<div class="dlbt">{_caption(exp, include_special)}'
        f"<p><b>{html.escape(exp.prompt_text)}</b>"
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


def _rgb_style(rgb: np.ndarray) -> str:
    r, g, b = (int(c) for c in rgb)
    return f"rgb({r},{g},{b})"


def legend_rich(scale: float, signed: bool, width: int = 6) -> Any:
    """A rich colour bar with its value range: ``0 ██████ 0.86`` (signed: ``-s … +s``).

    Parameters
    ----------
    scale
        The value of the end colour.
    signed
        Diverging colours centred at 0.
    width
        Cells in the bar.
    """
    text_mod = _require("rich.text")
    stops = token_colours(np.linspace(-1.0 if signed else 0.0, 1.0, width), signed, scale=1.0)
    bar = text_mod.Text(f"-{scale:.3g} " if signed else "0 ")
    for rgb in stops:
        bar.append("█", style=_rgb_style(rgb))
    bar.append(f" +{scale:.3g}" if signed else f" {scale:.3g}")
    return bar


def _rich_line(texts: list[str], rel: np.ndarray, signed: bool, dim: np.ndarray,
               scale: float) -> Any:
    text_mod = _require("rich.text")
    colours = token_colours(rel, signed, scale=scale)
    line = text_mod.Text()
    for j, piece in enumerate(texts):
        style = f"black on {_rgb_style(colours[j])}" + (" dim" if dim[j] else "")
        line.append(piece.replace("\n", NEWLINE_MARK), style=style)
    return line


def text_rich(exp: TextExplanation, include_special: bool = False) -> Any:
    """A rich renderable (``rich.print(exp)`` uses it): one heat-mapped line per text, with
    its colour scale.

    Parameters
    ----------
    exp
        The text explanation.
    include_special
        Let special tokens set each row's colour scale.
    """
    table_mod = _require("rich.table")
    signed = exp.mode == "contrast"
    out = table_mod.Table(title=f"dlbacktrace · {exp.mode} mode",
                          caption=_scale_note(include_special), show_lines=False)
    out.add_column("class")
    out.add_column("scale")
    out.add_column("tokens")
    for i, table in enumerate(exp.tables):
        keep = ~table.padding
        rel = exp.relevance[i].numpy()[keep]
        special = table.special[keep]
        scale = row_scale(rel, special, include_special)
        texts = [t for t, k in zip(table.texts, keep, strict=True) if k]
        out.add_row(exp.label(i), legend_rich(scale, signed),
                    _rich_line(texts, rel, signed, special, scale))
    return out


def generation_rich(exp: GenerationExplanation, include_special: bool = False) -> Any:
    """A rich renderable: each generated token with its heat-mapped context and colour scale.

    Parameters
    ----------
    exp
        The generation explanation.
    include_special
        Let special tokens set each row's colour scale.
    """
    table_mod = _require("rich.table")
    signed = exp.mode == "contrast"
    out = table_mod.Table(title=f"dlbacktrace · generation · {exp.mode} mode",
                          caption=_scale_note(include_special))
    out.add_column("token")
    out.add_column("p", justify="right")
    out.add_column("scale")
    out.add_column("context")
    for k in range(exp.steps):
        stop = exp.prompt_length + k
        rel = exp.matrix[k, :stop].numpy()
        special = exp.table.special[:stop]
        scale = row_scale(rel, special, include_special)
        line = _rich_line(exp.table.texts[:stop], rel, signed, special, scale)
        out.add_row(visible_token(exp.table.texts[stop]), f"{float(exp.probabilities[k]):.3f}",
                    legend_rich(scale, signed), line)
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
