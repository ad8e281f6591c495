"""Randomisation sanity check (Adebayo et al., 2018): cascading model-parameter randomisation.

Layers are re-initialised one by one from the output towards the input (on a copy of the
model, with a local seed); after each step the map is recomputed for the same inputs and
targets and compared with the original by Spearman rank correlation of |map|. A map that
stays similar while the model is destroyed does not explain the model: lower is better.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn


def spearman(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise Spearman correlation with average ranks for ties. ``[B]``."""
    from scipy.stats import rankdata

    ra = torch.from_numpy(rankdata(a.flatten(1).double().cpu().numpy(), axis=1))
    rb = torch.from_numpy(rankdata(b.flatten(1).double().cpu().numpy(), axis=1))
    ra = ra - ra.mean(1, keepdim=True)
    rb = rb - rb.mean(1, keepdim=True)
    den = (ra.pow(2).sum(1) * rb.pow(2).sum(1)).sqrt()
    return torch.where(den > 0, (ra * rb).sum(1) / den.clamp_min(1e-300), torch.zeros_like(den))


def parameter_layers(model: nn.Module) -> list[str]:
    """Names of modules that own parameters directly, in registration order (input → output)."""
    return [
        name for name, m in model.named_modules()
        if any(True for _ in m.parameters(recurse=False))
    ]


def _reinit(module: nn.Module, gen: torch.Generator, recurse: bool) -> None:
    for p in module.parameters(recurse=recurse):
        std = float(p.detach().std()) if p.numel() > 1 else 1.0
        with torch.no_grad():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * (std or 0.1))


def cascading_randomisation(
    model: nn.Module,
    explain_fn: Callable[[nn.Module], torch.Tensor],
    *,
    layers: list[str] | None = None,
    seed: int = 0,
) -> dict[str, torch.Tensor]:
    """``{layer: [B] similarity}`` after randomising that layer and every layer above it.

    ``explain_fn(model)`` returns the maps of the fixed inputs and targets for ``model``.
    Parameters are redrawn from a normal with each tensor's own standard deviation, in place
    (a wrapper built once around the copy sees every step). ``layers``: module names, input →
    output, each re-initialised whole (e.g. transformer blocks); by default every module that
    owns parameters directly.
    """
    names = parameter_layers(model) if layers is None else list(layers)
    original = explain_fn(model)
    work = copy.deepcopy(model)
    modules = dict(work.named_modules())
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name in reversed(names):
        _reinit(modules[name], gen, recurse=layers is not None)
        maps = explain_fn(work)
        out[name] = spearman(original.abs(), maps.abs())
    return out


def randomisation_score(similarities: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean similarity over the cascade, per input (the summary the benchmark reports)."""
    return torch.stack(list(similarities.values())).mean(0)


__all__ = ["cascading_randomisation", "parameter_layers", "randomisation_score", "spearman"]
