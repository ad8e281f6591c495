"""Plots of global explanations: importance bars, beeswarm, per-class maps, top words, the
bias lens's sensitive-feature shares per group, and a comparison of two models.

Like ``heatmap``, every function builds a stand-alone Agg ``Figure`` (no pyplot, no rcParams
changes) and returns it; matplotlib is imported lazily (``dlbacktrace[viz]``). Colours follow the
package convention: red = evidence for the explained class, blue = evidence against.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from dlbacktrace.engine.errors import InputError
from dlbacktrace.viz.heatmap import DIVERGING_CMAP, SEQUENTIAL_CMAP, _new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from dlbacktrace.aggregate import Comparison, GlobalExplanation

__all__ = [
    "plot_beeswarm",
    "plot_class_maps",
    "plot_comparison",
    "plot_feature_importance",
    "plot_sensitive_shares",
    "plot_top_words",
]

FOR_COLOUR, AGAINST_COLOUR, NEUTRAL_COLOUR = "#c0392b", "#2e6da4", "#555555"


def plot_feature_importance(
    g: GlobalExplanation, input: str | None = None, n: int = 20, cls: int | None = None
) -> Figure:
    """Horizontal bars of mean |relevance| for the ``n`` most important features.

    ``cls`` restricts to rows explained as that class. In contrast mode each bar is split into
    mean positive evidence (red, right) and mean negative evidence (blue, left).
    """
    name, m = g.moments(input)
    labels = g.feature_labels(name)
    per_class = cls is not None
    pick = (lambda a: a[cls]) if per_class else (lambda a: a)
    importance = pick(m.mean("sumabs", per_class)).reshape(-1)
    order = np.argsort(-importance, kind="stable")[:n][::-1]  # biggest on top
    fig = _new_figure((6.0, 0.3 * len(order) + 1.2))
    ax = fig.add_subplot()
    y = np.arange(len(order))
    if m.contrast:
        pos = pick(m.mean("pos", per_class)).reshape(-1)[order]
        neg = pick(m.mean("neg", per_class)).reshape(-1)[order]
        ax.barh(y, pos, color=FOR_COLOUR, label="positive (for)")
        ax.barh(y, -neg, color=AGAINST_COLOUR, label="negative (against)")
        ax.axvline(0, color="black", lw=0.8)
        ax.legend(loc="lower right", fontsize="small")
        ax.set_xlabel("mean evidence per row")
    else:
        ax.barh(y, importance[order], color=NEUTRAL_COLOUR)
        ax.set_xlabel("mean |relevance| per row")
    ax.set_yticks(y, [labels[i] for i in order], fontsize="small")
    who = f"class {g.class_names[cls]}" if per_class else "all classes"
    ax.set_title(f"Global feature importance ({who}, {g.rows} rows)", fontsize="medium")
    return fig


def plot_beeswarm(g: GlobalExplanation, input: str | None = None, n: int = 15) -> Figure:
    """Per-row relevance of the ``n`` most important features (rows from the kept sample),
    coloured by the feature's value (low = blue, high = red), like a SHAP summary plot."""
    name, _ = g.moments(input)
    if g.sample is None or f"rel:{name}" not in g.sample.values:
        raise InputError("no row sample was kept for this input (aggregate with sample_size>0 "
                         "on [rows, features] data)")
    rel, x = g.sample.values[f"rel:{name}"], g.sample.values[f"x:{name}"]
    labels = g.feature_labels(name)
    order = np.argsort(-np.abs(rel).mean(0), kind="stable")[:n][::-1]
    fig = _new_figure((6.5, 0.35 * len(order) + 1.3))
    ax = fig.add_subplot()
    jitter = np.random.default_rng(0).uniform(-0.3, 0.3, size=len(rel))  # display only
    lo, hi = x.min(0), x.max(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        scaled = np.where(hi > lo, (x - lo) / (hi - lo), 0.5)
    points = None
    for row, j in enumerate(order):
        points = ax.scatter(rel[:, j], row + jitter, c=scaled[:, j], cmap="coolwarm",
                            vmin=0, vmax=1, s=8, linewidths=0)
    ax.axvline(0, color="black", lw=0.8)
    ax.set_yticks(np.arange(len(order)), [labels[j] for j in order], fontsize="small")
    ax.set_xlabel("relevance of the feature in one row" + (" (net = for - against)"
                                                          if g.mode == "contrast" else ""))
    ax.set_title(f"Per-row relevance ({len(rel)} sampled rows of {g.rows})", fontsize="medium")
    if points is not None:
        bar = fig.colorbar(points, ax=ax, shrink=0.7)
        bar.set_label("feature value (low → high)")
    return fig


def plot_class_maps(
    g: GlobalExplanation, input: str | None = None, classes: list[int] | None = None,
    ncols: int = 5,
) -> Figure:
    """Mean relevance map of each class (channels summed), for image inputs."""
    maps = g.class_maps(input)
    if maps.ndim not in (3, 4):
        raise InputError(f"class maps need image inputs [C, H, W] or [H, W], got {maps.shape[1:]}")
    if maps.ndim == 4:
        maps = maps.sum(axis=1)
    counts = g.class_counts()
    classes = [k for k in range(g.n_classes) if counts[k] > 0] if classes is None else classes
    if not classes:
        raise InputError("no class has any explained rows")
    signed = bool(np.nanmin(maps[classes]) < 0)
    ncols = max(1, min(ncols, len(classes)))
    nrows = -(-len(classes) // ncols)
    fig = _new_figure((2.2 * ncols + 0.6, 2.3 * nrows))
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).reshape(-1)
    for ax, k in zip(axes, classes, strict=False):
        heat = maps[k]
        limit = float(np.nanmax(np.abs(heat))) or 1.0
        im = ax.imshow(heat, cmap=DIVERGING_CMAP if signed else SEQUENTIAL_CMAP,
                       vmin=-limit if signed else 0.0, vmax=limit, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{g.class_names[k]} (n={counts[k]})", fontsize="small")
        fig.colorbar(im, ax=ax, shrink=0.7)
    for ax in axes[len(classes):]:
        ax.set_axis_off()
    return fig


def plot_top_words(
    g: GlobalExplanation, n: int = 10, min_count: int = 5, level: str = "word",
    classes: list[int] | None = None,
) -> Figure:
    """For each class, the ``n`` words (or tokens) with the highest mean relevance per
    occurrence among those seen at least ``min_count`` times."""
    classes = list(range(g.n_classes)) if classes is None else classes
    fig = _new_figure((3.2 * len(classes) + 0.5, 0.3 * n + 1.2))
    axes = np.atleast_1d(fig.subplots(1, len(classes), squeeze=False)).reshape(-1)
    for ax, k in zip(axes, classes, strict=True):
        top = g.top_words(k, n=n, min_count=min_count, level=level)
        values = top["mean"].to_numpy()[::-1]
        ax.barh(np.arange(len(values)), values,
                color=np.where(values >= 0, FOR_COLOUR, AGAINST_COLOUR))
        ax.set_yticks(np.arange(len(values)), list(top[level])[::-1], fontsize="small")
        ax.set_title(f"class {g.class_names[k]}", fontsize="small")
        ax.set_xlabel("mean relevance per occurrence", fontsize="small")
    fig.suptitle(f"Top {level}s per class (seen ≥ {min_count} times)", fontsize="medium")
    return fig


def plot_sensitive_shares(g: GlobalExplanation) -> Figure:
    """The bias lens: per sensitive feature, the mean share of |relevance| it receives in each
    group (bars, ±2 standard errors), the share over all rows as a dashed line.

    Parameters
    ----------
    g
        A global explanation aggregated with ``groups=`` and ``sensitive=``.
    """
    from dlbacktrace.aggregate.bias import ALL_ROWS

    frame = g.sensitive_shares()
    features = list(dict.fromkeys(frame["sensitive"]))
    groups = [x for x in dict.fromkeys(frame["group"]) if x != ALL_ROWS]
    fig = _new_figure((3.0 * len(features) + 1.0, 0.35 * len(groups) + 1.6))
    axes = np.atleast_1d(fig.subplots(1, len(features), squeeze=False)).reshape(-1)
    for ax, name in zip(axes, features, strict=True):
        part = frame[frame["sensitive"] == name].set_index("group")
        y = np.arange(len(groups))
        share = part.loc[groups, "share"].to_numpy(float)
        stderr = np.nan_to_num(part.loc[groups, "stderr"].to_numpy(float))
        ax.barh(y, share, xerr=2 * stderr, color=NEUTRAL_COLOUR, capsize=2)
        ax.axvline(float(part.loc[ALL_ROWS, "share"]), color=FOR_COLOUR, ls="--", lw=1,
                   label="all rows")
        ax.set_yticks(y, groups, fontsize="small")
        ax.set_title(name, fontsize="small")
        ax.set_xlabel("share of |relevance| per row", fontsize="small")
    axes[0].legend(loc="lower right", fontsize="small")
    fig.suptitle(f"Relevance on sensitive features by group ({g.rows} rows; ±2 SE)",
                 fontsize="medium")
    return fig


def plot_comparison(cmp: Comparison, n: int = 15) -> Figure:
    """Importance of the ``n`` most changed features in both models, with ±2 standard errors
    of the change drawn around the second model's value."""
    order = np.argsort(-np.abs(cmp.change), kind="stable")[:n][::-1]
    fig = _new_figure((6.5, 0.35 * len(order) + 1.4))
    ax = fig.add_subplot()
    y = np.arange(len(order))
    a, b = cmp.importance_a[order], cmp.importance_b[order]
    ax.hlines(y, np.minimum(a, b), np.maximum(a, b), color="#999999", lw=2)
    ax.scatter(a, y, color=NEUTRAL_COLOUR, label=cmp.name_a, zorder=3)
    ax.errorbar(b, y, xerr=2 * cmp.stderr[order], fmt="s", color=FOR_COLOUR, label=cmp.name_b,
                zorder=4, capsize=2)
    ax.set_yticks(y, [cmp.labels[i] for i in order], fontsize="small")
    ax.set_xlabel("mean |relevance| per row")
    ax.legend(loc="lower right", fontsize="small")
    ax.set_title(f"Biggest changes (Spearman ρ = {cmp.rank_correlation:.2f})", fontsize="medium")
    return fig
