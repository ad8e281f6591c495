"""``plot_explanation``: one row of an :class:`~dlbacktrace.Explanation`, drawn from what it holds.

The explanation carries its inputs, feature names and tokens, so the plot needs nothing else:
token highlights for the token input, an image heat map for image-shaped maps (``[C, H, W]``
or ``[H, W]`` per row; four contrast panels on request), and bars or a waterfall for feature
vectors. Every plot is a stand-alone Agg ``Figure`` (no pyplot, nothing shown).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from dlbacktrace.engine.errors import InputError
from dlbacktrace.viz.features import plot_features
from dlbacktrace.viz.heatmap import plot_contrast, plot_image_relevance
from dlbacktrace.viz.tokens import plot_token_relevance

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dlbacktrace.engine.explanation import Explanation

__all__ = ["KINDS", "plot_explanation", "plot_kind"]

KINDS = ("image", "contrast", "bar", "waterfall", "tokens")


def _row(exp: Explanation, value: Any, row: int) -> Any:
    return value[row] if exp.batched(value) else value


def plot_kind(exp: Explanation, input: str | None = None) -> str:
    """The plot ``kind=None`` picks: tokens, then image-shaped maps, else feature bars.

    Parameters
    ----------
    exp
        The explanation.
    input
        The input to draw; None for the first.
    """
    name = exp.input_name(input)
    if exp.tokens is not None and name == exp.token_input:
        return "tokens"
    rel = exp.relevance_by_name[name]
    per_row = rel.dim() - (1 if exp.batched(rel) else 0)
    if per_row == 3 or (per_row == 2 and min(rel.shape[-2:]) > 1):
        return "image"
    return "bar"


def _title(exp: Explanation, row: int) -> str:
    if exp.target is None or exp.target.numel() <= row:
        return f"row {row}"
    return f"row {row} · target {exp.output_name(int(exp.target.reshape(-1)[row]))}"


def plot_explanation(
    exp: Explanation,
    row: int = 0,
    *,
    input: str | None = None,
    kind: str | None = None,
    ax: Any = None,
    max_display: int = 10,
) -> Figure:
    """Draw one row of ``exp`` and return the figure.

    Parameters
    ----------
    exp
        The explanation.
    row
        The batch row.
    input
        The input to draw; None for the first.
    kind
        ``"image"``, ``"contrast"`` (input, positive, negative, net; contrast mode),
        ``"bar"``, ``"waterfall"`` or ``"tokens"``; None: :func:`plot_kind`.
    ax
        An existing Axes (not for ``"contrast"``, which draws four panels).
    max_display
        Bars and waterfall: the most features shown (the rest summed into one).
    """
    name = exp.input_name(input)
    kind = kind or plot_kind(exp, name)
    if kind not in KINDS:
        raise InputError(f"kind must be one of {KINDS}, got {kind!r}")
    rows = exp.batch_size
    if rows is not None and not -rows <= row < rows:
        raise InputError(f"row {row} out of range for {rows} rows")
    rel = _row(exp, exp.relevance_by_name[name], row).detach().cpu().double()
    signed = exp.mode == "contrast"
    title = _title(exp, row)
    if kind == "tokens":
        if exp.tokens is None:
            raise InputError("this explanation has no tokens (pass tokens= to explain)")
        return plot_token_relevance(exp.tokens[row], rel.reshape(-1), signed=signed, ax=ax,
                                    title=title)
    value = exp.inputs_by_name.get(name)
    image = _row(exp, value, row) if value is not None else rel
    if kind == "contrast":
        if not signed:
            raise InputError('kind="contrast" needs a contrast-mode explanation')
        if ax is not None:
            raise InputError('kind="contrast" draws four panels; it takes no ax')
        return plot_contrast(image, rel.clamp_min(0), (-rel).clamp_min(0), rel, title=title)
    if kind == "image":
        return plot_image_relevance(image, rel, ax=ax, title=title, signed=signed or None,
                                    overlay=value is not None)
    flat = rel.reshape(-1).numpy()
    names = exp.feature_labels(name, row)
    rest, label = _rest_of_row(exp, name, row) if kind == "waterfall" else (0.0, "")
    return plot_features(flat, names, kind=kind, absorbed=rest, absorbed_label=label,
                         signed=signed, max_display=max_display, ax=ax, title=title)


def _rest_of_row(exp: Explanation, name: str, row: int) -> tuple[float, str]:
    """What the row's ledger holds besides this input: absorbed relevance and other inputs."""
    if exp.absorbed_rows is not None:
        rest = float(exp.absorbed_rows[row])
    elif exp.batch_size in (None, 1):
        rest = exp.total_absorbed
    else:
        rest = float("nan")
    others = [n for n in exp.input_names if n != name]
    for other in others:
        rest += float(np.sum(_row(exp, exp.relevance_by_name[other], row).detach().cpu()
                             .double().numpy()))
    return rest, "absorbed + other inputs" if others else "absorbed"
