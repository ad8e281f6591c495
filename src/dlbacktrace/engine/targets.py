"""Seeds: the relevance placed on the explained output (DESIGN.md 2.4).

- ``[B, C]`` classification: one-hot at the target (argmax per row if not given) × ``scale``.
- ``[B, 1]`` or ``[B]`` single logit (binary, or one regression unit): ``target="positive"``
  (default) seeds ``+scale``; ``"negative"`` seeds ``−scale``, i.e. explains the other class:
  its evidence for/against is swapped in contrast mode.
- ``[B, T, V]`` sequences (language models): one-hot over the last dim at ``position``
  (default −1, the last position).
- any custom ``seed`` tensor shaped like the output; it may be signed (R⁺ = max(seed, 0),
  R⁻ = max(−seed, 0)).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from dlbacktrace.engine.errors import TargetError

Target = int | str | Sequence[int] | torch.Tensor | None


def make_seed(
    output: torch.Tensor,
    target: Target = None,
    scale: float = 1.0,
    seed: torch.Tensor | None = None,
    position: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Returns (signed seed shaped like ``output``, target index per row or None)."""
    if not isinstance(output, torch.Tensor) or not output.is_floating_point():
        raise TargetError("the explained output must be a floating-point tensor")
    if seed is not None:
        if target is not None:
            raise TargetError("give either target= or seed=, not both")
        seed = torch.as_tensor(seed, dtype=output.dtype, device=output.device)
        if seed.shape != output.shape:
            raise TargetError(
                f"seed has shape {tuple(seed.shape)} but the output has {tuple(output.shape)}"
            )
        if not torch.isfinite(seed).all():
            raise TargetError("seed contains NaN or Inf")
        return seed * scale, None
    if output.dim() == 0:
        raise TargetError("the model output is a scalar; pass seed= explicitly")
    batch = output.shape[0]
    if output.dim() == 1 or (output.dim() == 2 and output.shape[1] == 1):
        return _single_logit(output, target, scale, batch)
    if output.dim() == 2:
        idx = _class_index(output, target, batch)
        seed = torch.zeros_like(output)
        seed[torch.arange(batch, device=output.device), idx] = scale
        return seed, idx
    if output.dim() == 3:
        pos = -1 if position is None else position
        if not -output.shape[1] <= pos < output.shape[1]:
            raise TargetError(f"position {pos} is out of range for length {output.shape[1]}")
        idx = _class_index(output[:, pos], target, batch)
        seed = torch.zeros_like(output)
        seed[torch.arange(batch, device=output.device), pos, idx] = scale
        return seed, idx
    raise TargetError(
        f"output of shape {tuple(output.shape)}: say what to explain with seed= (a tensor of "
        "that shape, e.g. a mask over a segmentation map)"
    )


def _single_logit(output, target, scale, batch):
    sign = 1.0
    if target is None or target == "positive" or (isinstance(target, int) and target == 0):
        sign = 1.0
    elif target == "negative":
        sign = -1.0
    else:
        raise TargetError(
            f"single-output model: target must be 'positive', 'negative', 0 or None, got {target!r}"
        )
    seed = torch.full_like(output, sign * scale)
    return seed, torch.zeros(batch, dtype=torch.long, device=output.device)


def _class_index(logits: torch.Tensor, target: Any, batch: int) -> torch.Tensor:
    classes = logits.shape[-1]
    if target is None:
        return logits.argmax(dim=-1)
    if isinstance(target, str):
        raise TargetError(
            f"target {target!r} only applies to single-logit models; this output has "
            f"{classes} classes"
        )
    idx = torch.as_tensor(target, device=logits.device)
    if idx.is_floating_point() or idx.dtype == torch.bool:
        raise TargetError(f"target must be integer class indices, got dtype {idx.dtype}")
    idx = idx.long()
    if idx.dim() == 0:
        idx = idx.expand(batch)
    if idx.shape != (batch,):
        raise TargetError(f"target must be one int or one per row ({batch}), got {idx.shape}")
    bad = (idx < 0) | (idx >= classes)
    if bool(bad.any()):
        raise TargetError(
            f"target {idx[bad].tolist()} out of range for {classes} classes "
            f"(valid: 0..{classes - 1})"
        )
    return idx
