"""How a baseline sees the model: a float input to attribute to and a forward giving [B, C].

Float inputs (tables, images) are attributed directly. Token inputs (a dict with ``input_ids``)
are attributed at the output of the word-embedding module: a forward hook swaps in the tensor
Captum differentiates, so every gradient method works through the whole model unchanged, and
the per-token score is the sum over the hidden dimension.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dlbacktrace.engine.errors import InputError

TOKEN_KEY = "input_ids"


class MethodError(InputError):
    """A method that does not apply to this model or input (e.g. Grad-CAM without a conv)."""


def logits_of(out: Any) -> torch.Tensor:
    """The class scores of a model output: ``[B, C]``; sequences give the last position."""
    if not isinstance(out, torch.Tensor):
        if hasattr(out, "logits"):
            out = out.logits
        elif isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
            out = out[0]
        else:
            raise InputError(f"cannot find class scores in a model output of type {type(out)}")
    if out.dim() == 3:
        out = out[:, -1]
    if out.dim() == 1:
        out = out[:, None]
    return out


def find_embedding(model: nn.Module) -> nn.Module:
    """The word-embedding module (``get_input_embeddings`` of the model or a submodule)."""
    for module in model.modules():
        getter = getattr(module, "get_input_embeddings", None)
        if callable(getter):
            try:
                emb = getter()
            except (NotImplementedError, AttributeError):
                continue
            if isinstance(emb, nn.Module):
                return emb
    for module in model.modules():
        if isinstance(emb := module, nn.Embedding):
            return emb
    raise MethodError("token inputs need a word-embedding module; none found in the model")


def _is_hf_with_cache(model: nn.Module) -> bool:
    config = getattr(model, "config", None)
    return config is not None and getattr(config, "use_cache", False) and hasattr(
        model, "generation_config"
    )


@dataclass
class Prepared:
    """A model and its inputs in the form Captum wants."""

    model: nn.Module
    kind: str  # "tensor" or "tokens"
    x: torch.Tensor  # what is attributed: the input, or the word embeddings
    forward: Callable[..., torch.Tensor]  # (x, *extra) -> [B, C]
    extra: tuple[torch.Tensor, ...] = ()
    token_kwargs: dict[str, torch.Tensor] = field(default_factory=dict)
    model_kwargs: dict[str, Any] = field(default_factory=dict)
    embedding: nn.Module | None = None

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    def forward_ids(self, input_ids: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """Token inputs: the forward on (perturbed) token ids, for LIME / SHAP."""
        kwargs = dict(zip(self.extra_names, extra, strict=True))
        return logits_of(self.model(input_ids=input_ids, **kwargs, **self.model_kwargs))

    @property
    def extra_names(self) -> list[str]:
        return [k for k in self.token_kwargs if k != TOKEN_KEY]

    def outputs(self) -> torch.Tensor:
        with torch.no_grad():
            if self.kind == "tokens":
                return self.forward_ids(self.token_kwargs[TOKEN_KEY], *self.extra)
            return self.forward(self.x)

    def reduce(self, attr: torch.Tensor) -> torch.Tensor:
        """Attributions on ``x`` → one value per input element (per token for text)."""
        return attr.sum(-1) if self.kind == "tokens" else attr


def prepare(
    model: nn.Module, inputs: torch.Tensor | Mapping[str, torch.Tensor], **model_kwargs: Any
) -> Prepared:
    """Wrap ``model`` and ``inputs`` (a float tensor, or a dict of token tensors)."""
    if isinstance(inputs, Mapping):
        if TOKEN_KEY not in inputs:
            raise InputError(f"dict inputs must hold '{TOKEN_KEY}' (token ids), got {list(inputs)}")
        token_kwargs = {k: torch.as_tensor(v) for k, v in inputs.items()}
        if _is_hf_with_cache(model):
            model_kwargs.setdefault("use_cache", False)
        embedding = find_embedding(model)
        names = [k for k in token_kwargs if k != TOKEN_KEY]
        extra = tuple(token_kwargs[k] for k in names)
        with torch.no_grad():
            x = embedding(token_kwargs[TOKEN_KEY]).detach()

        def forward_embeds(emb: torch.Tensor, *more: torch.Tensor) -> torch.Tensor:
            # Captum expands extra args with the batch; token ids are only shape carriers here.
            ids = torch.zeros(emb.shape[:2], dtype=torch.long, device=emb.device)
            handle = embedding.register_forward_hook(lambda _m, _i, _o: emb)
            try:
                kwargs = dict(zip(names, more, strict=True))
                return logits_of(model(input_ids=ids, **kwargs, **model_kwargs))
            finally:
                handle.remove()

        return Prepared(
            model, "tokens", x, forward_embeds, extra, token_kwargs, model_kwargs, embedding
        )
    if not isinstance(inputs, torch.Tensor) or not inputs.is_floating_point():
        raise InputError(
            "inputs must be a float tensor (tables, images) or a dict with 'input_ids' (text)"
        )
    if not bool(torch.isfinite(inputs).all()):
        raise InputError("inputs contain NaN or Inf values")

    def forward(x: torch.Tensor) -> torch.Tensor:
        return logits_of(model(x, **model_kwargs))

    return Prepared(model, "tensor", inputs.detach(), forward, model_kwargs=model_kwargs)


def resolve_target(prep: Prepared, target: Any) -> torch.Tensor:
    """Target class per row (argmax when None)."""
    out = prep.outputs()
    if target is None:
        return out.argmax(-1)
    t = torch.as_tensor(target, dtype=torch.long, device=out.device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(out.shape[0]).clone()
    if t.numel() != out.shape[0]:
        raise InputError(f"target has {t.numel()} entries for a batch of {out.shape[0]}")
    if bool(((t < 0) | (t >= out.shape[1])).any()):
        raise InputError(f"target out of range for {out.shape[1]} classes: {t.tolist()}")
    return t
