"""Hand-computed checks of the float-only selection helpers the rules use instead of boolean
masks (``sign``-based indicators, exact ``lerp``/``addcmul`` selection), including the edge
values where a float formulation could go wrong: ±0, subnormals, zero denominators.
"""

from __future__ import annotations

import numpy as np
import torch

from dlbacktrace.engine.rules.affine import coefficients, saturated_outputs, unsaturated_shares
from dlbacktrace.engine.rules.base import (
    nonnegative_,
    positive_,
    safe_reciprocal,
    stabilised,
)

D64 = torch.float64
SUBNORMAL = 1e-45  # a float32 subnormal


def t(values, dtype=D64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def test_indicators_at_signed_zeros_and_subnormals():
    x = t([-2.0, -0.0, 0.0, SUBNORMAL, 3.0], torch.float32)
    assert nonnegative_(x.clone()).tolist() == [0.0, 1.0, 1.0, 1.0, 1.0]
    assert positive_(x.clone()).tolist() == [0.0, 0.0, 0.0, 1.0, 1.0]


def test_stabilised_by_hand_and_into_a_given_buffer():
    T = t([2.0, 0.0, -0.0, -3.0])
    assert stabilised(T, 0.5).tolist() == [2.5, 0.5, 0.5, -3.5]
    buf = torch.empty(4, dtype=D64)
    got = stabilised(T, 0.5, out=buf)
    assert got.data_ptr() == buf.data_ptr() and got.tolist() == [2.5, 0.5, 0.5, -3.5]
    # ε enters as its float32 value (as it always has: earlier explanations stay bit-identical)
    e = float(np.float32(1e-12))
    assert stabilised(t([0.0, -1.0]), 1e-12).tolist() == [e, -1.0 - e]


def test_safe_reciprocal_by_hand():
    assert safe_reciprocal(t([2.0, 0.0, -4.0, -0.0])).tolist() == [0.5, 0.0, -0.25, 0.0]


def test_unsaturated_shares_absorb_outputs_with_nothing_to_share():
    R = t([[1.0, 2.0, 3.0]])
    G, absorbed = unsaturated_shares(R, t([2.0, 0.0, 4.0]), None)
    assert G.tolist() == [[0.5, 0.0, 0.75]] and float(absorbed) == 2.0
    # two streams, a bias, and A a buffer the rule may overwrite (own=True)
    R2 = t([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    A = t([2.0, 0.0, 4.0])
    G, absorbed = unsaturated_shares(R2, A, t([2.0, 0.0, -4.0]), own=True)
    # D = A + |b| = (4, 0, 8): G = R/D, 0 where D = 0; absorbed = dead R + Σ G·|b|
    assert G.tolist() == [[0.25, 0.0, 0.375], [1.0, 0.0, 0.75]]
    assert float(absorbed) == (2 + 5) + (0.25 * 2 + 0.375 * 4) + (1.0 * 2 + 0.75 * 4)


def test_saturated_coefficients_by_hand():
    # outputs: above the high bound, below the low one, inside, above with nothing to share
    y = t([3.0, -3.0, 0.5, 2.0])
    A = t([4.0, 4.0, 2.0, 0.0])
    S = t([2.0, -2.0, 0.0, 0.0])  # P = (3, 1, 1, 0), N = (1, 3, 1, 0)
    bias = t([1.0, -1.0, 0.0, 0.0])  # b⁺ = (1, 0, 0, 0), b⁻ = (0, 1, 0, 0)
    hi, lo = saturated_outputs(y, (-1.0, 1.0))
    assert hi.tolist() == [1.0, 0.0, 0.0, 1.0] and lo.tolist() == [0.0, 1.0, 0.0, 0.0]
    c = coefficients(t([1.0] * 4), y, A, S, bias, (-1.0, 1.0))
    assert c.p.tolist() == [1 / 4, 0.0, 1 / 2, 0.0]
    assert c.n.tolist() == [0.0, 1 / 4, 1 / 2, 0.0]
    assert c.dead.tolist() == [0.0, 0.0, 0.0, 1.0]
