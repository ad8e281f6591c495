"""Graph patterns the engine recognises beyond single ops.

- A bias applied by a separate ``add``/``sub`` after a bias-free affine op (``x @ W.T + b``,
  Keras Dense/Conv2D, ONNX MatMul+Add) is that op's bias: the explanation equals the fused
  ``nn.Linear``/``nn.Conv2d`` one, saturation handling included.
- Routing weights stay gates through top-k, renormalisation and scaling (MoE), so the expert
  output gets all the relevance of their product.
- ``type_as(x, other)`` passes relevance to ``x`` only.
- Inputs in unaligned buffers give bit-identical relevance.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbacktrace import Backtrace

torch.manual_seed(0)
LIN1, LIN2 = nn.Linear(5, 4).double(), nn.Linear(4, 3).double()
CONV = nn.Conv2d(2, 3, 3).double()


class SplitBias(nn.Module):
    """The same network as Sequential(LIN1, ReLU, LIN2), biases added by separate ops."""

    def forward(self, x):
        h = torch.relu(torch.matmul(x, LIN1.weight.T) + LIN1.bias)
        return torch.matmul(h, LIN2.weight.T) - (-LIN2.bias)  # sub form


class ConvSplit(nn.Module):
    def forward(self, x):
        y = F.conv2d(x, CONV.weight) + CONV.bias.view(1, -1, 1, 1)
        return torch.tanh(y).mean((2, 3))


class ConvFused(nn.Module):
    def forward(self, x):
        return torch.tanh(CONV(x)).mean((2, 3))


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_separate_bias_add_equals_fused_linear(mode):
    x = torch.randn(6, 5, dtype=torch.float64) * 2
    fused = Backtrace(nn.Sequential(LIN1, nn.ReLU(), LIN2)).explain(x, target=1, mode=mode)
    split = Backtrace(SplitBias()).explain(x, target=1, mode=mode)
    torch.testing.assert_close(split.relevance, fused.relevance, rtol=1e-12, atol=1e-12)
    assert split.conservation_error < 1e-12
    assert sum(split.absorbed.values()) == pytest.approx(sum(fused.absorbed.values()), rel=1e-12)


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_separate_conv_bias_equals_fused_conv_with_saturation(mode):
    x = torch.randn(2, 2, 6, 6, dtype=torch.float64) * 3  # tanh saturates on many outputs
    fused = Backtrace(ConvFused()).explain(x, target=1, mode=mode)
    split = Backtrace(ConvSplit()).explain(x, target=1, mode=mode)
    torch.testing.assert_close(split.relevance, fused.relevance, rtol=1e-10, atol=1e-12)


def test_constant_minus_affine_is_not_fused_but_conserves():
    class Reversed(nn.Module):
        def forward(self, x):
            return LIN2.bias - torch.matmul(torch.relu(LIN1(x)), LIN2.weight.T)

    exp = Backtrace(Reversed()).explain(torch.randn(3, 5, dtype=torch.float64), target=0)
    assert exp.conservation_error < 1e-12


def test_bias_add_hand_computed():
    """y = 2·x0 − 1·x1 + 1 as matmul + add: shares |z|/(|z|+|b|) = 2/4, 1/4, bias 1/4."""

    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.tensor([[2.0], [-1.0]], dtype=torch.float64))
            self.b = nn.Parameter(torch.tensor([1.0], dtype=torch.float64))

        def forward(self, x):
            return x @ self.w + self.b

    exp = Backtrace(Tiny()).explain(torch.tensor([[1.0, 1.0]], dtype=torch.float64), target=0)
    torch.testing.assert_close(exp.relevance, torch.tensor([[0.5, 0.25]], dtype=torch.float64))
    assert sum(exp.absorbed.values()) == pytest.approx(0.25)


class Routed(nn.Module):
    """Two experts; top-1 routing weights from a softmax, renormalised and scaled."""

    def __init__(self):
        super().__init__()
        self.router = nn.Linear(3, 2, bias=False)
        self.expert = nn.Linear(3, 3, bias=False)

    def forward(self, x):
        probs = torch.softmax(self.router(x), dim=-1)
        top, _ = torch.topk(probs, 1, dim=-1)
        weight = 0.5 * top / top.sum(dim=-1, keepdim=True)
        return (self.expert(x) * weight).sum(-1, keepdim=True)


def test_routing_weights_are_gates():
    model = Routed().double()
    x = torch.randn(4, 3, dtype=torch.float64)
    bt = Backtrace(model)
    exp = bt.explain(x, target=0, layers=["expert"])
    g = bt.capture(x)
    muls = [n for n in g.nodes if "mul" in str(n.target) and n in g.data]
    assert any(a in g.gates for n in muls for a in n.args if isinstance(a, torch.fx.Node))
    # All relevance that reaches the product goes to the expert output, none to the router.
    torch.testing.assert_close(exp.layers["expert"].sum(), exp.seed.sum())  # one per row
    assert exp.conservation_error < 1e-12


def test_type_as_passes_relevance_to_its_first_operand():
    class Cast(nn.Module):
        def forward(self, x, y):
            return (x.type_as(y) * 2.0).sum(-1, keepdim=True) + y.sum(-1, keepdim=True)

    x = torch.tensor([[1.0, 3.0]], dtype=torch.float64)
    y = torch.tensor([[2.0, 2.0]], dtype=torch.float64)
    exp = Backtrace(Cast()).explain(x, y, target=0)
    rx, ry = exp.relevance
    # output = 2·1 + 2·3 + 2 + 2 = 12: shares |term|/12
    torch.testing.assert_close(rx, torch.tensor([[2 / 12, 6 / 12]], dtype=torch.float64))
    torch.testing.assert_close(ry, torch.tensor([[2 / 12, 2 / 12]], dtype=torch.float64))


def test_unaligned_input_is_bit_identical():
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))
    x = torch.randn(3, 4)
    bt = Backtrace(model)
    reference = bt.explain(x).relevance
    buffer = torch.empty(13)
    shifted = buffer[1:].view(3, 4)
    shifted.copy_(x)
    assert torch.equal(bt.explain(shifted).relevance, reference)
