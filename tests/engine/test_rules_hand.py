"""Hand-computed relevance on tiny tensors, one rule family at a time (DESIGN.md 2.1–2.4).

Every expected number below is written from the formulas (by hand, or with explicit loops and
index arithmetic in the test), never by calling the engine.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from dlbacktrace import Backtrace

try:
    from reference import affine_layer_from_module, reference_chain
except ImportError:  # tests/ imported as a package
    from tests.reference import affine_layer_from_module, reference_chain

D64 = torch.float64
TOL = 1e-12


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=D64)


def close(got, want, what: str = "", atol: float = TOL) -> None:
    want = want if isinstance(want, torch.Tensor) else t(want)
    assert isinstance(got, torch.Tensor), f"{what}: expected a tensor, got {type(got)}"
    assert tuple(got.shape) == tuple(want.shape), f"{what}: {tuple(got.shape)} != {want.shape}"
    torch.testing.assert_close(
        got.detach().to(D64), want.to(D64), atol=atol, rtol=0, msg=lambda m: f"{what}: {m}"
    )


def explain(model, *inputs, mode="default", attention="value", **kw):
    return Backtrace(model, mode=mode, attention=attention).explain(*inputs, **kw)


def absorbed_sum(exp) -> float:
    assert isinstance(exp.absorbed, dict)
    return sum(float(v) for v in exp.absorbed.values())


def conserved(exp, seed_total: float) -> None:
    """Σ input relevance + Σ absorbed = Σ |seed| (total stream)."""
    rels = exp.total if isinstance(exp.total, tuple) else (exp.total,)
    got = sum(float(r.sum()) for r in rels) + absorbed_sum(exp)
    assert abs(got - seed_total) < 1e-10 * max(1.0, seed_total), (got, seed_total)
    assert abs(float(exp.conservation_error)) < 1e-9


def linear(weight, bias=None) -> nn.Linear:
    w = t(weight)
    m = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None).to(D64)
    with torch.no_grad():
        m.weight.copy_(w)
        if bias is not None:
            m.bias.copy_(t(bias))
    return m.eval()


# =============================================================================================
# 2.1 Affine rule: saturation high / low, thresholds of the activation table
# =============================================================================================

# (activation, W, b, x, default ρ, absorbed, signed shares) with a seed of +1 on the single
# output. Contrast mode explains the output's value y = act(T): ρ = y · signed shares, where the
# shares are z/T (LRP-ε, ε = 1e-12 in float64) in range, z⁺/(P + b⁺) saturated high and
# z⁻/(N + b⁻) saturated low (non-negative: the sign of y is kept).
SATURATION_CASES = {
    # z = [4, −1], T = 3.5 > 2: saturated high, P = 4, b⁺ = 0.5
    "tanh_high": (
        nn.Tanh(), [[2.0, -1.0]], [0.5], [2.0, 1.0],
        [4 / 4.5, 0.0], 0.5 / 4.5, [4 / 4.5, 0.0],
    ),
    # same pre-activation, no activation: D = P + N + |b| = 5.5
    "identity_same_T": (
        None, [[2.0, -1.0]], [0.5], [2.0, 1.0],
        [4 / 5.5, 1 / 5.5], 0.5 / 5.5, [4 / 3.5, -1 / 3.5],
    ),
    # sigmoid saturates only beyond ±4: T = 3.5 is in range, default formula
    "sigmoid_in_range": (
        nn.Sigmoid(), [[2.0, -1.0]], [0.5], [2.0, 1.0],
        [4 / 5.5, 1 / 5.5], 0.5 / 5.5, [4 / 3.5, -1 / 3.5],
    ),
    # z = [−4, 1], T = −3.5 < −2: saturated low, N = 4, b⁻ = 0.5; R⁺ goes to ρ⁻
    "tanh_low": (
        nn.Tanh(), [[-2.0, 1.0]], [-0.5], [2.0, 1.0],
        [4 / 4.5, 0.0], 0.5 / 4.5, [4 / 4.5, 0.0],
    ),
    # sigmoid: z = [−5, 0.5], T = −4.75 < −4 (low); N = 5, b⁻ = 0.25
    "sigmoid_low": (
        nn.Sigmoid(), [[-2.5, 0.5]], [-0.25], [2.0, 1.0],
        [5 / 5.25, 0.0], 0.25 / 5.25, [5 / 5.25, 0.0],
    ),
    # inactive ReLU that is the explained output: z = [−4, 1], b = 0.3, T = −2.7 < 0;
    # N = 4, b⁻ = 0: nothing absorbed, all to the negative contributor
    "relu_inactive_output": (
        nn.ReLU(), [[-2.0, 1.0]], [0.3], [2.0, 1.0],
        [1.0, 0.0], 0.0, [1.0, 0.0],
    ),
    # hardtanh(−1, 1): z = [1.5, −0.5], T = 1.25 > 1, P = 1.5, b⁺ = 0.25
    "hardtanh_high": (
        nn.Hardtanh(), [[1.5, -0.5]], [0.25], [1.0, 1.0],
        [1.5 / 1.75, 0.0], 0.25 / 1.75, [1.5 / 1.75, 0.0],
    ),
    # tanh with the same numbers is in range (u = 2): D = 2.25
    "tanh_in_range": (
        nn.Tanh(), [[1.5, -0.5]], [0.25], [1.0, 1.0],
        [1.5 / 2.25, 0.5 / 2.25], 0.25 / 2.25, [1.5 / 1.25, -0.5 / 1.25],
    ),
    # hardtanh(−0.5, 3) with its own arguments: T = −0.75 < −0.5 (low): z = [0.25, −1]
    # N = 1, b⁻ = 0 (b = 0): all to x1
    "hardtanh_args_low": (
        nn.Hardtanh(-0.5, 3.0), [[0.25, -1.0]], [0.0], [1.0, 1.0],
        [0.0, 1.0], 0.0, [0.0, 1.0],
    ),
    # relu6: z = [8, −1], b = −0.5, T = 6.5 > 6 (high): P = 8, b⁺ = 0
    "relu6_high": (
        nn.ReLU6(), [[4.0, -1.0]], [-0.5], [2.0, 1.0],
        [1.0, 0.0], 0.0, [1.0, 0.0],
    ),
    # silu: z = [−8, 1], b = −3, T = −10 < −6 (low): N = 8, b⁻ = 3
    "silu_low": (
        nn.SiLU(), [[-4.0, 1.0]], [-3.0], [2.0, 1.0],
        [8 / 11, 0.0], 3 / 11, [8 / 11, 0.0],
    ),
    # gelu has no upper bound: T = 10 uses the default formula, D = 12 + 1 + 1 = 14
    "gelu_no_upper": (
        nn.GELU(), [[6.0, -1.0]], [-1.0], [2.0, 1.0],
        [12 / 14, 1 / 14], 1 / 14, [12 / 10, -1 / 10],
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", list(SATURATION_CASES), ids=list(SATURATION_CASES))
def test_saturation_linear_2_to_1(case):
    act, W, b, x, rho, absorbed, shares = SATURATION_CASES[case]
    mods = [linear(W, b)] + ([act] if act is not None else [])
    model = nn.Sequential(*mods).eval()
    x = t([x])

    exp = explain(model, x)  # single output: argmax target 0, seed +1
    close(exp.relevance, [rho], "default relevance")
    assert abs(absorbed_sum(exp) - absorbed) < TOL
    conserved(exp, 1.0)

    with torch.no_grad():
        y = float(model(x))
    signed = y * t([shares])
    exp_c = explain(model, x, mode="contrast")
    close(exp_c.relevance, signed, "signed", atol=1e-10)
    close(exp_c.positive, signed.clamp_min(0), "positive", atol=1e-10)
    close(exp_c.negative, (-signed).clamp_min(0), "negative", atol=1e-10)
    assert abs(float(exp_c.relevance.sum()) + absorbed_sum(exp_c) - y) < 1e-10
    assert exp_c.conservation_error < 1e-10

    # a negative seed explains −y: every value flips sign
    exp_n = explain(model, x, mode="contrast", seed=t([[-1.0]]))
    close(exp_n.relevance, -signed, "negative seed", atol=1e-10)
    exp_nd = explain(model, x, seed=t([[-1.0]]))
    close(exp_nd.relevance, [rho], "default relevance from |seed|")


def test_saturation_cases_agree_with_reference():
    """The hand numbers above are the formulas of tests/reference.py (both must agree)."""
    names = {nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.ReLU: "relu", nn.SiLU: "silu"}
    names.update({nn.GELU: "gelu", nn.ReLU6: "relu6"})
    for act, W, b, x, rho, absorbed, shares in SATURATION_CASES.values():
        if isinstance(act, nn.Hardtanh) and not isinstance(act, nn.ReLU6):
            spec = ("hardtanh", act.min_val, act.max_val)
        else:
            spec = names[type(act)] if act is not None else None
        layer = affine_layer_from_module(linear(W, b), (2,), act=spec)
        ref = reference_chain([layer], t([x]), t([[1.0]]))
        close(ref.relevance, [rho])
        close(ref.net, float(ref.output) * t([shares]), atol=1e-10)
        assert abs(sum(ref.absorbed) - absorbed) < TOL


def test_scale_multiplies_default_seed():
    model = nn.Sequential(linear([[2.0, -1.0], [0.5, 0.5]], [0.5, 0.0])).eval()
    x = t([[2.0, 1.0]])  # outputs [3.5, 1.5]: argmax 0
    exp = explain(model, x, scale=3.0)
    close(exp.relevance, [[3 * 4 / 5.5, 3 * 1 / 5.5]])
    exp1 = explain(model, x, target=1)  # z = [1, 0.5], b = 0: D = 1.5
    close(exp1.relevance, [[1 / 1.5, 0.5 / 1.5]])


# =============================================================================================
# Bias absorption through two layers
# =============================================================================================


def test_bias_absorption_two_layers():
    # h = W1 x + b1 = [1+2+0.5, −1+1−1] = [3.5, −1];  y = W2 h + b2 = 3.5 + 2 + 1 = 6.5
    model = nn.Sequential(
        linear([[1.0, 2.0], [-1.0, 1.0]], [0.5, -1.0]),
        linear([[1.0, -2.0]], [1.0]),
    ).eval()
    x = t([[1.0, 1.0]])
    # layer 2: z = [3.5, 2], D = 6.5 -> R_h = [3.5/6.5, 2/6.5], absorbed 1/6.5
    # layer 1, row 1: z = [1, 2], b = 0.5, D = 3.5 -> [1/6.5, 2/6.5], absorbed 0.5/6.5
    # layer 1, row 2: z = [−1, 1], b = −1, D = 3 -> R_h2/3 each = 2/19.5, absorbed 2/19.5
    rho = [1 / 6.5 + 2 / 19.5, 2 / 6.5 + 2 / 19.5]
    absorbed_l2 = 1 / 6.5
    absorbed_l1 = 0.5 / 6.5 + 2 / 19.5

    exp = explain(model, x)
    close(exp.relevance, [rho])
    vals = sorted(float(v) for v in exp.absorbed.values() if abs(float(v)) > TOL)
    assert len(vals) == 2
    close(t(vals), sorted([absorbed_l1, absorbed_l2]), "absorbed per node")
    conserved(exp, 1.0)

    # contrast explains y = 6.5 with signed shares z/T: layer 2 gives R_h = [3.5, 2], absorbed
    # 1; row 1 (T = 3.5): [1, 2], absorbed 0.5; row 2 (T = −1): 2·[−1, 1]/(−1) = [2, −2],
    # absorbed 2·(−1)/(−1) = 2. x2's evidence cancels exactly.
    exp_c = explain(model, x, mode="contrast")
    close(exp_c.relevance, [[3.0, 0.0]], atol=1e-10)
    assert abs(absorbed_sum(exp_c) - 3.5) < 1e-10
    assert abs(float(exp_c.relevance.sum()) + absorbed_sum(exp_c) - 6.5) < 1e-10


def test_zero_denominator_absorbs_everything():
    # output 1 has no weight on x and no bias: all of its relevance is absorbed
    model = nn.Sequential(linear([[1.0, 1.0], [0.0, 0.0]], [0.0, 0.0])).eval()
    x = t([[2.0, -1.0]])
    exp = explain(model, x, seed=t([[1.0, 0.75]]))
    close(exp.relevance, [[2 / 3, 1 / 3]])
    assert abs(absorbed_sum(exp) - 0.75) < TOL
    conserved(exp, 1.75)


# =============================================================================================
# Grouped conv with stride / padding / dilation
# =============================================================================================


def test_grouped_conv1d_by_hand():
    conv = nn.Conv1d(2, 2, 2, stride=2, padding=1, dilation=2, groups=2).to(D64).eval()
    with torch.no_grad():
        conv.weight.copy_(t([[[1.0, -2.0]], [[0.5, 3.0]]]))
        conv.bias.copy_(t([0.5, -1.0]))
    model = nn.Sequential(conv, nn.Flatten()).eval()
    x = t([[[1.0, 2.0, -1.0, 0.5, 3.0], [-2.0, 1.0, 4.0, -1.0, 0.25]]])
    # out length = (5 + 2·1 − 2·(2−1) − 1) // 2 + 1 = 3; output (c, p) reads input channel c
    # (groups = 2, one channel per group) at positions 2p − 1 + 2k, k = 0, 1 (skip padding)
    L_out = 3
    seed = t([[0.5, -1.0, 2.0, 1.5, -0.25, 1.0]])  # flattened (c, p)
    Rabs = seed.abs().reshape(2, L_out)
    rho = torch.zeros(2, 5, dtype=D64)
    net = torch.zeros(2, 5, dtype=D64)
    absorbed = 0.0
    w = conv.weight.detach()
    b = conv.bias.detach()
    with torch.no_grad():
        y = conv(x).reshape(2, L_out)
    for c in range(2):
        for p in range(L_out):
            contrib = []
            for k in range(2):
                i = 2 * p - 1 + 2 * k
                if 0 <= i < 5:
                    contrib.append((i, float(w[c, 0, k] * x[0, c, i])))
            D = sum(abs(z) for _, z in contrib) + abs(float(b[c]))
            T = sum(z for _, z in contrib) + float(b[c])
            R = float(Rabs[c, p])
            Rc = float(seed.reshape(2, L_out)[c, p]) * float(y[c, p])  # seed ⊙ output
            for i, z in contrib:
                rho[c, i] += R * abs(z) / D
                net[c, i] += Rc * z / T
            absorbed += R * abs(float(b[c])) / D
    # spot check of the index arithmetic: x[0, 0, 4] = 3 is never read (only 2p ± 1 ≤ 3)
    assert rho[0, 4] == 0 and rho[0, 0] == 0 and rho[0, 2] == 0

    exp = explain(model, x, seed=seed)
    close(exp.relevance, rho[None], "grouped conv default")
    assert abs(absorbed_sum(exp) - absorbed) < TOL
    exp_c = explain(model, x, seed=seed, mode="contrast")
    close(exp_c.relevance, net[None], "grouped conv signed", atol=1e-10)

    # the Jacobian reference gives the same numbers
    ref = reference_chain([affine_layer_from_module(conv, (2, 5))], x, seed.reshape(1, 2, 3))
    close(ref.relevance, rho[None])
    close(ref.net, net[None], atol=1e-10)


def test_grouped_conv2d_against_jacobian_reference():
    g = torch.Generator().manual_seed(7)
    conv = nn.Conv2d(4, 6, (2, 3), stride=(2, 1), padding=(1, 2), dilation=(2, 1), groups=2)
    conv = conv.to(D64).eval()
    with torch.no_grad():
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=g, dtype=D64))
        conv.bias.copy_(torch.randn(6, generator=g, dtype=D64))
    model = nn.Sequential(conv, nn.Tanh()).eval()
    x = torch.randn(2, 4, 5, 4, generator=g, dtype=D64)
    with torch.no_grad():
        y = model(x)
    seed = torch.randn(y.shape, generator=g, dtype=D64)
    ref = reference_chain([affine_layer_from_module(conv, (4, 5, 4), act="tanh")], x, seed)
    assert ref.saturated_high > 0 and ref.saturated_low > 0
    exp = explain(model, x, seed=seed)
    close(exp.relevance, ref.relevance, "default", atol=1e-10)
    exp_c = explain(model, x, seed=seed, mode="contrast")
    close(exp_c.positive, ref.positive, "positive", atol=1e-10)
    close(exp_c.negative, ref.negative, "negative", atol=1e-10)


# =============================================================================================
# Max-pool routing
# =============================================================================================


def test_max_pool_routes_to_argmax():
    x = t([[[[1.0, 5.0, -2.0, 0.5],
              [3.0, 2.0, 4.0, 7.0],
              [-1.0, -3.0, 0.0, 6.0],
              [-4.0, -0.5, 8.0, 1.5]]]])  # fmt: skip
    model = nn.Sequential(nn.MaxPool2d(2), nn.Flatten()).eval()
    seed = t([[0.5, -1.0, 2.0, 0.25]])
    # window maxima: 5 at (0,1), 7 at (1,3), −0.5 at (3,1), 8 at (3,2)
    want = torch.zeros(1, 1, 4, 4, dtype=D64)
    want[0, 0, 0, 1], want[0, 0, 1, 3], want[0, 0, 3, 1], want[0, 0, 3, 2] = 0.5, 1.0, 2.0, 0.25
    exp = explain(model, x, seed=seed)
    close(exp.relevance, want)
    exp_c = explain(model, x, seed=seed, mode="contrast")
    # contrast routes seed ⊙ output: 0.5·5, −1·7, 2·(−0.5), 0.25·8
    net = torch.zeros(1, 1, 4, 4, dtype=D64)
    net[0, 0, 0, 1], net[0, 0, 1, 3], net[0, 0, 3, 1], net[0, 0, 3, 2] = 2.5, -7.0, -1.0, 2.0
    close(exp_c.relevance, net, "signed")
    close(exp_c.positive, net.clamp_min(0), "positive")
    close(exp_c.negative, (-net).clamp_min(0), "negative")


def test_max_pool_overlapping_windows_accumulate():
    x = t([[[[0.0, 1.0, 0.0], [2.0, 9.0, 3.0], [0.0, 4.0, 5.0]]]])
    model = nn.Sequential(nn.MaxPool2d(2, stride=1), nn.Flatten()).eval()
    seed = t([[1.0, 2.0, 3.0, 4.0]])  # the centre 9 wins all four windows
    want = torch.zeros(1, 1, 3, 3, dtype=D64)
    want[0, 0, 1, 1] = 10.0
    close(explain(model, x, seed=seed).relevance, want)


def test_max_pool_after_conv_and_relu():
    conv = nn.Conv2d(1, 1, 1, bias=True).to(D64)
    with torch.no_grad():
        conv.weight.fill_(2.0)
        conv.bias.fill_(1.0)
    model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()).eval()
    x = t([[[[1.0, 3.0], [2.0, -1.0]]]])  # conv: [3, 7; 5, −1]: max 7 at (0, 1)
    exp = explain(model, x)
    # seed 1 on the single output; conv at (0,1): z = 6, b = 1 -> 6/7 to x, 1/7 absorbed
    want = torch.zeros(1, 1, 2, 2, dtype=D64)
    want[0, 0, 0, 1] = 6 / 7
    close(exp.relevance, want)
    assert abs(absorbed_sum(exp) - 1 / 7) < TOL


# =============================================================================================
# Data movement: relevance goes exactly where each element came from
# =============================================================================================


def _routed(x: torch.Tensor, y: torch.Tensor, seed: torch.Tensor) -> torch.Tensor:
    """Scatter each output element's seed onto the (unique) input element with its value."""
    out = torch.zeros_like(x)
    xf = x.reshape(x.shape[0], -1)
    of = out.reshape(x.shape[0], -1)
    for bi in range(x.shape[0]):
        for v, s in zip(y[bi].reshape(-1).tolist(), seed[bi].reshape(-1).tolist(), strict=True):
            hits = (xf[bi] == v).nonzero().flatten()
            assert len(hits) == 1, "input values must be distinct"
            of[bi, hits[0]] += s
    return out


class MovementOnly(nn.Module):
    def forward(self, x):  # x [B, 2, 3, 4]
        B = x.shape[0]
        a = x.permute(0, 3, 1, 2).reshape(B, 4, 6)
        b = torch.flip(a, dims=[-1])[:, 1:3, ::2]
        c = torch.cat([a[:, :2, 1:4], b, x[:, 0, :2, 1:4]], dim=1).transpose(1, 2)
        e = torch.stack([x[:, 1, 2], x[:, 0, 0]], dim=1)
        f0, _ = torch.chunk(x[:, 1], 2, dim=-1)
        s0, _ = torch.split(x[:, 0], [1, 2], dim=1)
        g = x[:, :1, :1, :].expand(B, 3, 2, 4)
        h = x[:, 0].unsqueeze(1).repeat(1, 2, 1, 1).squeeze(1)
        i = x[:, 1, :, torch.tensor([3, 3, 0])]  # advanced indexing, repeated index
        j = torch.gather(x[:, 0], 2, torch.tensor([[[1, 1], [0, 3], [2, 2]]]).expand(B, 3, 2))
        k = F.interpolate(x[:, 1:, :1], scale_factor=2, mode="nearest")
        parts = [c, e, f0, s0, g, h, i, j, k]
        return torch.cat([p.reshape(B, -1) for p in parts], dim=1)


def test_data_movement_routes_exactly():
    g = torch.Generator().manual_seed(3)
    B = 2
    x = (torch.randperm(B * 24, generator=g).to(D64) + 1.0).reshape(B, 2, 3, 4) / 8.0
    x = x * torch.where(torch.rand(x.shape, generator=g) < 0.5, -1.0, 1.0).to(D64)
    model = MovementOnly().eval()
    with torch.no_grad():
        y = model(x)
    seed = torch.randn(y.shape, generator=g, dtype=D64)

    exp = explain(model, x, seed=seed)
    close(exp.relevance, _routed(x, y, seed.abs()), "default")
    conserved(exp, float(seed.abs().sum()))
    assert abs(absorbed_sum(exp)) < TOL

    exp_c = explain(model, x, seed=seed, mode="contrast")
    net = _routed(x, y, seed * y)  # contrast routes seed ⊙ output
    close(exp_c.relevance, net, "signed")
    close(exp_c.positive, net.clamp_min(0), "positive")
    close(exp_c.negative, (-net).clamp_min(0), "negative")
    # elements that were sliced away get exactly nothing
    used = _routed(x, y, torch.ones_like(seed)) > 0
    assert not used.all()
    assert (exp.relevance[~used] == 0).all()


def test_pad_routes_data_and_absorbs_padding():
    class Pad(nn.Module):
        def forward(self, x):
            return F.pad(x, (1, 2), value=0.0)

    x = t([[1.0, -2.0, 3.0]])
    seed = t([[0.5, 1.0, -2.0, 3.0, 0.25, -0.75]])
    exp = explain(Pad().eval(), x, seed=seed)
    close(exp.relevance, [[1.0, 2.0, 3.0]])
    # the seed on the three padded positions (0.5 + 0.25 + 0.75) sits on a constant: absorbed
    assert abs(absorbed_sum(exp) - 1.5) < TOL, exp.absorbed
    conserved(exp, float(seed.abs().sum()))


# =============================================================================================
# Embedding
# =============================================================================================


def _embedding(g) -> nn.Embedding:
    emb = nn.Embedding(7, 3).to(D64)
    with torch.no_grad():
        emb.weight.copy_(torch.randn(7, 3, generator=g, dtype=D64))
    return emb.eval()


def test_embedding_relevance_per_token_is_sum_over_dim():
    g = torch.Generator().manual_seed(11)
    emb = _embedding(g)
    ids = torch.tensor([[2, 5, 2, 0], [6, 6, 1, 3]])
    seed = torch.randn(2, 4, 3, generator=g, dtype=D64)
    exp = explain(nn.Sequential(emb).eval(), ids, seed=seed)
    close(exp.relevance, seed.abs().sum(dim=-1), "per token")
    exp_c = explain(nn.Sequential(emb).eval(), ids, seed=seed, mode="contrast")
    with torch.no_grad():
        y = emb(ids)
    close(exp_c.relevance, (seed * y).sum(-1), "signed per token")


def test_embedding_then_linear():
    g = torch.Generator().manual_seed(12)
    emb = _embedding(g)
    lin = nn.Linear(6, 2).to(D64)
    with torch.no_grad():
        lin.weight.copy_(torch.randn(2, 6, generator=g, dtype=D64))
        lin.bias.copy_(t([0.3, -0.2]))
    model = nn.Sequential(emb, nn.Flatten(), lin).eval()
    ids = torch.tensor([[4, 1]])
    with torch.no_grad():
        y = model(ids)
    target = int(y.argmax())
    e = emb.weight.detach()[ids[0]].reshape(-1)  # the 6 embedded features
    w, b = lin.weight.detach(), lin.bias.detach()
    z = [float(w[target, i]) * float(e[i]) for i in range(6)]
    D = sum(abs(v) for v in z) + abs(float(b[target]))
    per_feature = [abs(v) / D for v in z]
    want = [[sum(per_feature[0:3]), sum(per_feature[3:6])]]
    exp = explain(model, ids)
    close(exp.relevance, want)
    assert abs(absorbed_sum(exp) - abs(float(b[target])) / D) < TOL


# =============================================================================================
# where
# =============================================================================================


def test_where_routes_to_taken_branch():
    class W(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("mask", torch.tensor([[True, False, False, True, True]]))

        def forward(self, x):
            return torch.where(self.mask, x, x.flip(-1))

    x = t([[1.0, -2.0, 3.0, 0.5, -4.0]])
    seed = t([[1.0, -2.0, 0.5, 3.0, 0.25]])
    # positions 1, 2 take the flipped branch: they read x[3], x[2]
    want = torch.zeros(1, 5, dtype=D64)
    for j, m in enumerate([True, False, False, True, True]):
        src = j if m else 4 - j
        want[0, src] += abs(float(seed[0, j]))
    exp = explain(W().eval(), x, seed=seed)
    close(exp.relevance, want)
    assert abs(absorbed_sum(exp)) < TOL


def test_where_constant_branch_is_absorbed():
    class W(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("fill", t([0.5, 0.5, -1.0, 2.0]))

        def forward(self, x):
            return torch.where(x > 0, x, self.fill)

    x = t([[1.0, -2.0, 3.0, -0.5]])
    seed = t([[2.0, -1.0, 0.5, 0.75]])
    exp = explain(W().eval(), x, seed=seed)
    close(exp.relevance, [[2.0, 0.0, 0.5, 0.0]])
    assert abs(absorbed_sum(exp) - 1.75) < TOL
    conserved(exp, 4.25)

    class WS(nn.Module):  # scalar other branch
        def forward(self, x):
            return torch.where(x > 0, x, 0.0)

    exp_s = explain(WS().eval(), x, seed=seed)
    close(exp_s.relevance, [[2.0, 0.0, 0.5, 0.0]])
    assert abs(absorbed_sum(exp_s) - 1.75) < TOL


# =============================================================================================
# Products of two data tensors (2.2)
# =============================================================================================


class Product(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x):  # x [B, 6]: a = x[:, :3], g = x[:, 3:]
        a, g = x[:, :3], x[:, 3:]
        if self.kind == "sigmoid_gate":
            return a * torch.sigmoid(g)
        if self.kind == "sigmoid_gate_left":
            return torch.sigmoid(g) * a
        if self.kind == "softmax_gate":
            return a * torch.softmax(g, dim=-1)
        if self.kind == "hardsigmoid_gate":
            return F.hardsigmoid(g) * a
        if self.kind == "complement_gate":  # 1 − gate is a gate too (GRU's update gate)
            return a * (1 - torch.sigmoid(g))
        if self.kind == "complement_gate_left":
            return (1.0 - torch.sigmoid(g)) * a
        if self.kind == "scaled_complement":  # 1 − 2·gate: no gate, a product of data
            return a * torch.rsub(torch.sigmoid(g), 1, alpha=2)
        if self.kind == "div_by_data":
            return a / (g * g + 1.0)
        if self.kind == "same_shape":
            return a * g
        if self.kind == "swiglu":
            return F.silu(a) * g
        raise ValueError(self.kind)


# kind -> (share to a, share to g)
PRODUCT_CASES = {
    "sigmoid_gate": (1.0, 0.0),
    "sigmoid_gate_left": (1.0, 0.0),
    "softmax_gate": (1.0, 0.0),
    "hardsigmoid_gate": (1.0, 0.0),
    "complement_gate": (1.0, 0.0),
    "complement_gate_left": (1.0, 0.0),
    "div_by_data": (1.0, 0.0),
    "same_shape": (0.5, 0.5),
    "swiglu": (0.5, 0.5),
}


@pytest.mark.parametrize("kind", list(PRODUCT_CASES), ids=list(PRODUCT_CASES))
def test_products(kind):
    share_a, share_g = PRODUCT_CASES[kind]
    x = t([[1.5, -2.0, 0.5, -1.0, 3.0, 0.25], [2.0, 1.0, -0.5, 0.5, -2.0, 1.0]])
    seed = t([[1.0, -2.0, 0.5], [-0.25, 0.75, 3.0]])
    model = Product(kind).eval()
    exp = explain(model, x, seed=seed)
    close(exp.relevance, torch.cat([share_a * seed.abs(), share_g * seed.abs()], 1), kind)
    conserved(exp, float(seed.abs().sum()))
    exp_c = explain(model, x, seed=seed, mode="contrast")
    with torch.no_grad():
        Rc = seed * model(x)  # contrast explains seed ⊙ output, split by the same shares
    close(exp_c.relevance, torch.cat([share_a * Rc, share_g * Rc], 1), kind + " signed")


def test_one_minus_twice_a_gate_is_no_gate():
    """``rsub(gate, 1, alpha=2)`` is ``1 − 2·gate``, not a complement: a product of two data
    tensors, so ``a`` takes half (a gate would send it all); the other half reaches ``g``
    through the affine ``1 − 2s`` (default shares |2s| : |1|, the constant absorbing its part)."""
    x = t([[1.5, -2.0, 0.5, -1.0, 3.0, 0.25]])
    seed = t([[1.0, -2.0, 0.5]])
    exp = explain(Product("scaled_complement").eval(), x, seed=seed)
    s = torch.sigmoid(x[:, 3:])
    close(exp.relevance[:, :3], 0.5 * seed.abs(), "a")
    close(exp.relevance[:, 3:], 0.5 * seed.abs() * 2 * s / (2 * s + 1), "g")
    conserved(exp, float(seed.abs().sum()))


@pytest.mark.parametrize("kind", ["complement_gate", "complement_gate_left"])
def test_complement_of_a_gate_is_marked_a_gate_at_capture(kind):
    """``1 - torch.sigmoid(g)`` exports as ``rsub(sigmoid, 1)``: capture marks it a gate (the
    first operand is the gate, so the complement check has to come first)."""
    x = t([[1.5, -2.0, 0.5, -1.0, 3.0, 0.25]])
    g = Backtrace(Product(kind).eval()).capture(x)
    complements = [n for n in g.nodes if n.op == "call_function"
                   and n.target.overloadpacket in (torch.ops.aten.rsub, torch.ops.aten.sub)]
    assert complements, "no 1 − gate node in the graph"
    assert all(n in g.gates for n in complements)


class BroadcastProduct(nn.Module):
    def __init__(self, left: bool):
        super().__init__()
        self.left = left

    def forward(self, x):  # x [B, 5, 4]: a = rows 0..3 [B, 4, 4], s = row 4 [B, 1, 4]
        a, s = x[:, :4, :], x[:, 4:, :]
        return s * a if self.left else a * s


@pytest.mark.parametrize("left", [False, True], ids=["a_times_s", "s_times_a"])
def test_broadcast_operand_is_a_constant(left):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 5, 4, generator=g, dtype=D64)
    seed = torch.randn(2, 4, 4, generator=g, dtype=D64)
    exp = explain(BroadcastProduct(left).eval(), x, seed=seed)
    want = torch.zeros_like(x)
    want[:, :4] = seed.abs()
    close(exp.relevance, want)
    conserved(exp, float(seed.abs().sum()))


def test_rmsnorm_style_scale_goes_to_full_size_operand():
    class RMS(nn.Module):
        def forward(self, x):  # x [B, 5, 4]; the rsqrt normaliser comes from row 4 only
            s = torch.rsqrt(x[:, 4:, :].pow(2).mean(-1, keepdim=True) + 1e-6)  # [B, 1, 1]
            return x[:, :4, :] * s

    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 5, 4, generator=g, dtype=D64)
    seed = torch.randn(2, 4, 4, generator=g, dtype=D64)
    exp = explain(RMS().eval(), x, seed=seed)
    want = torch.zeros_like(x)
    want[:, :4] = seed.abs()
    close(exp.relevance, want)


# =============================================================================================
# Attention (2.2): O = A·V, value mode and split mode; eager vs SDPA
# =============================================================================================

DH = 3  # head dim of the single-head models; x[..., :3] = Q, [3:6] = K, [6:9] = V
T_LEN = 4
PAD_MASK = torch.tensor(
    [[True, True, True, True], [True, True, True, False]]
)  # [B, keys]: sample 1 has a padded last key


def _value_relevance(A, V, seed):
    """Explicit rule for O = A·V with weights A: contributions z_(t,e),s = A_ts·V_se.

    A [B, H, T, S], V [B, H, S, E], seed [B, H, T, E] -> (ρ_V default, ρ⁺_V, ρ⁻_V), each
    [B, H, S, E]. No bias, so nothing is absorbed.
    """
    Bn, H, Tq, S = A.shape
    E = V.shape[-1]
    rho = torch.zeros(Bn, H, S, E, dtype=D64)
    pos = torch.zeros_like(rho)
    neg = torch.zeros_like(rho)
    for b in range(Bn):
        for h in range(H):
            for tq in range(Tq):
                for e in range(E):
                    z = [float(A[b, h, tq, s] * V[b, h, s, e]) for s in range(S)]
                    D = sum(abs(v) for v in z)
                    r = float(seed[b, h, tq, e])
                    rp, rn = max(r, 0.0), max(-r, 0.0)
                    for s in range(S):
                        if D == 0:
                            continue
                        rho[b, h, s, e] += abs(r) * abs(z[s]) / D
                        cp, cn = max(z[s], 0.0) / D, max(-z[s], 0.0) / D
                        pos[b, h, s, e] += rp * cp + rn * cn
                        neg[b, h, s, e] += rp * cn + rn * cp
    return rho, pos, neg


class EagerAttention(nn.Module):
    def __init__(self, mask: torch.Tensor, scale: float | None = None):
        super().__init__()
        self.register_buffer("mask", mask)  # [B or 1, T, S] bool, True = attend
        self.scale = scale if scale is not None else 1 / math.sqrt(DH)

    def probabilities(self, x):
        q, k = x[..., :DH], x[..., DH : 2 * DH]
        scores = (q @ k.transpose(-2, -1)) * self.scale
        scores = scores.masked_fill(~self.mask, float("-inf"))
        return torch.softmax(scores, dim=-1)

    def forward(self, x):
        return self.probabilities(x) @ x[..., 2 * DH :]


class SdpaAttention(nn.Module):
    def __init__(self, mask: torch.Tensor | None, causal: bool, scale: float | None = None):
        super().__init__()
        self.register_buffer("mask", mask)
        self.causal = causal
        self.scale = scale

    def forward(self, x):
        q = x[..., :DH].unsqueeze(1)
        k = x[..., DH : 2 * DH].unsqueeze(1)
        v = x[..., 2 * DH :].unsqueeze(1)
        mask = None if self.mask is None else self.mask.unsqueeze(1)
        o = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=self.causal, scale=self.scale
        )
        return o.squeeze(1)


def _pad_mask() -> torch.Tensor:
    return PAD_MASK[:, None, :].expand(2, T_LEN, T_LEN).clone()


def _causal_mask() -> torch.Tensor:
    return torch.tril(torch.ones(T_LEN, T_LEN, dtype=torch.bool))[None].expand(2, -1, -1).clone()


def _attention_input(seed: int):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, T_LEN, 3 * DH, generator=g, dtype=D64) * 1.5
    s = torch.randn(2, T_LEN, DH, generator=g, dtype=D64)
    return x, s


def _signed_value_relevance(A, V, seed):
    """Contrast, value mode: ``O = A·V`` explained at ``seed ⊙ O`` with shares ``A_ts·V_se/O_te``
    gives ``ρ_V[s, e] = V_se · Σ_t A_ts·seed_te`` (ε = 1e-12 is below the tolerance)."""
    return V * (A.transpose(-2, -1) @ seed)


def _expected_value_mode(model: EagerAttention, x, seed):
    with torch.no_grad():
        A = model.probabilities(x)
    V = x[..., 2 * DH :]
    rho_v, _, _ = _value_relevance(A[:, None], V[:, None], seed[:, None])
    net_v = _signed_value_relevance(A, V, seed)
    out = []
    for r in (rho_v[:, 0], net_v):
        full = torch.zeros_like(x)
        full[..., 2 * DH :] = r
        out.append(full)
    return out


@pytest.mark.parametrize("mask_kind", ["padding", "causal"])
def test_eager_attention_value_mode(mask_kind):
    mask = _pad_mask() if mask_kind == "padding" else _causal_mask()
    model = EagerAttention(mask).eval()
    x, seed = _attention_input(21)
    rho, net = _expected_value_mode(model, x, seed)

    exp = explain(model, x, seed=seed)  # attention="value"
    close(exp.relevance, rho, "value mode")
    assert (exp.relevance[..., : 2 * DH] == 0).all(), "Q and K get nothing in value mode"
    conserved(exp, float(seed.abs().sum()))
    exp_default = Backtrace(model).explain(x, seed=seed)  # the default is value mode
    close(exp_default.relevance, rho, "default attention option")

    exp_c = explain(model, x, seed=seed, mode="contrast")
    close(exp_c.relevance, net, "value mode signed", atol=1e-10)

    if mask_kind == "padding":
        assert (exp.relevance[1, T_LEN - 1] == 0).all(), "a masked key gets exactly 0"
        assert (exp_c.relevance[1, T_LEN - 1] == 0).all()
        assert (exp.relevance[0, T_LEN - 1, 2 * DH :] > 0).all()  # unmasked in sample 0
    else:
        # a seed on the first query only: causal attention sees key 0 alone
        seed0 = torch.zeros_like(seed)
        seed0[:, 0] = seed[:, 0]
        exp0 = explain(model, x, seed=seed0)
        want = torch.zeros_like(x)
        want[:, 0, 2 * DH :] = seed[:, 0].abs()
        close(exp0.relevance, want, "causal first query")


@pytest.mark.parametrize("variant", ["attn_mask", "attn_mask_scale", "is_causal"], ids=lambda v: v)
def test_sdpa_matches_eager_value_mode(variant):
    scale = 0.7 if variant == "attn_mask_scale" else None
    if variant == "is_causal":
        eager = EagerAttention(_causal_mask()).eval()
        sdpa = SdpaAttention(None, causal=True).eval()
    else:
        eager = EagerAttention(_pad_mask(), scale=scale).eval()
        sdpa = SdpaAttention(_pad_mask(), causal=False, scale=scale).eval()
    x, seed = _attention_input(22)
    with torch.no_grad():
        torch.testing.assert_close(sdpa(x), eager(x), atol=1e-12, rtol=0)
    rho, net = _expected_value_mode(eager, x, seed)

    for model, name in ((eager, "eager"), (sdpa, "sdpa")):
        exp = explain(model, x, seed=seed)
        close(exp.relevance, rho, f"{name} value mode")
        exp_c = explain(model, x, seed=seed, mode="contrast")
        close(exp_c.relevance, net, f"{name} signed", atol=1e-10)
    if variant != "is_causal":
        assert (explain(sdpa, x, seed=seed).relevance[1, T_LEN - 1] == 0).all()


HQ, HKV, DG = 4, 2, 2  # grouped-query heads


class GqaAttention(nn.Module):
    """x [B, T, HQ·DG + 2·HKV·DG] -> Q [B, HQ, T, DG], K/V [B, HKV, T, DG]; causal."""

    def __init__(self, sdpa: bool):
        super().__init__()
        self.sdpa = sdpa

    def split(self, x):
        B, T, _ = x.shape
        q = x[..., : HQ * DG].reshape(B, T, HQ, DG).transpose(1, 2)
        k = x[..., HQ * DG : (HQ + HKV) * DG].reshape(B, T, HKV, DG).transpose(1, 2)
        v = x[..., (HQ + HKV) * DG :].reshape(B, T, HKV, DG).transpose(1, 2)
        return q, k, v

    def probabilities(self, x):
        q, k, _ = self.split(x)
        k = k.repeat_interleave(HQ // HKV, dim=1)
        T = x.shape[1]
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(DG)
        return torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)

    def forward(self, x):
        B, T, _ = x.shape
        q, k, v = self.split(x)
        if self.sdpa:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            o = self.probabilities(x) @ v.repeat_interleave(HQ // HKV, dim=1)
        return o.transpose(1, 2).reshape(B, T, HQ * DG)


def test_gqa_sdpa_matches_eager_and_formula():
    g = torch.Generator().manual_seed(23)
    B, T = 2, 4
    x = torch.randn(B, T, (HQ + 2 * HKV) * DG, generator=g, dtype=D64) * 1.5
    seed = torch.randn(B, T, HQ * DG, generator=g, dtype=D64)
    eager, sdpa = GqaAttention(False).eval(), GqaAttention(True).eval()
    with torch.no_grad():
        torch.testing.assert_close(sdpa(x), eager(x), atol=1e-12, rtol=0)
        A = eager.probabilities(x)  # [B, HQ, T, T]
    _, _, v = eager.split(x)
    v_rep = v.repeat_interleave(HQ // HKV, dim=1)  # query head h reads kv head h // 2
    seed_h = seed.reshape(B, T, HQ, DG).transpose(1, 2)
    rho_h, _, _ = _value_relevance(A, v_rep, seed_h)  # [B, HQ, T, DG]
    net_h = _signed_value_relevance(A, v_rep, seed_h)

    def to_input(r):
        kv = r.reshape(B, HKV, HQ // HKV, T, DG).sum(2)  # sum over the sharing query heads
        full = torch.zeros_like(x)
        full[..., (HQ + HKV) * DG :] = kv.transpose(1, 2).reshape(B, T, HKV * DG)
        return full

    rho, net = to_input(rho_h), to_input(net_h)
    for model, name in ((eager, "eager"), (sdpa, "sdpa")):
        exp = explain(model, x, seed=seed)
        close(exp.relevance, rho, f"{name} gqa")
        exp_c = explain(model, x, seed=seed, mode="contrast")
        close(exp_c.relevance, net, f"{name} gqa signed", atol=1e-10)


@pytest.mark.parametrize("kind", ["eager_padding", "eager_causal", "sdpa_mask", "sdpa_causal"])
def test_split_mode_reaches_q_and_k_and_conserves(kind):
    models = {
        "eager_padding": lambda: EagerAttention(_pad_mask()),
        "eager_causal": lambda: EagerAttention(_causal_mask()),
        "sdpa_mask": lambda: SdpaAttention(_pad_mask(), causal=False),
        "sdpa_causal": lambda: SdpaAttention(None, causal=True),
    }
    model = models[kind]().eval()
    x, seed = _attention_input(24)
    exp = explain(model, x, seed=seed, attention="split")
    rel = exp.relevance
    assert (rel >= 0).all()
    assert float(rel[..., :DH].abs().sum()) > 1e-3, "Q gets relevance in split mode"
    assert float(rel[..., DH : 2 * DH].abs().sum()) > 1e-3, "K gets relevance in split mode"
    conserved(exp, float(seed.abs().sum()))
    # value mode gives V more than split mode does (part of it now flows through A)
    exp_v = explain(model, x, seed=seed, attention="value")
    assert float(rel[..., 2 * DH :].sum()) < float(exp_v.relevance[..., 2 * DH :].sum()) - 1e-6

    exp_c = explain(model, x, seed=seed, attention="split", mode="contrast")
    assert torch.equal(exp_c.positive - exp_c.negative, exp_c.relevance)
    assert float(exp_c.relevance[..., :DH].abs().sum()) > 1e-3, "Q gets signed relevance"
    assert float(exp_c.relevance[..., DH : 2 * DH].abs().sum()) > 1e-3, "K gets signed relevance"
    assert exp_c.conservation_error < 1e-10
    with torch.no_grad():
        explained = float((seed * model(x)).sum())
    assert abs(float(exp_c.relevance.sum()) + absorbed_sum(exp_c) - explained) < 1e-9
    if "padding" in kind or "mask" in kind:
        # a masked key: its K and V get exactly 0 (its query still attends to the others)
        assert (exp_c.relevance[1, T_LEN - 1, DH:] == 0).all(), "a masked key gets exactly 0"


@pytest.mark.parametrize("variant", ["padding", "causal", "gqa"])
def test_contrast_split_eager_and_sdpa_agree(variant):
    """Eager attention (matmul → softmax → matmul) and SDPA give the same signed maps."""
    if variant == "gqa":
        g = torch.Generator().manual_seed(25)
        x = torch.randn(2, 4, (HQ + 2 * HKV) * DG, generator=g, dtype=D64) * 1.5
        seed = torch.randn(2, 4, HQ * DG, generator=g, dtype=D64)
        eager, sdpa = GqaAttention(False).eval(), GqaAttention(True).eval()
    else:
        mask = _pad_mask() if variant == "padding" else _causal_mask()
        eager = EagerAttention(mask).eval()
        sdpa = SdpaAttention(mask, causal=False).eval()
        x, seed = _attention_input(26)
    a = Backtrace(eager, mode="contrast").explain(x, seed=seed)  # contrast default: split
    b = Backtrace(sdpa, mode="contrast").explain(x, seed=seed)
    close(a.relevance, b.relevance, "eager vs sdpa", atol=1e-9)
    assert abs(absorbed_sum(a) - absorbed_sum(b)) < 1e-9


def test_softmax_rule_by_hand():
    """``y = softmax(s)·v`` with s, v data, split mode, one query, a padded key.

    Hand numbers: s = [1, 2, −inf (padded)], A = softmax = [e/(e+e²), e²/(e+e²), 0],
    v = [3, −1, 5] (one value dim), O = Σ A·v; R = seed·O = O (seed 1).
    V half: ρ_v = ½·A·v·R/O = ½·A·v; A half: R_A = ½·A·v (same numbers, per key);
    softmax rule: R_s = s ⊙ (R_A − A·ΣR_A); the padded key gets exactly 0.
    """

    class OneQuery(nn.Module):
        def forward(self, x):  # x [1, 6]: s = x[:, :3], v = x[:, 3:]
            s = x[:, :3].masked_fill(torch.tensor([[False, False, True]]), float("-inf"))
            A = torch.softmax(s, dim=-1)
            return (A.unsqueeze(1) @ x[:, 3:].unsqueeze(-1)).reshape(1, 1)

    x = t([[1.0, 2.0, 0.7, 3.0, -1.0, 5.0]])
    e1, e2 = math.exp(1.0), math.exp(2.0)
    A = [e1 / (e1 + e2), e2 / (e1 + e2), 0.0]
    v = [3.0, -1.0, 5.0]
    half = [0.5 * a * b for a, b in zip(A, v, strict=True)]
    total_a = sum(half)
    R_s = [1.0 * (half[0] - A[0] * total_a), 2.0 * (half[1] - A[1] * total_a), 0.0]
    exp = Backtrace(OneQuery(), mode="contrast").explain(x, target=0)
    close(exp.relevance, [R_s + half], "softmax rule", atol=1e-10)
    assert exp.relevance[0, 2] == 0 and exp.relevance[0, 5] == 0


def test_ledger_per_row_by_hand():
    """DESIGN.md 2.4: the bias share is recorded per batch row."""
    model = nn.Sequential(linear([[2.0, -1.0]], [0.5])).eval()
    # row 0: z = [4, −1] (D = 5.5, T = 3.5); row 1: z = [2, −1] (D = 3.5, T = 1.5)
    x = t([[2.0, 1.0], [1.0, 1.0]])
    exp = explain(model, x)
    close(exp.absorbed_rows, [0.5 / 5.5, 0.5 / 3.5, 0.0], "default absorbed per row")
    close(exp.row_conservation_error, [0.0, 0.0], "default rows balance")
    # contrast explains y = T per row: the bias takes R·b/T = b = 0.5 in each row
    exp_c = explain(model, x, mode="contrast")
    close(exp_c.absorbed_rows, [0.5, 0.5, 0.0], "contrast absorbed per row", atol=1e-10)
    close(exp_c.relevance, [[4.0, -1.0], [2.0, -1.0]], "contrast = z", atol=1e-10)
    assert float(exp_c.row_conservation_error.max()) < 1e-12


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_clamp_like_selection_agrees(mode):
    """DESIGN.md 2.3: clamp, hardtanh, minimum and maximum with a constant are one rule: the
    clamped element keeps its relevance, and the producer sees the bound as saturation."""
    lin = linear([[2.0, -1.0], [1.0, 1.0]], [0.5, -0.25])
    x = t([[2.0, 1.0], [-1.0, 0.5]])  # pre-activations [3.5, 2.75], [−2.0, −0.75]

    class Bound(nn.Module):
        def __init__(self, how):
            super().__init__()
            self.lin, self.how = lin, how

        def forward(self, x):
            y = self.lin(x)
            if self.how == "clamp":
                return torch.clamp(y, min=-1.0, max=1.0)
            if self.how == "hardtanh":
                return F.hardtanh(y, -1.0, 1.0)
            if self.how == "min_max":
                return torch.maximum(torch.minimum(y, torch.tensor(1.0, dtype=D64)),
                                     torch.tensor(-1.0, dtype=D64))
            return torch.clamp_max(torch.clamp_min(y, -1.0), 1.0)

    seed = t([[1.0, 0.5], [-0.75, 1.0]])
    maps = {how: explain(Bound(how).eval(), x, seed=seed, mode=mode).relevance
            for how in ("clamp", "hardtanh", "min_max", "clamp_min_max")}
    for how, m in maps.items():
        close(m, maps["hardtanh"], f"{how} vs hardtanh")
    if mode == "default":
        # row 0, both outputs saturated high (T = 3.5, 2.75 > 1): z = [4, −1], b⁺ = 0.5 gives
        # x0 4/4.5 of seed 1; z = [2, 1], b⁺ = 0 gives x0 2/3 of seed 0.5
        close(maps["clamp"][0, 0], 1.0 * 4 / 4.5 + 0.5 * 2 / 3, "row 0, x0 by hand")


class Summing(nn.Module):
    def __init__(self, kind: str):
        super().__init__()
        self.kind = kind

    def forward(self, x):  # x [1, 3]
        base = torch.zeros(1, 2, dtype=x.dtype)
        if self.kind == "index_add":
            return base.index_add(1, torch.tensor([0, 0, 1]), x)
        if self.kind == "scatter_add":
            return base.scatter_add(1, torch.tensor([[0, 0, 1]]), x)
        idx = (torch.tensor([0, 0, 0]), torch.tensor([0, 0, 1]))
        return base.index_put(idx, x[0], accumulate=True)


@pytest.mark.parametrize("kind", ["index_add", "scatter_add", "index_put"])
def test_summing_ops_share_like_an_add(kind):
    """DESIGN.md 2.3, summing maps: y0 = x0 + x1 with x = [1, 3] gives 1/4 and 3/4 (default)
    and the contributions themselves in contrast mode (seed 1 on y0 = 4: R = 4, shares z/4)."""
    x = t([[1.0, 3.0, 2.0]])
    seed = t([[1.0, 0.0]])
    exp = explain(Summing(kind).eval(), x, seed=seed)
    close(exp.relevance, [[0.25, 0.75, 0.0]], kind)
    assert abs(absorbed_sum(exp)) < TOL
    exp_c = explain(Summing(kind).eval(), x, seed=seed, mode="contrast")
    close(exp_c.relevance, [[1.0, 3.0, 0.0]], kind + " contrast", atol=1e-10)


def test_fold_sums_overlapping_patches():
    """``F.fold`` (col2im): output 1 adds columns 0 and 1 of the patch matrix (values 2, 4)."""

    class Fold(nn.Module):
        def forward(self, x):
            return F.fold(x.reshape(1, 2, 3), output_size=(1, 4), kernel_size=(1, 2)).flatten(1)

    x = t([[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]])  # patches: rows (kernel pos 0 | 1) × 3 columns
    exp = explain(Fold().eval(), x, seed=t([[0.0, 1.0, 0.0, 0.0]]))
    close(exp.relevance, [[0.0, 2 / 6, 0.0, 4 / 6, 0.0, 0.0]], "fold")


@pytest.mark.parametrize("antialias", [False, True])
def test_bicubic_is_affine_with_signed_weights(antialias):
    """DESIGN.md 2.3: bicubic weights can be negative; default mode stays non-negative and both
    modes equal the explicit-Jacobian reference."""

    class Up(nn.Module):
        def forward(self, x):
            if antialias:
                return F.interpolate(x, size=(3, 5), mode="bicubic", antialias=True)
            return F.interpolate(x, scale_factor=2, mode="bicubic")

    g = torch.Generator().manual_seed(31)
    x = torch.randn(2, 2, 4, 6, generator=g, dtype=D64)
    with torch.no_grad():
        y = Up()(x)
    seed = torch.randn(y.shape, generator=g, dtype=D64)
    layer = affine_layer_from_module(Up(), (2, 4, 6))
    assert (layer.W < 0).any(), "bicubic weights should include negative ones"
    ref = reference_chain([layer], x, seed)
    exp = explain(Up().eval(), x, seed=seed)
    assert (exp.relevance >= 0).all()
    close(exp.relevance, ref.relevance, "default vs reference", atol=1e-10)
    close(explain(Up().eval(), x, seed=seed, mode="contrast").relevance, ref.net,
          "contrast vs reference", atol=1e-10)


def _gradient_x_input(model, x, target):
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model(x)[:, target].sum(), x)
    return (grad * x).detach()


def test_contrast_on_a_bias_free_linear_model_is_gradient_x_input():
    """Contrast mode explains the logit: on ``y = W x`` its map is ``W_t ⊙ x`` exactly (the
    shares z/T times R = T), i.e. gradient × input."""
    g = torch.Generator().manual_seed(41)
    model = nn.Sequential(nn.Linear(7, 4, bias=False)).to(D64)
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(4, 7, generator=g, dtype=D64))
    x = torch.randn(5, 7, generator=g, dtype=D64)
    exp = Backtrace(model, mode="contrast").explain(x, target=2)
    close(exp.relevance, _gradient_x_input(model, x, 2), "linear: gradient x input", atol=1e-10)


def test_contrast_on_a_bias_free_relu_mlp_with_tiny_epsilon_is_gradient_x_input():
    """LRP-0 on a ReLU network is gradient × input: the relevance per unit R_j/T_j of a ReLU
    neuron is its gradient (1 if active; inactive neurons receive nothing)."""
    g = torch.Generator().manual_seed(42)
    model = nn.Sequential(nn.Linear(6, 12, bias=False), nn.ReLU(), nn.Linear(12, 8, bias=False),
                          nn.ReLU(), nn.Linear(8, 3, bias=False)).to(D64)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D64))
    x = torch.randn(6, 6, generator=g, dtype=D64)
    exp = Backtrace(model, mode="contrast", epsilon=1e-30).explain(x, target=1)
    close(exp.relevance, _gradient_x_input(model, x, 1), "relu mlp: gradient x input",
          atol=1e-10)
    assert torch.equal(exp.positive - exp.negative, exp.relevance)


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_instance_norm_equals_group_norm_with_one_channel_per_group(mode):
    """InstanceNorm (``_native_batch_norm_legit.no_stats`` on ``[1, N·C, ...]``) is a group norm
    with C groups: the same centring rule must give the same relevance."""
    g = torch.Generator().manual_seed(51)
    inst = nn.InstanceNorm2d(3, affine=True).to(D64)
    group = nn.GroupNorm(3, 3).to(D64)
    with torch.no_grad():
        w, b = torch.rand(3, generator=g, dtype=D64) + 0.5, torch.randn(3, generator=g, dtype=D64)
        for m in (inst, group):
            m.weight.copy_(w)
            m.bias.copy_(b)
    x = torch.randn(2, 3, 4, 5, generator=g, dtype=D64)
    seed = torch.randn(2, 3, 4, 5, generator=g, dtype=D64)
    a = explain(nn.Sequential(inst).eval(), x, seed=seed, mode=mode)
    c = explain(nn.Sequential(group).eval(), x, seed=seed, mode=mode)
    close(a.relevance, c.relevance, "instance vs group norm", atol=1e-10)
    assert a.conservation_error < 1e-12


def test_layer_norm_centring_by_hand():
    """DESIGN.md 2.3: ``y = γ·(x − μ)/σ + β`` with σ held constant. x = [1, 2, 6]: μ = 3,
    c = x − μ = [−2, −1, 3]; output 2's centring contributions (δ_2k − 1/3)·x_k = [−1/3, −2/3, 4]
    (sum 3 = c_2). Seed on output 2; γ_2 = 2, β_2 = 0.5."""
    ln = nn.LayerNorm(3, eps=1e-12).to(D64)
    with torch.no_grad():
        ln.weight.copy_(t([1.0, 1.5, 2.0]))
        ln.bias.copy_(t([0.0, -0.25, 0.5]))
    model = nn.Sequential(ln).eval()
    x = t([[1.0, 2.0, 6.0]])
    sigma = math.sqrt(14 / 3)
    s2 = 2.0 * 3 / sigma  # γ_2·x̂_2
    seed = t([[0.0, 0.0, 1.0]])
    z = [-1 / 3, -2 / 3, 4.0]
    # default mode, centring: |γx̂|/(|γx̂| + |β|) reaches c_2, shared by |z|/Σ|z| (Σ|z| = 5)
    r = s2 / (s2 + 0.5)
    exp = Backtrace(model, norm="centre").explain(x, seed=seed)
    close(exp.relevance, [[r * abs(v) / 5 for v in z]], "default, centring")
    assert abs(absorbed_sum(exp) - 0.5 / (s2 + 0.5)) < 1e-12
    # default mode's default is identity: all of it to x_2
    close(explain(model, x, seed=seed).relevance, [[0.0, 0.0, r]], "default, identity")
    # contrast: R = y_2 = s2 + 0.5; β takes 0.5, then shares z/c_2 = z/3
    exp_c = explain(model, x, seed=seed, mode="contrast")
    close(exp_c.relevance, [[s2 * v / 3 for v in z]], "contrast, centring", atol=1e-10)
    assert abs(absorbed_sum(exp_c) - 0.5) < 1e-10


# =============================================================================================
# No forwards inside rules (issue 15): pooling and layer norm read what the record kept
# =============================================================================================


def _ops_in_sweep(model, *inputs, **kw) -> set[str]:
    """ATen ops the backward sweep runs for one explanation (after capture)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    import dlbacktrace.engine.sweep as sweep_module

    seen: set[str] = set()

    class Recording(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            seen.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    bt = Backtrace(model, **kw)
    bt.explain(*inputs)
    run = sweep_module._run_sweep

    def recorded(*a, **k):
        with Recording():
            return run(*a, **k)

    sweep_module._run_sweep = recorded
    try:
        bt.explain(*inputs)
    finally:
        sweep_module._run_sweep = run
    return seen


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_max_pool_layer_and_group_norm_rules_run_no_forward(mode):
    torch.manual_seed(0)
    pool = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten()).to(D64)
    ops = _ops_in_sweep(pool.eval(), torch.randn(2, 1, 6, 6, dtype=D64), mode=mode)
    assert not {o for o in ops if "max_pool" in o}, ops
    norm = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Linear(4, 2)).to(D64).eval()
    ops = _ops_in_sweep(norm, torch.randn(3, 4, dtype=D64), mode=mode, norm="centre")
    assert not {o for o in ops if "layer_norm" in o or o in ("var", "var_mean", "std")}, ops
    group = nn.Sequential(nn.Conv2d(2, 4, 3), nn.GroupNorm(2, 4), nn.ReLU(), nn.Flatten(),
                          nn.Linear(16, 2)).to(D64).eval()
    ops = _ops_in_sweep(group, torch.randn(2, 2, 4, 4, dtype=D64), mode=mode, norm="centre")
    assert not {o for o in ops if "group_norm" in o or o in ("var", "var_mean", "std")}, ops
