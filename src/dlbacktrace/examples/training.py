"""The one training loop of the bundled examples: deterministic Adam on shuffled mini-batches.

The bundled models are trained on the fly (seconds on two cores) rather than shipped as
weights, so the loop must give the same weights for the same seed and thread count: the
weight initialisation runs inside :func:`~dlbacktrace.engine.state.seeded` (the caller's random
streams are restored) and shuffling uses its own ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from dlbacktrace.engine.state import seeded

__all__ = ["train_classifier"]


def train_classifier(
    build: Callable[[], nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    seed: int = 0,
    epochs: int = 4,
    batch_size: int = 128,
    lr: float = 1e-2,
    weight_decay: float = 0.0,
) -> nn.Module:
    """Build a classifier and fit it with cross-entropy; returns it in eval mode.

    Parameters
    ----------
    build
        Makes the untrained model; called under ``seeded(seed)`` so its initialisation is fixed.
    x, y
        Training inputs and integer class labels (first dimension: examples).
    seed
        Seeds the initialisation and the shuffling.
    epochs, batch_size
        Passes over the data and mini-batch size.
    lr, weight_decay
        Adam's learning rate and weight decay.
    """
    with seeded(seed):
        model = build()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(y), generator=generator)
        for start in range(0, len(perm), batch_size):
            idx = perm[start : start + batch_size]
            optimizer.zero_grad()
            loss_fn(model(x[idx]), y[idx]).backward()
            optimizer.step()
    return model.eval()
