"""``explain(model, inputs, method=...)``: DLBacktrace and the methods people compare it with,
all returning a :class:`dlbacktrace.Explanation`.

Unsigned methods (``dlb``, saliency, SmoothGrad, Grad-CAM, attention rollout, random) give a
default-mode Explanation: ``relevance`` is the map. Signed methods (``dlb-contrast``,
input×gradient, IG, DeepLift, LIME, KernelSHAP, LRP-ε) give a contrast-mode Explanation:
``relevance`` is the signed map, ``positive``/``negative`` its parts and ``total`` its absolute
value, exactly as DLBacktrace's own contrast mode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from dlbacktrace.engine.backtrace import Backtrace
from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.engine.state import inference_state
from dlbacktrace.evaluation.baselines import captum_methods as cm
from dlbacktrace.evaluation.baselines._model import (
    TOKEN_KEY,
    MethodError,
    Prepared,
    prepare,
    resolve_target,
)
from dlbacktrace.evaluation.baselines.rollout import attention_rollout

Attributor = Callable[..., tuple[torch.Tensor, bool]]


def _random(prep: Prepared, target: torch.Tensor, **options: Any) -> tuple[torch.Tensor, bool]:
    """Control: uniform noise from a local generator (``seed=``, default 0)."""
    gen = torch.Generator(device="cpu").manual_seed(int(options.get("seed", 0)))
    shape = prep.x.shape[:2] + (1,) if prep.kind == "tokens" else prep.x.shape
    noise = torch.rand(shape, generator=gen).to(prep.x)
    mask = prep.token_kwargs.get("attention_mask")
    if mask is not None:
        noise = noise * mask[..., None].to(noise)  # padding is no feature
    return noise, False


BASELINES: dict[str, Attributor] = {
    "saliency": cm.saliency,
    "input-x-gradient": cm.input_x_gradient,
    "integrated-gradients": cm.integrated_gradients,
    "smoothgrad": cm.smoothgrad,
    "deeplift": cm.deeplift,
    "grad-cam": cm.grad_cam,
    "lime": cm.lime,
    "kernel-shap": cm.kernel_shap,
    "lrp-epsilon": cm.lrp_epsilon,
    "attention-rollout": attention_rollout,
    "random": _random,
}
METHODS: tuple[str, ...] = ("dlb", "dlb-contrast", *BASELINES)
SIGNED: frozenset[str] = frozenset(
    {"dlb-contrast", "input-x-gradient", "integrated-gradients", "deeplift", "lime",
     "kernel-shap", "lrp-epsilon"}
)  # fmt: skip
SAMPLING: frozenset[str] = frozenset({"smoothgrad", "lime", "kernel-shap", "random"})


def applicable(method: str, inputs: torch.Tensor | Mapping[str, Any], model: nn.Module) -> bool:
    """Whether ``method`` applies to this kind of input/model (without running it)."""
    tokens = isinstance(inputs, Mapping)
    if method == "grad-cam":
        return not tokens and inputs.dim() == 4 and any(
            isinstance(m, nn.Conv2d) for m in model.modules()
        )
    if method == "attention-rollout":
        return tokens
    if method == "lrp-epsilon":
        return not tokens
    return method in METHODS


def _dlb(
    model: nn.Module,
    inputs: torch.Tensor | Mapping[str, Any],
    mode: str,
    target: Any,
    options: dict[str, Any],
) -> Explanation:
    bt = options.pop("backtrace", None) or Backtrace(model)
    if bt.model is not model:
        raise MethodError("backtrace= must wrap the same model")
    if isinstance(inputs, Mapping):
        kwargs = dict(inputs)
        if getattr(getattr(model, "config", None), "use_cache", False) and hasattr(
            model, "generation_config"
        ):
            kwargs.setdefault("use_cache", False)
        return bt.explain(target=target, mode=mode, **kwargs, **options)
    return bt.explain(inputs, target=target, mode=mode, **options)


def _wrap(
    prep: Prepared, attr: torch.Tensor, signed: bool, target: torch.Tensor
) -> Explanation:
    """A baseline's map as an Explanation shaped like DLBacktrace's."""
    rel = prep.reduce(attr).to(prep.x.dtype)
    if prep.kind == "tokens":
        by_name = {
            name: (rel if name == TOKEN_KEY else torch.zeros(t.shape, dtype=rel.dtype))
            for name, t in prep.token_kwargs.items()
        }
    else:
        by_name = {"x": rel}
    out = prep.outputs()
    seed = torch.zeros_like(out)
    seed[torch.arange(out.shape[0]), target] = 1.0
    return Explanation(
        mode="contrast" if signed else "default",
        input_names=list(by_name),
        total_by_name={n: t.abs() for n, t in by_name.items()} if signed else by_name,
        net_by_name=by_name if signed else None,
        absorbed={},
        seed=seed,
        target=target,
        output=out,
        single_input=len(by_name) == 1,
    )


def explain(
    model: nn.Module,
    inputs: torch.Tensor | Mapping[str, torch.Tensor],
    method: str = "dlb",
    target: Any = None,
    **options: Any,
) -> Explanation:
    """Explain ``model`` on ``inputs`` with ``method`` (one of :data:`METHODS`).

    ``inputs``: a float tensor (tables ``[B, F]``, images ``[B, C, H, W]``) or a dict of token
    tensors (``input_ids``, ``attention_mask``, ...) for text models. ``target``: class per row
    (None: the predicted class; for language models the next-token logits are explained).
    Options per method: ``n_steps`` (IG), ``n_samples``/``noise_level`` (SmoothGrad),
    ``n_samples``/``feature_mask`` (LIME, KernelSHAP), ``baseline``/``baseline_token_id``
    (IG, DeepLift, LIME, SHAP), ``layer`` (Grad-CAM), ``position`` (rollout), ``seed``
    (sampling methods), ``backtrace`` (a :class:`Backtrace` to reuse, for ``dlb*``).
    """
    if method not in METHODS:
        raise MethodError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    if method in ("dlb", "dlb-contrast"):
        return _dlb(
            model, inputs, "contrast" if method == "dlb-contrast" else "default", target, options
        )
    model_kwargs = options.pop("model_kwargs", {}) or {}
    with inference_state(model):
        prep = prepare(model, inputs, **model_kwargs)
        tgt = resolve_target(prep, target)
        attr, signed = BASELINES[method](prep, tgt, **options)
        return _wrap(prep, attr, signed, tgt)
