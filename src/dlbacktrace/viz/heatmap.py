"""Heat maps of relevance for images.

matplotlib is imported inside the functions so that ``import dlbacktrace`` never needs it (it is
an optional dependency, ``dlbacktrace[viz]``). Figures are built as ``matplotlib.figure.Figure``
objects rendered by the Agg canvas: no pyplot, no global figure manager, no change to rcParams, so
these helpers are safe to call from servers, tests and notebooks alike.

Colour conventions, used by every function here so that figures can be compared at a glance:

* unsigned relevance (default mode, or one half of a contrast): a sequential colormap from 0;
* signed relevance (contrast ``net`` = positive - negative): a diverging colormap centred at 0,
  red for evidence *for* the target, blue for evidence *against* it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dlbacktrace.engine.errors import InputError

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_contrast",
    "plot_image",
    "plot_image_relevance",
    "plot_relevance_grid",
    "save_figure",
]

SEQUENTIAL_CMAP = "inferno"
POSITIVE_CMAP = "Reds"
NEGATIVE_CMAP = "Blues"
DIVERGING_CMAP = "RdBu_r"


# --------------------------------------------------------------------------------------------
# array handling
# --------------------------------------------------------------------------------------------


def _to_numpy(x: Any, name: str) -> np.ndarray:
    """Accept torch tensors and array-likes; return a float64 numpy array (on the CPU)."""
    if hasattr(x, "detach"):  # torch.Tensor, without importing torch here
        x = x.detach().to("cpu").float().numpy()
    arr = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or Inf values; cannot plot it.")
    return arr


def _squeeze_batch(arr: np.ndarray, name: str) -> np.ndarray:
    """Drop a leading batch dimension of size 1 (explanations are usually batched)."""
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim not in (2, 3):
        raise InputError(
            f"{name} must be an image of shape HxW or CxHxW (optionally with a leading batch "
            f"dimension of 1), got shape {tuple(arr.shape)}."
        )
    return arr


def _image_for_display(image: Any) -> np.ndarray:
    """Return an HxW (grayscale) or HxWx3 (RGB) array scaled to [0, 1] for ``imshow``.

    Images are min-max scaled because models usually see normalised inputs whose range is
    meaningless for display.
    """
    arr = _squeeze_batch(_to_numpy(image, "image"), "image")
    if arr.ndim == 3:
        channels = arr.shape[0]
        if channels == 1:
            arr = arr[0]
        elif channels == 3:
            arr = np.transpose(arr, (1, 2, 0))
        else:  # not displayable as colour: show the mean intensity
            arr = arr.mean(axis=0)
    lo, hi = float(arr.min()), float(arr.max())
    return (arr - lo) / (hi - lo) if hi > lo else np.zeros_like(arr)


def _relevance_map(relevance: Any, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Reduce a relevance tensor to an HxW map.

    Channels are *summed*, not averaged: relevance is additive, so the relevance of a pixel is
    the sum over its channels and the map still adds up to the explanation's total.
    """
    arr = _squeeze_batch(_to_numpy(relevance, "relevance"), "relevance")
    if arr.ndim == 3:
        arr = arr.sum(axis=0)
    if shape is not None and arr.shape != shape:
        raise InputError(
            f"relevance has spatial shape {tuple(arr.shape)} but the image is {shape}; "
            "pass the relevance of this very input (Explanation.relevance is shaped like x)."
        )
    return arr


def _spatial_shape(display_image: np.ndarray) -> tuple[int, int]:
    return (int(display_image.shape[0]), int(display_image.shape[1]))


# --------------------------------------------------------------------------------------------
# figure plumbing
# --------------------------------------------------------------------------------------------


def _new_figure(figsize: tuple[float, float]) -> Figure:
    """A stand-alone Agg figure (never registered with pyplot, so it is garbage-collected)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _clean_axes(ax: Axes, title: str | None) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize="small")


def _draw_heat(
    ax: Axes,
    heat: np.ndarray,
    *,
    cmap: str,
    vmin: float,
    vmax: float,
    background: np.ndarray | None,
    colorbar: bool,
) -> None:
    """Draw ``heat`` on ``ax``; optionally blended over a grayscale ``background``.

    In overlay mode the opacity of each pixel grows with its |relevance|, so irrelevant pixels
    stay transparent and the input remains readable underneath.
    """
    from matplotlib.colors import Normalize

    norm = Normalize(vmin=vmin, vmax=vmax)
    if background is not None:
        gray = background if background.ndim == 2 else background.mean(axis=2)
        ax.imshow(gray, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
        scale = max(abs(vmin), abs(vmax))
        alpha = np.clip(np.abs(heat) / scale, 0.0, 1.0) if scale > 0 else np.zeros_like(heat)
        im = ax.imshow(
            heat, cmap=cmap, norm=norm, alpha=0.15 + 0.85 * alpha, interpolation="nearest"
        )
    else:
        im = ax.imshow(heat, cmap=cmap, norm=norm, interpolation="nearest")
    if colorbar:
        ax.figure.colorbar(im, ax=ax, shrink=0.8)


def _limits(heat: np.ndarray, signed: bool) -> tuple[float, float]:
    """Colour limits: [0, max] for unsigned maps, symmetric [-m, m] (centred at 0) for signed."""
    if signed:
        m = float(np.abs(heat).max())
        m = m if m > 0 else 1.0
        return -m, m
    m = float(heat.max())
    return 0.0, (m if m > 0 else 1.0)


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def plot_image_relevance(
    image: Any,
    relevance: Any,
    ax: Axes | None = None,
    title: str | None = None,
    cmap: str | None = None,
    *,
    signed: bool | None = None,
    overlay: bool = False,
    colorbar: bool = True,
) -> Figure:
    """Draw the relevance map of one image and return the figure it is on.

    ``image`` is HxW or CxHxW (PyTorch layout; a leading batch dimension of 1 is dropped);
    ``relevance`` has the same shape (as ``Explanation.relevance``) or is already HxW.

    ``signed=None`` picks the colour scale from the data: any negative value (e.g. contrast
    ``net`` relevance) gives a diverging colormap centred at 0, otherwise a sequential one from
    0, so that zero relevance always has the same colour. ``overlay=True`` blends the map over
    the input shown in grayscale; otherwise only the map is drawn (use a separate axes for the
    input). With ``ax=None`` a new one-panel figure is created.
    """
    display = _image_for_display(image)
    heat = _relevance_map(relevance, _spatial_shape(display))
    if signed is None:
        signed = bool((heat < 0).any())
    if cmap is None:
        cmap = DIVERGING_CMAP if signed else SEQUENTIAL_CMAP
    if ax is None:
        fig = _new_figure((3.6, 3.0))
        ax = fig.add_subplot()
    vmin, vmax = _limits(heat, signed)
    _draw_heat(
        ax,
        heat,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        background=display if overlay else None,
        colorbar=colorbar,
    )
    _clean_axes(ax, title)
    return ax.figure


def plot_image(image: Any, ax: Axes, title: str | None = None) -> None:
    """Draw the input itself (grayscale or RGB, min-max scaled) next to its relevance maps."""
    display = _image_for_display(image)
    if display.ndim == 2:
        ax.imshow(display, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(display, interpolation="nearest")
    _clean_axes(ax, title)


def plot_contrast(
    image: Any,
    positive: Any,
    negative: Any,
    net: Any | None = None,
    *,
    axes: Sequence[Axes] | None = None,
    title: str | None = None,
    colorbar: bool = True,
) -> Figure:
    """Show a contrast-mode explanation as four panels: input, positive, negative, net.

    Positive and negative relevance share one colour scale so their magnitudes can be compared
    directly; ``net`` (positive - negative, computed if not given) uses a diverging scale
    centred at 0 with the same red-for / blue-against convention. Pass ``axes`` (four Axes,
    e.g. one row of a grid) to draw into an existing figure; otherwise a new one is created.
    """
    display = _image_for_display(image)
    shape = _spatial_shape(display)
    pos = _relevance_map(positive, shape)
    neg = _relevance_map(negative, shape)
    net_map = pos - neg if net is None else _relevance_map(net, shape)
    if (pos < 0).any() or (neg < 0).any():
        raise InputError(
            "positive and negative relevance must be non-negative magnitudes "
            "(Explanation.positive / Explanation.negative in contrast mode)."
        )

    if axes is None:
        fig = _new_figure((12.0, 3.0))
        axes = fig.subplots(1, 4)
        if title:
            fig.suptitle(title)
    if len(axes) != 4:
        raise InputError(f"plot_contrast needs 4 axes, got {len(axes)}.")
    ax_in, ax_pos, ax_neg, ax_net = axes

    plot_image(image, ax_in, "input")
    _, shared_max = _limits(np.maximum(pos, neg), signed=False)
    for ax, half, cmap, title in ((ax_pos, pos, POSITIVE_CMAP, "positive (for)"),
                                  (ax_neg, neg, NEGATIVE_CMAP, "negative (against)")):
        _draw_heat(ax, half, cmap=cmap, vmin=0.0, vmax=shared_max, background=None,
                   colorbar=colorbar)
        _clean_axes(ax, title)
    vmin, vmax = _limits(net_map, signed=True)
    _draw_heat(
        ax_net,
        net_map,
        cmap=DIVERGING_CMAP,
        vmin=vmin,
        vmax=vmax,
        background=None,
        colorbar=colorbar,
    )
    _clean_axes(ax_net, "net = positive - negative")
    return ax_in.figure


def plot_relevance_grid(
    images: Sequence[Any],
    relevances: Sequence[Any],
    titles: Sequence[str] | None = None,
    *,
    ncols: int = 8,
    cmap: str | None = None,
    colorbar: bool = False,
) -> Figure:
    """A grid of inputs (upper row of each pair) above their relevance maps (lower row).

    Each map is scaled on its own (relevance totals differ from example to example); the colour
    scale's zero is shared, so "no relevance" always looks the same.
    """
    n = len(images)
    if n == 0 or len(relevances) != n:
        raise InputError(
            f"need the same, non-zero number of images and relevance maps "
            f"(got {n} and {len(relevances)})."
        )
    if titles is not None and len(titles) != n:
        raise InputError(f"got {len(titles)} titles for {n} images.")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig = _new_figure((1.6 * ncols + 0.4, 3.3 * nrows))
    grid = fig.subplots(2 * nrows, ncols, squeeze=False)
    for k in range(nrows * ncols):
        r, c = divmod(k, ncols)
        ax_img, ax_rel = grid[2 * r][c], grid[2 * r + 1][c]
        if k >= n:
            ax_img.set_axis_off()
            ax_rel.set_axis_off()
            continue
        plot_image(images[k], ax_img, titles[k] if titles is not None else None)
        plot_image_relevance(images[k], relevances[k], ax=ax_rel, cmap=cmap, colorbar=colorbar)
    return fig


def save_figure(fig: Figure, path: str | Path, *, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix, e.g. .png, .pdf, .svg).

    Parent directories are created. Saving goes through the figure's own Agg canvas, so no
    interactive backend is ever involved.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if fig.canvas is None or type(fig.canvas).__name__ == "FigureCanvasBase":
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(fig)
    fig.savefig(path, dpi=dpi)
    return path
