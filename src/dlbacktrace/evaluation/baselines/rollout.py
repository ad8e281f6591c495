"""Attention rollout (Abnar & Zuidema, 2020), our own implementation.

Per layer: average the attention over heads, add the identity (the residual path) and
renormalise rows; multiply the layers from the first to the last. The relevance of token
``s`` is the rollout entry from the position(s) the prediction is read from to ``s``: the last
position for causal language models, the first (``[CLS]``) or the mean over valid tokens for
encoders (``position="cls"``, ``"mean"`` (default for encoders) or an index).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from dlbacktrace.evaluation.baselines.prepared import TOKEN_KEY, MethodError, Prepared


def _transformer(model: nn.Module) -> nn.Module:
    """The Hugging Face model inside ``model`` (itself, or the first submodule with a config)."""
    for module in model.modules():
        if hasattr(module, "config") and hasattr(module, "set_attn_implementation"):
            return module
    raise MethodError("attention-rollout needs a Hugging Face transformer inside the model")


@contextlib.contextmanager
def _eager(module: nn.Module) -> Iterator[None]:
    """sdpa kernels do not return attention weights: switch to eager, restore afterwards."""
    before = getattr(module.config, "_attn_implementation", None)
    changed = before not in (None, "eager")
    if changed:
        module.set_attn_implementation("eager")
    try:
        yield
    finally:
        if changed:
            module.set_attn_implementation(before)


def rollout_matrix(attentions: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """``[B, T, T]`` product of row-normalised (head-mean attention + identity), first→last."""
    result = None
    for att in attentions:
        a = att.mean(dim=1)
        a = a + torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
        a = a / a.sum(dim=-1, keepdim=True)
        result = a if result is None else a @ result
    if result is None:
        raise MethodError("the model returned no attention weights")
    return result


def attention_rollout(prep: Prepared, target: torch.Tensor, **options: Any) -> torch.Tensor:
    """Rollout relevance of every token, ``[B, T, 1]`` (zero on padding).

    Parameters
    ----------
    prep
        The prepared transformer and token inputs.
    target
        The explained class per row (rollout does not depend on it).
    **options
        ``position``: ``"mean"``, ``"cls"``, ``"last"`` or an index (default: last for
        causal models, mean otherwise).
    """
    if prep.kind != "tokens":
        raise MethodError("attention-rollout applies to transformers on token inputs")
    inner = _transformer(prep.model)
    kwargs = dict(prep.token_kwargs)
    with _eager(inner), torch.no_grad():
        out = inner(**kwargs, output_attentions=True, **prep.model_kwargs)
    attentions = getattr(out, "attentions", None)
    if not attentions:
        raise MethodError("the transformer returned no attentions (output_attentions=True)")
    roll = rollout_matrix(tuple(a.to(torch.float32) for a in attentions))
    mask = kwargs.get("attention_mask")
    valid = (
        torch.ones(roll.shape[:2], device=roll.device) if mask is None else mask.to(roll.dtype)
    )
    position = options.get("position")
    if position is None:
        causal = bool(getattr(inner.config, "is_decoder", False)) or hasattr(
            prep.model, "generation_config"
        ) and not getattr(inner.config, "is_encoder_decoder", False)
        position = "last" if causal else "mean"
    if position == "mean":
        rows = (roll * valid[..., None]).sum(1) / valid.sum(1, keepdim=True).clamp_min(1)
    elif position == "cls":
        rows = roll[:, 0]
    elif position == "last":
        rows = roll[:, -1]
    elif isinstance(position, int):
        rows = roll[:, position]
    else:
        raise MethodError(f"position must be 'mean', 'cls', 'last' or an int, got {position!r}")
    rows = rows * valid
    if prep.token_kwargs[TOKEN_KEY].shape != rows.shape:
        raise MethodError("attention rollout: unexpected attention shape")
    return rows[..., None]
