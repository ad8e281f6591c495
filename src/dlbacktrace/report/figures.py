"""Figures for reports and the dashboard as base64 PNG data (embedded, never linked)."""

from __future__ import annotations

import base64
import io
from typing import Any

__all__ = ["contrast_png", "figure_png", "heatmap_png", "token_color"]


def figure_png(fig: Any, dpi: int = 110) -> str:
    """A matplotlib figure as a ``data:image/png;base64,...`` URI (rendered with Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def heatmap_png(image: Any, relevance: Any, title: str | None = None) -> str:
    """The input beside its relevance map (signed maps get a diverging scale centred at 0)."""
    from matplotlib.figure import Figure

    from dlbacktrace.viz import plot_image, plot_image_relevance

    fig = Figure(figsize=(6.4, 3.0), layout="constrained")
    ax_in, ax_rel = fig.subplots(1, 2)
    plot_image(image, ax_in, "input")
    plot_image_relevance(image, relevance, ax=ax_rel, title=title or "relevance")
    return figure_png(fig)


def contrast_png(image: Any, positive: Any, negative: Any, net: Any) -> str:
    """Contrast panels: input, positive (for), negative (against), net."""
    from dlbacktrace.viz import plot_contrast

    return figure_png(plot_contrast(image, positive, negative, net))


def token_color(value: float, scale: float) -> str:
    """Background colour of a token: red for positive relevance, blue for negative."""
    if scale <= 0:
        return "rgba(0,0,0,0)"
    alpha = min(abs(value) / scale, 1.0) * 0.85
    rgb = "220,40,40" if value >= 0 else "40,90,220"
    return f"rgba({rgb},{alpha:.3f})"
