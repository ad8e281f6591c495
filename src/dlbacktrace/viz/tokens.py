"""Token highlights: relevance as the background colour of each token (HTML and matplotlib).

Colours follow the package convention: unsigned relevance shades from white to red; signed
relevance (contrast net map) is red for evidence for the explained output and blue for evidence
against it. Each row is scaled by its own largest absolute value; :func:`colour_scale` can leave
tokens out of that maximum (special tokens, whose attention-sink relevance would wash out the
rest) and larger values are then clipped to the end colour. :func:`legend_html` draws the scale.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dlbacktrace.engine.errors import InputError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "NEWLINE_MARK",
    "TOKEN_STYLE",
    "colour_scale",
    "legend_html",
    "plot_token_relevance",
    "token_colours",
    "token_span_html",
    "visible_token",
]

NEWLINE_MARK = "⏎"
TOKEN_STYLE = (
    "<style>.dlbt{font-family:ui-monospace,monospace;line-height:1.9}"
    ".dlbt span.t{border-radius:3px;padding:1px 0;white-space:pre-wrap}"
    ".dlbt .sp{color:#888}.dlbt .gen{outline:1px solid #444}"
    ".dlbt td{vertical-align:top;padding:2px 6px}"
    ".dlbt .lg{white-space:nowrap;font-size:smaller}.dlbt .lg i{font-style:normal}"
    ".dlbt .lg .bar{display:inline-block;width:64px;height:0.8em;margin:0 4px;"
    "border:1px solid #bbb;vertical-align:middle}</style>"
)


def visible_token(text: str) -> str:
    """A token's text for a table cell, where whitespace would vanish: newlines as ``⏎``,
    tabs as ``⇥``, and a token of spaces only as one ``␣`` per space.

    Parameters
    ----------
    text
        The decoded token.
    """
    shown = text.replace("\r\n", NEWLINE_MARK).replace("\n", NEWLINE_MARK)
    shown = shown.replace("\r", NEWLINE_MARK).replace("\t", "⇥")
    if shown and not shown.strip(" "):
        shown = shown.replace(" ", "␣")
    return shown


def colour_scale(values: Any, exclude: Any = None) -> float:
    """The value that gets the end colour: the largest ``|value|`` among tokens not excluded.

    Parameters
    ----------
    values
        Relevance of each token of one row.
    exclude
        Boolean mask of tokens left out of the maximum (e.g. special tokens); None keeps all.
    """
    v = np.abs(np.asarray(values, dtype=np.float64)).reshape(-1)
    if exclude is not None:
        v = v[~np.asarray(exclude, dtype=bool).reshape(-1)]
    return float(v.max()) if v.size else 0.0


def token_colours(values: np.ndarray, signed: bool, scale: float | None = None) -> np.ndarray:
    """``[T, 3]`` RGB (0-255) per value: white→red (unsigned), blue←white→red (signed).

    Parameters
    ----------
    values
        Relevance of each token.
    signed
        Whether negative values mean evidence against (blue) rather than magnitude.
    scale
        The ``|value|`` that gets the end colour (larger ones are clipped); None: the largest
        ``|value|``.
    """
    v = np.asarray(values, dtype=np.float64)
    if scale is None:
        scale = float(np.abs(v).max()) if v.size else 0.0
    x = v / scale if scale > 0 else np.zeros_like(v)
    x = np.clip(x, -1.0, 1.0) if signed else np.clip(np.abs(x), 0.0, 1.0)
    rgb = np.full(v.shape + (3,), 255.0)
    pos, neg = np.clip(x, 0, None), np.clip(-x, 0, None)
    rgb[..., 1] -= 200 * (pos + neg)  # fade green both ways
    rgb[..., 2] -= 200 * pos  # red for positive
    rgb[..., 0] -= 200 * neg  # blue for negative
    return rgb.round().astype(np.int64)


def _scale_text(value: float) -> str:
    return f"{value:.3g}"


def legend_html(scale: float, signed: bool, note: str | None = None) -> str:
    """A colour bar with its value range: ``0 [white→red] scale`` (unsigned) or
    ``−scale [blue→white→red] +scale`` (signed).

    Parameters
    ----------
    scale
        The value of the end colour (:func:`colour_scale`).
    signed
        Diverging colours centred at 0.
    note
        Extra tooltip text (e.g. that special tokens are left out of the scale).
    """
    stops = token_colours(np.linspace(-1.0 if signed else 0.0, 1.0, 5), signed, scale=1.0)
    gradient = ",".join(f"rgb({r},{g},{b})" for r, g, b in stops)
    low = f"-{_scale_text(scale)}" if signed else "0"
    high = f"+{_scale_text(scale)}" if signed else _scale_text(scale)
    title = "colour scale of this row" + (f"; {note}" if note else "")
    # No <span>s here: token spans are the only spans of a token view.
    return (
        f'<div class="lg" title="{html.escape(title)}"><i class="lo">{low}</i>'
        f'<i class="bar" style="background:linear-gradient(to right,{gradient})"></i>'
        f'<i class="hi">{high}</i></div>'
    )


def token_span_html(text: str, rgb: np.ndarray, title: str, cls: str = "t") -> str:
    """One token as an escaped HTML ``span`` with its colour and a tooltip.

    Parameters
    ----------
    text
        The token's text (escaped here; newlines shown as ``↵``).
    rgb
        Its background colour, three integers 0-255.
    title
        The tooltip (escaped here).
    cls
        CSS classes of the span (``"t"``, ``"t sp"`` for special tokens).
    """
    shown = html.escape(text).replace("\n", "↵<br>")
    return (
        f'<span class="{cls}" style="background:rgb({rgb[0]},{rgb[1]},{rgb[2]})" '
        f'title="{html.escape(title)}">{shown}</span>'
    )


def plot_token_relevance(
    tokens: Sequence[str],
    relevance: Any,
    *,
    signed: bool | None = None,
    ax: Any = None,
    title: str | None = None,
) -> Figure:
    """A strip of token cells coloured by relevance, the tokens as labels.

    Parameters
    ----------
    tokens
        The token strings of one sequence.
    relevance
        Their relevance (``[T]``).
    signed
        Diverging colours centred at 0; None decides from the data (any negative value).
    ax
        An existing Axes; None makes a new figure.
    title
        Axes title.
    """
    from dlbacktrace.viz.heatmap import DIVERGING_CMAP, _new_figure

    values = np.asarray(
        relevance.detach().cpu().double().numpy() if hasattr(relevance, "detach") else relevance,
        dtype=np.float64,
    ).reshape(-1)
    if values.shape[0] != len(tokens):
        raise InputError(f"{len(tokens)} tokens for {values.shape[0]} relevance values")
    signed = bool((values < 0).any()) if signed is None else signed
    if ax is None:
        fig = _new_figure((max(4.0, 0.45 * len(tokens) + 1.0), 1.6))
        ax = fig.add_subplot()
    scale = float(np.abs(values).max()) or 1.0
    image = ax.imshow(values[None, :], cmap=DIVERGING_CMAP if signed else "Reds", aspect="auto",
                      vmin=-scale if signed else 0.0, vmax=scale, interpolation="nearest")
    ax.set_xticks(range(len(tokens)))
    ax.set_xticklabels([t.replace("\n", "↵") for t in tokens], rotation=90, fontsize=8)
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize="small")
    ax.figure.colorbar(image, ax=ax, shrink=0.8)
    return ax.figure
