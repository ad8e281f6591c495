"""Relevance of the features of one row: bars (largest first) and a waterfall of the ledger.

Relevance is additive, so the features left out of a plot are summed into one bar and the
waterfall ends exactly where the explanation's ledger does: ``Σ relevance + absorbed = Σ seed``
(the explained logit in contrast mode). Colours: red = evidence for, blue = against, grey for
unsigned magnitudes and the absorbed remainder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from dlbacktrace.engine.errors import InputError
from dlbacktrace.viz.global_plots import AGAINST_COLOUR, FOR_COLOUR, NEUTRAL_COLOUR
from dlbacktrace.viz.heatmap import _new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["plot_features", "top_features"]


def top_features(
    values: Any, names: Sequence[str], max_display: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """The ``max_display - 1`` features of largest |value| and one bar summing the rest.

    Returns labels, values and the features' positions (-1 for the summed rest).

    Parameters
    ----------
    values
        One relevance value per feature.
    names
        One name per feature.
    max_display
        The most bars returned (at least 1).
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if len(names) != v.shape[0]:
        raise InputError(f"{len(names)} feature names for {v.shape[0]} values")
    if max_display < 1:
        raise InputError(f"max_display must be at least 1, got {max_display}")
    order = np.argsort(-np.abs(v), kind="stable")
    if v.shape[0] <= max_display:
        return [names[i] for i in order], v[order], order
    keep = order[: max_display - 1]
    rest = v[order[max_display - 1:]]
    labels = [names[i] for i in keep] + [f"{rest.shape[0]} other features"]
    return labels, np.append(v[keep], rest.sum()), np.append(keep, -1)


def _draw_bars(ax: Any, labels: list[str], widths: np.ndarray, lefts: np.ndarray,
               colours: list[str], xlabel: str, title: str | None) -> Any:
    """Horizontal bars, the first label on top, on ``ax`` (a new figure sized to them when
    None); returns the Axes."""
    if ax is None:
        fig = _new_figure((5.5, 0.35 * len(labels) + 1.3))
        ax = fig.add_subplot()
    y = np.arange(len(labels))[::-1]
    ax.barh(y, widths, left=lefts, color=colours)
    ax.set_yticks(y)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xlabel(xlabel)
    if title:
        ax.set_title(title, fontsize="small")
    return ax


def _colours(values: np.ndarray, signed: bool) -> list[str]:
    if not signed:
        return [NEUTRAL_COLOUR] * len(values)
    return [FOR_COLOUR if x >= 0 else AGAINST_COLOUR for x in values]


def plot_features(
    values: Any,
    names: Sequence[str],
    *,
    kind: str = "bar",
    absorbed: float = 0.0,
    absorbed_label: str = "absorbed",
    signed: bool | None = None,
    max_display: int = 10,
    ax: Any = None,
    title: str | None = None,
) -> Figure:
    """One row's relevance per feature: bars, or a waterfall of its ledger.

    ``kind="bar"``: horizontal bars, largest |relevance| on top. ``kind="waterfall"``: steps
    from 0 through each feature's relevance and then the absorbed amount, ending at the row's
    ``Σ seed`` (the explained logit in contrast mode).

    Parameters
    ----------
    values
        One relevance value per feature (signed in contrast mode).
    names
        One name per feature.
    kind
        ``"bar"`` or ``"waterfall"``.
    absorbed
        Waterfall: the row's absorbed relevance (biases, constants), drawn as the last step.
    absorbed_label
        Waterfall: the label of that step.
    signed
        Bars: colour by sign (contrast mode); None decides from the data.
    max_display
        The most feature bars; the remaining features are summed into the last one.
    ax
        An existing Axes; None makes a new figure.
    title
        Axes title.
    """
    labels, shown, _ = top_features(values, names, max_display)
    if kind == "bar":
        signed = bool((shown < 0).any()) if signed is None else signed
        ax = _draw_bars(ax, labels, shown, np.zeros_like(shown), _colours(shown, signed),
                        "relevance", title)
        ax.axvline(0.0, color="black", linewidth=0.6)
        return ax.figure
    if kind != "waterfall":
        raise InputError(f'kind must be "bar" or "waterfall", got {kind!r}')
    labels = [*labels, absorbed_label]
    steps = np.append(shown, float(absorbed))
    starts = np.concatenate([[0.0], np.cumsum(steps)[:-1]])
    colours = _colours(steps, signed=True)
    colours[-1] = NEUTRAL_COLOUR
    end = float(starts[-1] + steps[-1])
    ax = _draw_bars(ax, labels, steps, starts, colours, f"relevance (total {end:.4g})", title)
    ax.axvline(end, color="black", linewidth=0.6, linestyle="--")
    return ax.figure
