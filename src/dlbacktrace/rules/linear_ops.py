"""Affine ops with a matrix-like weight: linear, mm/matmul/bmm with a constant operand,
convolutions of every kind, and weight-free linear maps (pooling, mean/sum, interpolation)."""

from __future__ import annotations

import torch

from ..errors import RuleError
from .affine import matrix_affine
from .base import Call, Contribution

aten = torch.ops.aten


def _only_data(call: Call, index: int) -> None:
    others = [i for i in range(len(call.args)) if i != index and call.is_data(i)]
    if others or not call.is_data(index):
        raise RuleError(
            f"{call.node.target} on node '{call.node.name}': expected relevance to flow only "
            f"through argument {index}, but arguments {others or [index]} are data"
        )


def _run(call: Call, R, index: int, fn, weights, bias) -> Contribution:
    rho, absorbed = matrix_affine(call, R, call.args[index], fn, weights, bias)
    result = Contribution(absorbed=absorbed)
    result.add(call.arg_node(index), rho)
    return result


def linear(call: Call, R) -> Contribution:
    _x, w = call.args[0], call.args[1]
    b = call.arg(2, "bias")
    if call.is_data(1):
        from .products import bilinear_linear

        return bilinear_linear(call, R)
    _only_data(call, 0)
    return _run(call, R, 0, lambda x, w: torch.nn.functional.linear(x, w), [w], b)


def matmul_like(call: Call, R) -> Contribution:
    """mm / matmul / bmm with exactly one data operand (the other acts as the weight)."""
    a_data, b_data = call.is_data(0), call.is_data(1)
    op = call.node.target
    if a_data and b_data:
        from .products import matmul_of_data

        return matmul_of_data(call, R)
    if a_data:
        return _run(call, R, 0, lambda x, w: op(x, w), [call.args[1]], None)
    return _run(call, R, 1, lambda x, w: op(w, x), [call.args[0]], None)


def addmm(call: Call, R) -> Contribution:
    """``beta·bias + alpha·(m1 @ m2)`` (GPT-2's Conv1D, linear with folded bias)."""
    bias, m1, m2 = call.args[:3]
    beta = call.arg(3, "beta", 1)
    alpha = call.arg(4, "alpha", 1)
    if call.is_data(0):
        raise RuleError(f"{call.node.target} with a data-dependent bias is not supported")
    op = aten.mm if call.node.target.overloadpacket is aten.addmm else aten.bmm
    b = bias * beta if beta != 1 else bias
    if call.is_data(1) and call.is_data(2):
        raise RuleError(f"{call.node.target} with two data operands is not supported")
    if call.is_data(1):
        return _run(call, R, 1, lambda x, w: alpha * op(x, w), [m2], b)
    return _run(call, R, 2, lambda x, w: alpha * op(w, x), [m1], b)


def _conv_bias(b, y):
    if b is None:
        return None
    return b.reshape(-1, *([1] * (y.dim() - 2)))


def convolution(call: Call, R) -> Contribution:
    """conv1d/2d/3d, conv_transpose*, aten.convolution: any stride, padding, dilation, groups."""
    _only_data(call, 0)
    op = call.node.target
    rest = tuple(call.args[3:])
    bias = call.arg(2, "bias")
    return _run(
        call, R, 0, lambda x, w: op(x, w, None, *rest), [call.args[1]], _conv_bias(bias, call.out)
    )


def weight_free(call: Call, R) -> Contribution:
    """Linear maps with non-negative fixed weights: pooling, mean/sum, interpolation, cumsum."""
    _only_data(call, 0)
    op = call.node.target
    rest, kwargs = tuple(call.args[1:]), dict(call.kwargs)
    return _run(call, R, 0, lambda x: op(x, *rest, **kwargs), [], None)
