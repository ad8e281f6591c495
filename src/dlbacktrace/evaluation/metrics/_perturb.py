"""Shared machinery of the perturbation metrics: feature scores, orders, removal values and
batched evaluation of many perturbed copies of each input.

A metric sees the model as ``forward(x, *extra) -> [N, C]`` scores (``extra``: tensors aligned
with the batch, such as an attention mask, expanded with the perturbed copies). Features are
groups of input elements given by a feature mask (element → feature index, −1: none); by
default every element is a feature, except for images where the channels of a pixel form one.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from dlbacktrace.engine.errors import InputError

Forward = Callable[..., torch.Tensor]


class MetricError(InputError):
    """Inputs a metric cannot score (shapes that do not match, a removal value that does not
    apply)."""


def default_feature_mask(x: torch.Tensor) -> torch.Tensor:
    """Elements → features: images ``[B, C, H, W]`` one feature per pixel (all channels),
    everything else one feature per element."""
    b = x.shape[0]
    if x.dim() == 4:
        h, w = x.shape[-2:]
        ids = torch.arange(h * w, device=x.device).reshape(1, 1, h, w)
        return ids.expand(b, x.shape[1], h, w)
    n = x[0].numel()
    return torch.arange(n, device=x.device).reshape(1, *x.shape[1:]).expand(x.shape)


def feature_scores(attr: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum of attributions per feature: ``[B, F]``."""
    b = attr.shape[0]
    m = mask.expand(attr.shape).reshape(b, -1)
    n_features = int(m.max()) + 1
    flat = attr.reshape(b, -1).to(torch.float64)
    flat = torch.where(m >= 0, flat, torch.zeros_like(flat))
    out = torch.zeros(b, n_features, dtype=torch.float64, device=attr.device)
    return out.scatter_add_(1, m.clamp_min(0), flat)


def feature_valid(mask: torch.Tensor, valid_elements: torch.Tensor | None) -> torch.Tensor:
    """``[B, F]`` True where a feature exists (and, for text, is a real token)."""
    b = mask.shape[0]
    m = mask.reshape(b, -1)
    n_features = int(m.max()) + 1
    present = torch.zeros(b, n_features, dtype=torch.bool, device=mask.device)
    present.scatter_(1, m.clamp_min(0), (m >= 0))
    if valid_elements is not None:
        v = valid_elements.expand(mask.shape).reshape(b, -1).to(torch.float64)
        any_valid = torch.zeros(b, n_features, dtype=torch.float64, device=mask.device)
        any_valid.scatter_add_(1, m.clamp_min(0), torch.where(m >= 0, v, torch.zeros_like(v)))
        present &= any_valid > 0
    return present


def ranks(scores: torch.Tensor, valid: torch.Tensor, descending: bool) -> torch.Tensor:
    """Rank of each feature (0 = first removed); invalid features rank after all valid ones.
    Ties keep index order (stable sort)."""
    key = scores.clone()
    fill = float("-inf") if descending else float("inf")
    key[~valid] = fill
    order = torch.sort(key, dim=1, descending=descending, stable=True).indices
    return torch.argsort(order, dim=1)


def counts(fractions: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Number of features removed at each fraction: ``[B, S]`` (round half up)."""
    n = valid.sum(1, keepdim=True).to(torch.float64)
    return torch.floor(fractions.to(torch.float64)[None, :] * n + 0.5).long()


def removal_value(x: torch.Tensor, removal: Any) -> torch.Tensor:
    """What a removed element becomes: ``"zero"``, ``"mean"`` (per-input channel mean for
    images, the batch mean per feature otherwise), ``"blur"`` (Gaussian blur, σ = 1/8 of the
    image side, images only), a number (e.g. a pad/mask token id) or a tensor."""
    if isinstance(removal, torch.Tensor):
        return removal.to(device=x.device, dtype=x.dtype).expand_as(x)
    if isinstance(removal, (int, float)) and not isinstance(removal, bool):
        return torch.full_like(x, removal)
    if removal == "zero":
        return torch.zeros_like(x)
    if removal == "mean":
        if not x.is_floating_point():
            raise MetricError("removal='mean' needs float inputs; give a token id for text")
        if x.dim() == 4:
            return x.mean(dim=(2, 3), keepdim=True).expand_as(x).clone()
        return x.mean(dim=0, keepdim=True).expand_as(x).clone()
    if removal == "blur":
        if x.dim() != 4 or not x.is_floating_point():
            raise MetricError("removal='blur' applies to float images [B, C, H, W]")
        return gaussian_blur(x, sigma=max(x.shape[-2:]) / 8)
    raise MetricError(f"unknown removal {removal!r}: zero, mean, blur, a number or a tensor")


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur with reflect padding (kernel radius 3σ, capped by the image)."""
    radius = max(1, min(int(3 * sigma + 0.5), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-(t**2) / (2 * sigma**2))
    k = k / k.sum()
    c = x.shape[1]
    pad = torch.nn.functional.pad(x, (radius, radius, radius, radius), mode="reflect")
    kh = k.reshape(1, 1, -1, 1).repeat(c, 1, 1, 1)
    kw = k.reshape(1, 1, 1, -1).repeat(c, 1, 1, 1)
    out = torch.nn.functional.conv2d(pad, kh, groups=c)
    return torch.nn.functional.conv2d(out, kw, groups=c)


def expand_extra(extra: tuple[torch.Tensor, ...], copies: int) -> tuple[torch.Tensor, ...]:
    """Batch-aligned extras repeated for ``copies`` perturbed versions of each row."""
    return tuple(e.repeat_interleave(copies, dim=0) for e in extra)


@torch.no_grad()
def evaluate(
    forward: Forward,
    x: torch.Tensor,
    extra: tuple[torch.Tensor, ...],
    target: torch.Tensor,
    output: str = "prob",
    batch_size: int = 256,
) -> torch.Tensor:
    """Target score of every row of ``x`` (``[N]``), run in chunks of ``batch_size``.
    ``output``: ``"prob"`` (softmax probability) or ``"logit"``."""
    if output not in ("prob", "logit"):
        raise MetricError(f"output must be 'prob' or 'logit', got {output!r}")
    values = []
    for start in range(0, x.shape[0], batch_size):
        stop = start + batch_size
        scores = forward(x[start:stop], *(e[start:stop] for e in extra))
        if output == "prob":
            scores = scores.softmax(-1)
        t = target[start:stop]
        values.append(scores.gather(1, t[:, None])[:, 0].to(torch.float64))
    return torch.cat(values)


def apply_removed(
    x: torch.Tensor, removed: torch.Tensor, mask: torch.Tensor, base: torch.Tensor
) -> torch.Tensor:
    """``removed`` ``[B, S, F]`` (True: feature removed) → ``[B·S, ...]`` perturbed inputs."""
    b, s, _ = removed.shape
    m = mask.expand(x.shape).reshape(b, 1, -1)
    elem = torch.gather(removed, 2, m.clamp_min(0).expand(b, s, -1)) & (m >= 0)
    elem = elem.reshape(b, s, *x.shape[1:])
    out = torch.where(elem, base[:, None], x[:, None])
    return out.reshape(b * s, *x.shape[1:])
