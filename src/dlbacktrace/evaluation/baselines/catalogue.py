"""The registered attribution methods: DLBacktrace and the methods it is compared with.

:data:`METHODS` maps each name to its :class:`~.method.Method`; the benchmark, the CLI and
:func:`~.api.explain` ask the objects for their traits. Adding a method is one
``METHODS.register(...)`` call (here or in user code); registration order is table order.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn

from dlbacktrace.evaluation.baselines import captum_methods as cm
from dlbacktrace.evaluation.baselines.backtrace_method import BacktraceMethod
from dlbacktrace.evaluation.baselines.control import random_map
from dlbacktrace.evaluation.baselines.method import Inputs, MapMethod, Method
from dlbacktrace.evaluation.baselines.rollout import attention_rollout
from dlbacktrace.evaluation.registry import Registry


def _cnn_on_images(model: nn.Module, inputs: Inputs) -> bool:
    return (
        not isinstance(inputs, Mapping)
        and inputs.dim() == 4
        and any(isinstance(m, nn.Conv2d) for m in model.modules())
    )


def _tokens(model: nn.Module, inputs: Inputs) -> bool:
    return isinstance(inputs, Mapping)


def _float_inputs(model: nn.Module, inputs: Inputs) -> bool:
    return not isinstance(inputs, Mapping)


METHODS: Registry[Method] = Registry("method")
for _method in (
    BacktraceMethod(name="dlb", signed=False, mode="default",
                    map_description="unsigned (default mode)"),
    BacktraceMethod(name="dlb-contrast", signed=True, mode="contrast",
                    map_description="signed (contrast net = positive - negative)"),
    MapMethod(name="saliency", signed=False, map_fn=cm.saliency),
    MapMethod(name="input-x-gradient", signed=True, map_fn=cm.input_x_gradient),
    MapMethod(name="integrated-gradients", signed=True, map_fn=cm.integrated_gradients),
    MapMethod(name="smoothgrad", signed=False, sampling=True, map_fn=cm.smoothgrad),
    MapMethod(name="deeplift", signed=True, map_fn=cm.deeplift),
    MapMethod(name="grad-cam", signed=False, map_fn=cm.grad_cam, applies=_cnn_on_images,
              requires="image inputs [B, C, H, W] and a Conv2d layer"),
    MapMethod(name="lime", signed=True, sampling=True, map_fn=cm.lime),
    MapMethod(name="kernel-shap", signed=True, sampling=True, map_fn=cm.kernel_shap),
    MapMethod(name="lrp-epsilon", signed=True, map_fn=cm.lrp_epsilon, applies=_float_inputs,
              requires="float inputs (Captum's LRP has no rules for embeddings/attention)"),
    MapMethod(name="attention-rollout", signed=False, map_fn=attention_rollout,
              applies=_tokens, requires="token inputs of a Hugging Face transformer"),
    MapMethod(name="random", signed=False, sampling=True, map_fn=random_map),
):  # fmt: skip
    METHODS.register(_method)
del _method


__all__ = ["METHODS"]
