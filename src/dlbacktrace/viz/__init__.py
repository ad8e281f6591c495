"""Plotting helpers for relevance maps (needs the optional ``matplotlib`` dependency).

Importing this package does not import matplotlib; each function does so when called.
"""

from dlbacktrace.viz.heatmap import (
    plot_contrast,
    plot_image,
    plot_image_relevance,
    plot_relevance_grid,
    save_figure,
)

__all__ = [
    "plot_contrast",
    "plot_image",
    "plot_image_relevance",
    "plot_relevance_grid",
    "save_figure",
]
