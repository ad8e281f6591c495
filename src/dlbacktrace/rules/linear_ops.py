"""Affine ops with a matrix-like weight: linear, mm/matmul/bmm with a constant operand,
convolutions of every kind, and weight-free linear maps (pooling, mean/sum, interpolation)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import RuleError
from .affine import AffineMap, matrix_affine
from .base import Call, Contribution

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
        from .products import bilinear_linear

        return bilinear_linear(call, R)
    _only_data(call, 0)
    return _run(call, R, 0, AffineMap(F.linear, [w], b, _linear_t))


def matmul_like(call: Call, R) -> Contribution:
    """mm / matmul / bmm with exactly one data operand (the other acts as the weight)."""
    a_data, b_data = call.is_data(0), call.is_data(1)
    op = call.node.target
    if a_data and b_data:
        from .products import matmul_of_data

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

    def transpose(g, w):
        return aten.convolution_backward(g, x, w, None, *params, [True, False, False])[0]

    return _run(call, R, 0, AffineMap(forward, [w], bias, transpose))


def weight_free(call: Call, R) -> Contribution:
    """Linear maps with non-negative fixed weights: pooling, mean/sum, interpolation, cumsum."""
    _only_data(call, 0)
    op = call.node.target
    rest, kwargs = tuple(call.args[1:]), dict(call.kwargs)
    return _run(call, R, 0, AffineMap(lambda x: op(x, *rest, **kwargs), []))
