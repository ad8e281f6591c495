"""``explain(model, inputs, method=...)``: DLBacktrace and the methods people compare it with,
all returning a :class:`dlbacktrace.Explanation`.

Unsigned methods (``dlb``, saliency, SmoothGrad, Grad-CAM, attention rollout, random) give a
default-mode Explanation: ``relevance`` is the map. Signed methods (``dlb-contrast``,
input×gradient, IG, DeepLift, LIME, KernelSHAP, LRP-ε) give a contrast-mode Explanation:
``relevance`` is the signed map, ``positive``/``negative`` its parts and ``total`` its absolute
value, exactly as DLBacktrace's own contrast mode. Each method's traits are on its
:class:`~.method.Method` in :data:`~.catalogue.METHODS`.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.evaluation.baselines.catalogue import METHODS
from dlbacktrace.evaluation.baselines.method import Inputs, Method
from dlbacktrace.evaluation.baselines.prepared import MethodError


def get_method(method: str | Method) -> Method:
    """The registered :class:`Method` called ``method`` (a Method is returned as it is).

    Parameters
    ----------
    method
        A name in :data:`METHODS`, or a Method object.
    """
    if isinstance(method, Method):
        return method
    if method not in METHODS:
        raise MethodError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    return METHODS[method]


def explain(
    model: nn.Module,
    inputs: Inputs,
    method: str | Method = "dlb",
    target: Any = None,
    **options: Any,
) -> Explanation:
    """Explain ``model`` on ``inputs`` with ``method``.

    Parameters
    ----------
    model
        The model to explain.
    inputs
        A float tensor (tables ``[B, F]``, images ``[B, C, H, W]``) or a dict of token
        tensors (``input_ids``, ``attention_mask``, ...) for text models.
    method
        A name in :data:`METHODS` or a :class:`Method`.
    target
        Class per row (None: the predicted class; for language models the next-token logits
        are explained).
    **options
        Per method: ``n_steps`` (IG), ``n_samples``/``noise_level`` (SmoothGrad),
        ``n_samples``/``feature_mask`` (LIME, KernelSHAP), ``baseline``/``baseline_token_id``
        (IG, DeepLift, LIME, SHAP), ``layer`` (Grad-CAM), ``position`` (rollout), ``seed``
        (sampling methods), ``backtrace`` (a :class:`Backtrace` to reuse, for ``dlb*``),
        ``model_kwargs`` (extra keyword arguments of the model's forward, baselines).
    """
    return get_method(method).attribute(model, inputs, target, **options)


__all__ = ["explain", "get_method"]
