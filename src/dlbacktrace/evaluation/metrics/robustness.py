"""Robustness: how much the map moves under small input noise (Yeh et al., 2019).

``max_sensitivity`` / ``avg_sensitivity``: max / mean over ``n_samples`` uniform perturbations
of radius ``radius`` of ``‖e(x+δ) − e(x)‖ / ‖e(x)‖`` (Frobenius norms; relative, like
Quantus's defaults, so that methods with different units compare). Lower is better. All
perturbed copies are explained in one batched call.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from dlbacktrace.evaluation.metrics._perturb import MetricError

ExplainFn = Callable[[torch.Tensor], torch.Tensor]


def sensitivities(
    explain_fn: ExplainFn,
    x: torch.Tensor,
    *,
    n_samples: int = 10,
    radius: float = 0.02,
    perturbations: torch.Tensor | None = None,
    relative: bool = True,
    seed: int = 0,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """``[B, n]`` distances between the map of each perturbed copy and the original map.

    ``perturbations``: ``[B·n, ...]`` noise (copies of a row are consecutive), else uniform
    in ``[−radius, radius]`` from a local generator. ``reference``: the original maps if known.
    """
    if not x.is_floating_point():
        raise MetricError("sensitivity needs float inputs (noise on token ids is meaningless)")
    b = x.shape[0]
    if perturbations is None:
        gen = torch.Generator().manual_seed(seed)
        u = torch.rand((b * n_samples, *x.shape[1:]), generator=gen, dtype=x.dtype)
        perturbations = ((u * 2 - 1) * radius).to(x.device)
    n = perturbations.shape[0] // b
    noisy = x.repeat_interleave(n, dim=0) + perturbations
    base = explain_fn(x) if reference is None else reference
    moved = explain_fn(noisy)
    diff = (moved - base.repeat_interleave(n, dim=0)).flatten(1).to(torch.float64).norm(dim=1)
    diff = diff.reshape(b, n)
    if relative:
        diff = diff / base.flatten(1).to(torch.float64).norm(dim=1).clamp_min(1e-12)[:, None]
    return diff


def max_sensitivity(explain_fn: ExplainFn, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """Largest relative change of the map over the perturbations, per input. ``[B]``."""
    return sensitivities(explain_fn, x, **kwargs).amax(1)


def avg_sensitivity(explain_fn: ExplainFn, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """Mean relative change of the map over the perturbations, per input. ``[B]``."""
    return sensitivities(explain_fn, x, **kwargs).mean(1)
