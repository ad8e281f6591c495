"""Stability: is the map the same when nothing changes?

``determinism``: fraction of inputs whose map is bit-identical over ``runs`` reruns with the
same arguments (1 is best). ``run_variance``: relative spread of the map over reruns with
different seeds (for sampling methods: LIME, KernelSHAP, SmoothGrad) — the mean per-element
standard deviation divided by the mean absolute map, per input (0 is best).
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def determinism(explain_fn: Callable[[], torch.Tensor], runs: int = 3) -> torch.Tensor:
    """``[B]``: 1.0 where all reruns of ``explain_fn()`` are bit-identical, else 0.0."""
    maps = [explain_fn() for _ in range(max(2, runs))]
    first = maps[0].flatten(1)
    same = torch.ones(first.shape[0], dtype=torch.bool, device=first.device)
    for other in maps[1:]:
        same &= (other.flatten(1) == first).all(1)
    return same.to(torch.float64)


def run_variance(explain_fn: Callable[[int], torch.Tensor], seeds: tuple[int, ...] = (0, 1, 2)
                 ) -> torch.Tensor:
    """``[B]``: mean std over seeds / mean |map|; ``explain_fn(seed)`` returns the maps."""
    maps = torch.stack([explain_fn(s).flatten(1).to(torch.float64) for s in seeds])
    spread = maps.std(0, unbiased=True).mean(1)
    scale = maps.abs().mean(0).mean(1).clamp_min(1e-300)
    return spread / scale
