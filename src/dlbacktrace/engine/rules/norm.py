"""Normalisation layers (DESIGN.md 2.1 and 2.3).

Eval BatchNorm is affine per channel, ``a·x + c``, so ``c`` absorbs its share. LayerNorm and
GroupNorm are ``γ·(x − μ(x))/σ(x) + β`` with ``σ`` held constant: the affine part ``γ·x̂ + β``
uses the affine rule with ``β`` absorbed, ``1/σ`` is a broadcast scale (relevance passes), and
the centring ``x − μ(x)`` is an affine op over the normalised group (contributions
``(δ_ik − 1/n)·x_k``) under the mode's affine rule (``RuleOptions.centring=False``: identity).
RMSNorm has no centring.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from dlbacktrace.engine.errors import RuleError
from dlbacktrace.engine.rules.affine import AffineMap, elementwise_affine, matrix_affine
from dlbacktrace.engine.rules.base import Call, Contribution


def _single(R):
    """Tuple-output ops: only the normalised output (index 0) carries relevance."""
    if isinstance(R, list):
        if any(r is not None for r in R[1:]):
            raise RuleError("relevance reached a statistics output of a normalisation op")
        return R[0]
    return R


def _channel_shape(x: torch.Tensor) -> list[int]:
    return [1, -1] + [1] * (x.dim() - 2)


def _with_output(call: Call, out: torch.Tensor) -> Call:
    return dataclasses.replace(call, out=out)


def batch_norm_eval(call: Call, R) -> Contribution:
    """``_native_batch_norm_legit_no_training(x, w, b, mean, var, momentum, eps)``."""
    x, w, b, mean, var = call.args[:5]
    eps = call.arg(6, "eps", 1e-5)
    a = torch.rsqrt(var + eps)
    if w is not None:
        a = a * w
    c = -mean * a
    if b is not None:
        c = c + b
    shape = _channel_shape(x)
    out = call.out[0] if isinstance(call.out, (tuple, list)) else call.out
    term = x * a.reshape(shape)
    return elementwise_affine(
        _with_output(call, out), _single(R), [(call.arg_node(0), term, x.shape)], c.reshape(shape),
        own_terms=True,
    )


def batch_norm(call: Call, R) -> Contribution:
    """``aten.batch_norm(x, w, b, mean, var, training, momentum, eps, cudnn)`` in eval."""
    x, w, b, mean, var, training = call.args[:6]
    if training or mean is None:
        raise RuleError("batch_norm in training mode (batch statistics) is not supported")
    eps = call.arg(7, "eps", 1e-5)
    a = torch.rsqrt(var + eps) * (w if w is not None else 1.0)
    c = -mean * a + (b if b is not None else 0.0)
    shape = _channel_shape(x)
    return elementwise_affine(
        call, _single(R), [(call.arg_node(0), x * a.reshape(shape), x.shape)], c.reshape(shape),
        own_terms=True,
    )


def _affine_after_normalise(call, R, xhat, weight, bias, out) -> Contribution:
    term = xhat * weight if weight is not None else xhat
    x = call.args[0]
    return elementwise_affine(
        _with_output(call, out), _single(R), [(call.arg_node(0), term, x.shape)], bias,
        own_terms=weight is not None,
    )


def centring_map(x: torch.Tensor, group_shape: tuple[int, ...]) -> AffineMap:
    """``c = x − mean(x)`` over groups: ``x`` viewed as ``[-1, *group_shape]``, mean over the rest.

    The map is self-adjoint; with magnitudes ``|δ_ik − 1/n|`` it is
    ``|x| ↦ Σ|x|/n + (1 − 2/n)·|x|`` (also self-adjoint).
    """
    dims = tuple(range(1, 1 + len(group_shape)))
    n = 1
    for s in group_shape:
        n *= s

    def grouped(t):  # x, or streamed relevance [S, *x.shape]: the groups are the same
        return t.reshape(-1, *group_shape)

    def centre(t, *_):
        g = grouped(t)
        return (g - g.mean(dims, keepdim=True)).reshape(t.shape)

    def centre_abs(t):
        g = grouped(t)
        return (g.sum(dims, keepdim=True) / n + (1 - 2 / n) * g).reshape(t.shape)

    return AffineMap(
        forward=centre, weights=[], transpose=centre, abs_forward=centre_abs,
        abs_transpose=centre_abs,
    )


def _normalised(call, R, xhat, weight, bias, out, group_shape, centred=None) -> Contribution:
    """``γ·x̂ + β`` by the affine rule, then (if centring) ``x − μ`` by the affine rule.

    ``centred``: ``x − μ`` where the recorded statistics give it (else recomputed).
    """
    result = _affine_after_normalise(call, R, xhat, weight, bias, out)
    if not call.options.centring:
        return result
    x = call.args[0]
    (node, rho_c), = result.inputs
    amap = centring_map(x, group_shape)
    if centred is None:
        centred = amap.forward(x.detach())
    inner = dataclasses.replace(call, out=centred, saturation=None, bias_add=None)
    rho, absorbed = matrix_affine(inner, rho_c, x, amap)
    final = Contribution(absorbed=result.absorbed + absorbed)
    final.add(node, rho)
    return final


def layer_norm(call: Call, R) -> Contribution:
    """``layer_norm`` / ``native_layer_norm(x, shape, w, b, eps)``.

    ``native_layer_norm`` records its mean and ``1/σ`` beside its output: ``x − μ`` and
    ``x̂`` are read off them instead of normalising again.
    """
    x, shape, w, b = call.args[:4]
    eps = call.arg(4, "eps", 1e-5)
    group = tuple(x.shape[x.dim() - len(shape):])
    if isinstance(call.out, (tuple, list)) and len(call.out) == 3:
        out, mean, rstd = call.out
        centred = x - mean
        xhat = centred * rstd
        return _normalised(call, R, xhat, w, b, out, group, centred)
    xhat = F.layer_norm(x, shape, None, None, eps)
    return _normalised(call, R, xhat, w, b, call.out, group)


def group_norm(call: Call, R) -> Contribution:
    """``group_norm(x, groups, w, b, eps)`` or ``native_group_norm(x, w, b, N, C, HxW, g, eps)``.

    ``native_group_norm`` records its mean and ``1/σ`` per (row, group) beside its output:
    ``x − μ`` and ``x̂`` are read off them instead of normalising again.
    """
    x = call.args[0]
    centred = None
    if call.node.target.overloadpacket is torch.ops.aten.native_group_norm:
        w, b, groups, eps = call.args[1], call.args[2], call.args[6], call.args[7]
        out, mean, rstd = call.out
        grouped = x.reshape(x.shape[0], groups, -1)
        centred_groups = grouped - mean.reshape(x.shape[0], groups, 1)
        centred = centred_groups.reshape(x.shape)
        xhat = (centred_groups * rstd.reshape(x.shape[0], groups, 1)).reshape(x.shape)
    else:
        groups, w, b = call.args[1], call.arg(2, "weight"), call.arg(3, "bias")
        eps = call.arg(4, "eps", 1e-5)
        xhat = F.group_norm(x, groups, None, None, eps)
        out = call.out[0] if isinstance(call.out, (tuple, list)) else call.out
    shape = _channel_shape(x)
    w = w.reshape(shape) if w is not None else None
    b = b.reshape(shape) if b is not None else None
    group = (x.shape[1] // groups, *x.shape[2:])
    return _normalised(call, R, xhat, w, b, out, (math.prod(group),), centred)


def rms_norm(call: Call, R) -> Contribution:
    """``rms_norm(x, shape, w, eps)``: normalise (identity) then scale by γ (no bias)."""
    x, shape = call.args[0], call.args[1]
    w = call.arg(2, "weight")
    eps = call.arg(3, "eps")
    xhat = F.rms_norm(x, shape, None, eps)
    out = call.out[0] if isinstance(call.out, (tuple, list)) else call.out
    return _affine_after_normalise(call, R, xhat, w, None, out)


def batch_norm_with_input_stats(call: Call, R) -> Contribution:
    """``_native_batch_norm_legit.no_stats(x, w, b, training, momentum, eps)``: normalisation
    with the input's own statistics. With a batch of one (how InstanceNorm is decomposed: the
    input viewed as ``[1, N·C, ...]``) it is a per-channel layer norm over the spatial dims: the
    centring is affine, ``1/σ`` a broadcast scale, the weight and bias the affine part."""
    x = call.args[0]
    if call.node.target.overloadpacket is not torch.ops.aten._native_batch_norm_legit or (
        len(call.args) != 6
    ):
        raise RuleError("batch_norm with running statistics in training mode is not supported")
    if x.shape[0] != 1:
        raise RuleError("batch norm with batch statistics (training mode) is not supported; "
                        "the model is explained in eval mode")
    w, b, eps = call.args[1], call.args[2], call.arg(5, "eps", 1e-5)
    dims = [0, *range(2, x.dim())]
    mean = x.mean(dims, keepdim=True)
    var = x.var(dims, unbiased=False, keepdim=True)
    xhat = (x - mean) * torch.rsqrt(var + eps)
    shape = _channel_shape(x)
    out = call.out[0] if isinstance(call.out, (tuple, list)) else call.out
    w = w.reshape(shape) if w is not None else None
    b = b.reshape(shape) if b is not None else None
    return _normalised(call, R, xhat, w, b, out, (math.prod(x.shape[2:]),))
