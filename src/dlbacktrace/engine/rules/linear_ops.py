"""Affine ops with a matrix-like weight: linear, mm/matmul/bmm with a constant operand,
convolutions of every kind, and weight-free linear maps (pooling, mean/sum, interpolation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dlbacktrace.engine.errors import RuleError
from dlbacktrace.engine.rules.affine import AffineMap, matrix_affine, site_corrected_linear
from dlbacktrace.engine.rules.base import (
    Call,
    Contribution,
    flat_args,
    stabilised,
    streamed_grad,
    total,
    vjp_contribution,
)

aten = torch.ops.aten


def _only_data(call: Call, index: int) -> None:
    others = [i for i in range(len(call.args)) if i != index and call.is_data(i)]
    if others or not call.is_data(index):
        raise RuleError(
            f"{call.node.target} on node '{call.node.name}': expected relevance to flow only "
            f"through argument {index}, but arguments {others or [index]} are data"
        )


def _run(call: Call, R, index: int, amap: AffineMap) -> Contribution:
    if call.bias_add is not None:
        if amap.bias is not None:
            raise RuleError(f"internal: node '{call.node.name}' has a bias and a fused bias")
        amap.bias = call.bias_add
    rho, absorbed = matrix_affine(call, R, call.args[index], amap)
    result = Contribution(absorbed=absorbed)
    result.add(call.arg_node(index), rho)
    return result


def _linear_t(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return g @ w


def linear(call: Call, R) -> Contribution:
    w = call.args[1]
    b = call.arg(2, "bias")
    if call.is_data(1):
        from dlbacktrace.engine.rules.products import bilinear_linear

        return bilinear_linear(call, R)
    _only_data(call, 0)
    sites = call.saturated_sites
    if sites is not None and w.dim() == 2 and (b is None or call.bias_add is None):
        bias = _per_output(b if b is not None else call.bias_add, w.shape[0])
        # the sites' contributions (m × in per stream) stay within a few outputs' size
        fits = sites.flat.numel() * w.shape[1] * R.shape[0] <= 4 * call.out.numel()
        if bias is not False and fits:
            rho, absorbed = site_corrected_linear(call, R, call.args[0], w, bias, sites)
            result = Contribution(absorbed=absorbed)
            result.add(call.arg_node(0), rho)
            return result
    return _run(call, R, 0, AffineMap(F.linear, [w], b, _linear_t))


def _per_output(bias, features: int):
    """A bias as one value per output feature; None for no bias, False if it is not one."""
    if bias is None:
        return None
    if not isinstance(bias, torch.Tensor):
        return False
    if bias.numel() == 1:
        return bias.reshape(1).expand(features)
    if bias.numel() == features and bias.shape[-1] == features:
        return bias.reshape(features)
    return False


def matmul_like(call: Call, R) -> Contribution:
    """mm / matmul / bmm with exactly one data operand (the other acts as the weight)."""
    a_data, b_data = call.is_data(0), call.is_data(1)
    op = call.node.target
    if a_data and b_data:
        from dlbacktrace.engine.rules.products import matmul_of_data

        return matmul_of_data(call, R)
    if a_data:
        return _run(call, R, 0, AffineMap(lambda x, w: op(x, w), [call.args[1]]))
    return _run(call, R, 1, AffineMap(lambda x, w: op(w, x), [call.args[0]]))


def addmm(call: Call, R) -> Contribution:
    """``beta·bias + alpha·(m1 @ m2)`` (GPT-2's Conv1D, linear with folded bias)."""
    bias, m1, m2 = call.args[:3]
    beta = call.arg(3, "beta", 1)
    alpha = call.arg(4, "alpha", 1)
    if call.is_data(0):
        raise RuleError(f"{call.node.target} with a data-dependent bias is not supported")
    if call.is_data(1) and call.is_data(2):
        raise RuleError(f"{call.node.target} with two data operands is not supported")
    b = bias * beta if beta != 1 else bias
    if call.node.target.overloadpacket is aten.addmm and call.is_data(1):

        def forward(x, w):
            return torch.mm(x, w) * alpha if alpha != 1 else torch.mm(x, w)

        def transpose(g, w):
            return g @ w.t() * alpha if alpha != 1 else g @ w.t()

        return _run(call, R, 1, AffineMap(forward, [m2], b, transpose))
    op = aten.mm if call.node.target.overloadpacket is aten.addmm else aten.bmm
    if call.is_data(1):
        return _run(call, R, 1, AffineMap(lambda x, w: alpha * op(x, w), [m2], b))
    return _run(call, R, 2, AffineMap(lambda x, w: alpha * op(w, x), [m1], b))


def _conv_bias(b, y):
    if b is None:
        return None
    return b.reshape(-1, *([1] * (y.dim() - 2)))


def _expand(value, nd: int) -> list[int]:
    if isinstance(value, (list, tuple)):
        return list(value) * nd if len(value) == 1 else list(value)
    return [value] * nd


def _conv_params(call: Call) -> dict | None:
    """(stride, padding, dilation, transposed, output_padding, groups) of any conv op."""
    x = call.args[0]
    nd = x.dim() - 2
    packet = call.node.target.overloadpacket
    a = list(call.args) + [None] * 10
    if packet in (aten.convolution, aten._convolution):
        stride, padding, dilation, transposed, out_pad, groups = a[3:9]
    elif packet in (aten.conv_transpose1d, aten.conv_transpose2d, aten.conv_transpose3d):
        stride, padding, out_pad, groups, dilation = a[3:8]
        transposed = True
    else:
        stride, padding, dilation, groups = a[3:7]
        transposed, out_pad = False, 0
    if isinstance(padding, str):
        return None  # 'same'/'valid': leave it to autograd
    return {
        "stride": _expand(1 if stride is None else stride, nd),
        "padding": _expand(0 if padding is None else padding, nd),
        "dilation": _expand(1 if dilation is None else dilation, nd),
        "transposed": bool(transposed),
        "output_padding": _expand(0 if out_pad is None else out_pad, nd),
        "groups": 1 if groups is None else groups,
    }


def convolution(call: Call, R) -> Contribution:
    """conv1d/2d/3d, conv_transpose*, aten.convolution: any stride, padding, dilation, groups."""
    _only_data(call, 0)
    x, w = call.args[0], call.args[1]
    bias = _conv_bias(call.arg(2, "bias"), call.out)
    p = _conv_params(call)
    if p is None:
        op, rest = call.node.target, tuple(call.args[3:])
        return _run(call, R, 0, AffineMap(lambda x, w: op(x, w, None, *rest), [w], bias))
    order = ("stride", "padding", "dilation", "transposed", "output_padding", "groups")
    params = [p[k] for k in order]

    def forward(x, w):
        return aten.convolution(x, w, None, *params)

    def transpose(g, w):  # streams folded into the batch: one transposed conv for all
        streams, batch = g.shape[0], x.shape[0]
        sizes = x if streams == 1 else x.new_empty((streams * batch, *x.shape[1:]))
        gx = aten.convolution_backward(g.flatten(0, 1), sizes, w, None, *params,
                                       [True, False, False])[0]
        return gx.unflatten(0, (streams, batch))

    return _run(call, R, 0, AffineMap(forward, [w], bias, transpose))


def weight_free(call: Call, R) -> Contribution:
    """Linear maps with non-negative fixed weights: pooling, mean/sum, interpolation, cumsum."""
    _only_data(call, 0)
    op = call.node.target
    rest, kwargs = tuple(call.args[1:]), dict(call.kwargs)
    return _run(call, R, 0, AffineMap(lambda x: op(x, *rest, **kwargs), []))


def _scatter_added(x, dim, index, src, *_, **__):
    """``scatter(..., reduce="add")`` written with ``scatter_add`` (which autograd knows)."""
    if not isinstance(src, torch.Tensor):
        src = torch.full(index.shape, float(src), dtype=x.dtype, device=x.device)
    return x.scatter_add(dim, index, src.expand(index.shape) if src.dim() else src)


def _summed(call: Call, R, signed: bool, op=None) -> Contribution:
    """Relevance of every data operand of an op that adds elements into its outputs.

    Such an op is affine with weights 1 (or ``alpha``): contributions are the added elements.
    Default mode shares by magnitude (the op run on absolute values), contrast mode by signed
    shares over the recorded output; constant operands (the base tensor) take their share.
    """
    nodes, values, spec = flat_args(call)
    leaves = list(values)
    wrt = []
    for i, (n, v) in enumerate(zip(nodes, values, strict=True)):
        if not (isinstance(v, torch.Tensor) and v.is_floating_point()):
            continue
        is_data = isinstance(n, torch.fx.Node) and n in call.data
        leaf = v.detach() if signed else v.detach().abs()
        if is_data:
            leaf = leaf.clone().requires_grad_(True)
            wrt.append(i)
        leaves[i] = leaf
    args, kwargs = torch.utils._pytree.tree_unflatten(leaves, spec)
    kwargs = dict(kwargs)
    if not signed and "alpha" in kwargs:
        kwargs["alpha"] = abs(kwargs["alpha"])
    if op is not None:
        kwargs.pop("reduce", None)
    with torch.enable_grad():
        out = (op or call.node.target)(*args, **kwargs)
    den = stabilised(call.out, call.options.epsilon) if signed else out.detach()
    dead = None if signed else den == 0
    G = R / den if signed else torch.where(dead, 0.0, R / torch.where(dead, 1.0, den))
    result = Contribution()
    routed = torch.zeros((), dtype=torch.float64)
    grads = streamed_grad([out], [leaves[i] for i in wrt], [G])
    for i, g in zip(wrt, grads, strict=True):
        rho = (leaves[i].detach() * g).to(R.dtype)
        result.add(nodes[i], rho)
        routed = routed + total(rho)
    result.absorbed = total(R) - routed  # the constants' share (and dead outputs)
    return result


def summing(call: Call, R) -> Contribution:
    """index_add, scatter_add, col2im (``F.fold``), index_put(accumulate=True), scatter_reduce
    (sum/mean): the affine rule (DESIGN.md 2.3, "summing maps"), never the movement adjoint."""
    packet = call.node.target.overloadpacket
    if packet in (aten.index_put, aten._unsafe_index_put):
        if not call.arg(3, "accumulate", False):
            return vjp_contribution(call, R)  # an overwrite: data movement
    if packet is aten.scatter:  # scatter(self, dim, index, src|value, *, reduce=None)
        reduce = call.arg(4, "reduce")
        if reduce is None:
            return vjp_contribution(call, R)  # an overwrite: data movement
        if reduce != "add":
            raise RuleError(f"scatter with reduce={reduce!r} is not affine")
        return _summed(call, R, call.options.signed, op=_scatter_added)
    if packet is aten.scatter_reduce:  # scatter_reduce(self, dim, index, src, reduce, ...)
        reduce = call.arg(4, "reduce")
        if reduce in ("amax", "amin"):
            return vjp_contribution(call, R)  # selection
        if reduce not in ("sum", "mean"):
            raise RuleError(f"scatter_reduce with reduce={reduce!r} is not affine")
    return _summed(call, R, call.options.signed)


def _separable_weights(call: Call) -> tuple[torch.Tensor, torch.Tensor]:
    """``(W_h [H_out, H_in], W_w [W_out, W_in])`` of a separable 2-D interpolation.

    Read off the op itself: an input constant along one axis with a one-hot along the other
    gives a column of the other axis's matrix (the interpolation weights of each output sum
    to 1, so the constant axis contributes a factor of 1).
    """
    x = call.args[0]
    op, rest = call.node.target, tuple(call.args[1:])
    H, W = x.shape[-2], x.shape[-1]
    eye_h = torch.eye(H, dtype=x.dtype, device=x.device)[:, None, :, None].expand(H, 1, H, W)
    eye_w = torch.eye(W, dtype=x.dtype, device=x.device)[:, None, None, :].expand(W, 1, H, W)
    W_h = op(eye_h.contiguous(), *rest, **call.kwargs)[:, 0, :, 0].t()
    W_w = op(eye_w.contiguous(), *rest, **call.kwargs)[:, 0, 0, :].t()
    return W_h, W_w


def interpolation(call: Call, R) -> Contribution:
    """Bicubic (and antialiased) upsampling: affine with signed weights (DESIGN.md 2.3), so
    magnitudes come from the weights themselves, never from running the op on ``|x|``."""
    _only_data(call, 0)
    W_h, W_w = _separable_weights(call)
    aW_h, aW_w = W_h.abs(), W_w.abs()

    def apply(a, b):
        return lambda t, *_: torch.einsum("hi,...ij,wj->...hw", a, t, b)

    def adjoint(a, b):  # streamed g: [S, N, C, H, W]
        return lambda g, *_: torch.einsum("hi,...hw,wj->...ij", a, g, b)

    amap = AffineMap(
        forward=apply(W_h, W_w), weights=[], transpose=adjoint(W_h, W_w),
        abs_forward=apply(aW_h, aW_w), abs_transpose=adjoint(aW_h, aW_w),
    )
    return _run(call, R, 0, amap)
