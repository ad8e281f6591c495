"""Feature groups for perturbation methods (LIME, KernelSHAP) and metrics.

A feature mask holds, for every input element, the index of the feature it belongs to (−1:
belongs to none). Tables: one feature per column. Images: square patches, or SLIC superpixels
(shared over channels). Tokens: one feature per position.
"""

from __future__ import annotations

import numpy as np
import torch

from dlbacktrace.engine.errors import InputError


def column_mask(x: torch.Tensor) -> torch.Tensor:
    """``[B, F]`` tables: feature ``f`` is column ``f``."""
    return torch.arange(x.shape[1], device=x.device).expand(x.shape[0], -1).clone()


def token_mask(input_ids: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` tokens: feature ``t`` is position ``t``."""
    return column_mask(input_ids)


def patch_mask(x: torch.Tensor, patch: int) -> torch.Tensor:
    """``[B, C, H, W]`` images: non-overlapping ``patch``-sized squares, shared over channels."""
    if x.dim() != 4:
        raise InputError(f"patch masks need [B, C, H, W] images, got shape {tuple(x.shape)}")
    if patch < 1:
        raise InputError(f"patch size must be >= 1, got {patch}")
    b, c, h, w = x.shape
    rows = torch.arange(h, device=x.device) // patch
    cols = torch.arange(w, device=x.device) // patch
    per_row = -(-w // patch)
    ids = rows[:, None] * per_row + cols[None, :]
    return ids.expand(b, c, h, w).clone()


def slic_mask(x: torch.Tensor, n_segments: int = 50, compactness: float = 10.0) -> torch.Tensor:
    """``[B, C, H, W]`` images: SLIC superpixels per image (scikit-image), shared over channels."""
    try:
        from skimage.segmentation import slic
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise InputError(
            "superpixel masks need scikit-image: pip install 'dlbacktrace[baselines]'"
        ) from exc
    if x.dim() != 4:
        raise InputError(f"superpixel masks need [B, C, H, W] images, got {tuple(x.shape)}")
    images = x.detach().cpu().numpy()
    masks = []
    for img in images:  # one segmentation per image: SLIC itself is vectorised over pixels
        channel_last = np.moveaxis(img, 0, -1)
        seg = slic(
            channel_last.astype(np.float64),
            n_segments=n_segments,
            compactness=compactness,
            start_label=0,
            channel_axis=-1,
        )
        masks.append(seg)
    ids = torch.from_numpy(np.stack(masks)).to(device=x.device, dtype=torch.long)
    # SLIC can return a single segment (flat or noise-like images): one feature gives LIME and
    # KernelSHAP nothing to fit (KernelSHAP returns NaN), so such images get the patch grid.
    single = ids.flatten(1).amax(1) == 0
    if bool(single.any()):
        grid = patch_mask(x[:1], max(1, min(x.shape[-2:]) // 8))[0, 0]
        ids = torch.where(single[:, None, None], grid, ids)
    return ids[:, None].expand(x.shape).clone()


def default_mask(x: torch.Tensor, kind: str = "auto") -> torch.Tensor:
    """The standard grouping for ``x``: columns, tokens, patches (small images) or superpixels.

    ``kind``: ``"auto"``, ``"columns"``, ``"tokens"``, ``"pixels"``, ``"patches"`` (8x8 grid of
    patches), ``"superpixels"``.
    """
    if kind == "auto":
        if x.dim() == 2:
            kind = "tokens" if not x.is_floating_point() else "columns"
        elif x.dim() == 4:
            kind = "superpixels" if min(x.shape[-2:]) >= 32 else "patches"
        else:
            raise InputError(f"no default feature mask for inputs of shape {tuple(x.shape)}")
    if kind in ("columns", "tokens"):
        return column_mask(x)
    if kind == "pixels":
        return patch_mask(x, 1)
    if kind == "patches":
        return patch_mask(x, max(1, min(x.shape[-2:]) // 8))
    if kind == "superpixels":
        return slic_mask(x)
    raise InputError(
        f"unknown feature mask kind {kind!r}: columns, tokens, pixels, patches, superpixels"
    )
