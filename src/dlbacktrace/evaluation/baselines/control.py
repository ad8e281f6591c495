"""The control every benchmark needs: a map that knows nothing about the model."""

from __future__ import annotations

from typing import Any

import torch

from dlbacktrace.evaluation.baselines.prepared import Prepared


def random_map(prep: Prepared, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """Uniform noise from a local generator (``seed=``, default 0); padding gets zero.

    Parameters
    ----------
    prep
        The prepared model and inputs (only their shapes are used).
    target
        The explained class per row (unused: the map ignores it).
    **options
        ``seed``: the generator's seed.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(options.get("seed", 0)))
    shape = prep.x.shape[:2] + (1,) if prep.kind == "tokens" else prep.x.shape
    noise = torch.rand(shape, generator=gen).to(prep.x)
    mask = prep.token_kwargs.get("attention_mask")
    if mask is not None:
        noise = noise * mask[..., None].to(noise)  # padding is no feature
    return noise


__all__ = ["random_map"]
