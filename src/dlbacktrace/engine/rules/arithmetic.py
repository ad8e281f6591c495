"""Elementwise arithmetic: add/sub (affine in each data operand), and mul/div that are affine
when the other operand is a constant; products of two data tensors go to ``products``."""

from __future__ import annotations

import torch

from dlbacktrace.engine.rules.affine import elementwise_affine
from dlbacktrace.engine.rules.base import Call, Contribution
from dlbacktrace.engine.rules.products import divide_by_data, multiply_data


def _shape(v) -> torch.Size:
    return v.shape if isinstance(v, torch.Tensor) else torch.Size([])


def add_sub(call: Call, R) -> Contribution:
    """``a ± alpha·b`` with either or both operands data; constants are the bias."""
    packet = call.node.target.overloadpacket
    a, b = call.args[0], call.args[1]
    alpha = call.arg(2, "alpha", 1)
    if packet is torch.ops.aten.rsub:  # rsub(a, b) = b − alpha·a
        signs = (-alpha, 1)
    elif packet is torch.ops.aten.sub:
        signs = (1, -alpha)
    else:
        signs = (1, alpha)
    terms = []
    bias = None
    for i, (v, sign) in enumerate(((a, signs[0]), (b, signs[1]))):
        scaled = v * sign if sign != 1 else v
        if call.is_data(i):
            terms.append((call.arg_node(i), scaled, _shape(v)))
        else:
            bias = scaled if bias is None else bias + scaled
    return elementwise_affine(call, R, terms, bias)


def mul(call: Call, R) -> Contribution:
    if call.is_data(0) and call.is_data(1):
        return multiply_data(call, R)
    i = 0 if call.is_data(0) else 1
    x = call.args[i]
    return elementwise_affine(call, R, [(call.arg_node(i), call.out, _shape(x))], None)


def div(call: Call, R) -> Contribution:
    if call.is_data(1):
        return divide_by_data(call, R)
    if call.arg(2, "rounding_mode") is not None:
        from dlbacktrace.engine.errors import RuleError

        raise RuleError(f"{call.node.target} with a rounding mode is not affine")
    x = call.args[0]
    return elementwise_affine(call, R, [(call.arg_node(0), call.out, _shape(x))], None)
