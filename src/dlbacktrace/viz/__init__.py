"""Plotting helpers for relevance maps (needs the optional ``matplotlib`` dependency).

Everything here consumes an :class:`~dlbacktrace.Explanation` (``plot_explanation``, which
``Explanation.plot()`` calls) or the arrays it holds. Importing this package does not import
matplotlib; each function does so when called.
"""

from dlbacktrace.viz.explanation import plot_explanation
from dlbacktrace.viz.features import plot_features
from dlbacktrace.viz.heatmap import (
    plot_contrast,
    plot_image,
    plot_image_relevance,
    plot_relevance_grid,
    save_figure,
)
from dlbacktrace.viz.html import explanation_html
from dlbacktrace.viz.tokens import plot_token_relevance

__all__ = [
    "explanation_html",
    "plot_contrast",
    "plot_explanation",
    "plot_features",
    "plot_image",
    "plot_image_relevance",
    "plot_relevance_grid",
    "plot_token_relevance",
    "save_figure",
]
