"""Closed-form adjoints of slice, select, index_select, cat and constant padding.

Each must give exactly what the generic adjoint (the op's VJP under autograd) gives, for
several streams at once, including negative indices, steps, repeated indices, constant
operands and negative (cropping) pads; the padding's and the constants' relevance is absorbed.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbacktrace import Backtrace
from dlbacktrace.engine.rules import movement
from dlbacktrace.engine.rules.registry import register_rule, scoped_rules

aten = torch.ops.aten


class Moves(nn.Module):
    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.inner = nn.Linear(6, 6)
        self.head = nn.LazyLinear(4)
        self.register_buffer("const", torch.linspace(-1.0, 2.0, 3).repeat(2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(self.inner(x))
        if self.kind == "slice":
            y = torch.cat([h[:, 1:5:2], h[:, -3:], h[:, ::4]], dim=1)
        elif self.kind == "select":
            y = torch.stack([h[:, 2], h[:, -1] * 2.0], dim=1)
        elif self.kind == "index_select":
            y = torch.index_select(h, 1, torch.tensor([0, 2, 2, 5]))
        elif self.kind == "cat":
            y = torch.cat([h, self.const[: h.shape[0]], h * 0.5], dim=1)
        elif self.kind == "pad":
            y = torch.cat([F.pad(h, (1, 2), value=0.5), F.pad(h, (-2, 1)),
                           F.pad(h[:, None], (1, 1), mode="replicate")[:, 0]], dim=1)
        else:
            raise ValueError(self.kind)
        return self.head(y)


OPS = {
    "slice": (aten.slice, movement.slice_adjoint),
    "select": (aten.select, movement.select_adjoint),
    "index_select": (aten.index_select, movement.index_select_adjoint),
    "cat": (aten.cat, movement.cat_adjoint),
    "pad": (aten.pad, movement.pad_adjoint),
}


@pytest.mark.parametrize("mode", ["default", "contrast"])
@pytest.mark.parametrize("kind", sorted(OPS))
def test_closed_form_adjoint_equals_the_vjp(kind: str, mode: str) -> None:
    torch.manual_seed(3)
    model = Moves(kind).double().eval()
    x = torch.randn(2, 6, dtype=torch.float64)
    model(x)  # materialise the lazy head
    op, closed = OPS[kind]
    graph = Backtrace(model).capture(x)
    assert any(getattr(n.target, "overloadpacket", None) is op for n in graph.nodes)
    with scoped_rules():
        register_rule(op, closed)
        fast = Backtrace(model, mode=mode).explain(x, targets=[0, 1, 3])
    with scoped_rules():
        register_rule(op, movement.adjoint)
        slow = Backtrace(model, mode=mode).explain(x, targets=[0, 1, 3])
    assert torch.allclose(fast.relevance, slow.relevance, rtol=1e-12, atol=1e-14)
    assert torch.allclose(fast.absorbed_rows, slow.absorbed_rows, rtol=1e-10, atol=1e-12)
    assert fast.conservation_error < 1e-10


def test_constants_and_padding_absorb_their_relevance() -> None:
    """Hand-computed: y = sum(cat([x, c])) with x = (1, 2), c = (3,): default-mode shares of the
    sum are |z|/Σ|z| = (1, 2, 3)/6; the constant's 1/2 is absorbed; likewise pad value 3."""

    class CatSum(nn.Module):
        def __init__(self, pad: bool) -> None:
            super().__init__()
            self.pad = pad
            self.register_buffer("c", torch.tensor([[3.0]], dtype=torch.float64))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            y = F.pad(x, (0, 1), value=3.0) if self.pad else torch.cat([x, self.c], dim=1)
            return y.sum(dim=1, keepdim=True)

    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    for pad in (False, True):
        exp = Backtrace(CatSum(pad).eval()).explain(x, targets=["positive", "positive"])
        expected = torch.tensor([[1 / 6, 2 / 6]] * 2, dtype=torch.float64)
        assert torch.allclose(exp.relevance, expected, atol=1e-12)
        assert exp.total_absorbed == pytest.approx(1.0, abs=1e-12)  # 1/2 per stream
