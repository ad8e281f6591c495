"""Complexity: how concentrated a map is (on |map|, per input; both as in Quantus).

``sparseness``: the Gini index of |a| (Chalasani et al., 2020); higher is more concentrated.
``entropy``: Shannon entropy of |a| / Σ|a| (Bhatt et al., 2020); lower is more concentrated.
"""

from __future__ import annotations

import torch


def sparseness(attributions: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """``[B]`` Gini index of ``|a| + eps`` (``eps`` as Quantus, so all-zero maps are defined)."""
    a = attributions.flatten(1).abs().to(torch.float64) + eps
    a, _ = torch.sort(a, dim=1)
    n = a.shape[1]
    i = torch.arange(1, n + 1, dtype=torch.float64, device=a.device)
    return ((2 * i - n - 1) * a).sum(1) / (n * a.sum(1))


def entropy(attributions: torch.Tensor) -> torch.Tensor:
    """``[B]`` Shannon entropy (nats) of the normalised |map|; zeros contribute nothing."""
    a = attributions.flatten(1).abs().to(torch.float64)
    p = a / a.sum(1, keepdim=True).clamp_min(1e-300)
    logp = torch.where(p > 0, p.log(), torch.zeros_like(p))
    return -(p * logp).sum(1)
