"""The engine against the slow float64 reference of DESIGN.md 2.1 (tests/reference.py).

Each configuration is a small ``nn.Sequential`` of affine ops (Linear, Conv 1d/2d/3d with
groups/stride/padding/dilation, transposed convs, average/adaptive pooling, bilinear upsampling,
mean/sum, eval BatchNorm) and activations, in float64 with random weights. The reference turns
every affine op into an explicit matrix (its Jacobian) and applies the formulas literally.
Sizes, weights, inputs and seeds are random with a fixed seed per configuration; several
configurations drive neurons into saturation on both sides and the tests check that they do.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
import torch.nn as nn

from dlbacktrace import Backtrace

try:
    from reference import (
        DTYPE,
        MeanDims,
        activation_module,
        chain_from_sequential,
        reference_chain,
    )
except ImportError:  # tests/ imported as a package
    from tests.reference import (
        DTYPE,
        MeanDims,
        activation_module,
        chain_from_sequential,
        reference_chain,
    )

ATOL = 1e-10
RTOL = 1e-10


# --------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------


@dataclass
class Config:
    model: nn.Sequential
    sample_shape: tuple[int, ...]
    batch: int
    input_scale: float = 1.0
    # the dense signed seed must drive at least one relevance-carrying neuron into these regimes
    expect_high: bool = False
    expect_low: bool = False


class _Gain(nn.Module):
    """Marker wrapper: initialise the wrapped module with a given gain (unwrapped afterwards)."""

    def __init__(self, module: nn.Module, gain: float):
        super().__init__()
        self.module = module
        self.gain = gain


def G(module: nn.Module, gain: float) -> _Gain:
    return _Gain(module, gain)


def _init_params(m: nn.Module, gain: float, g: torch.Generator) -> None:
    with torch.no_grad():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
            n = m.num_features
            m.weight.copy_(torch.randn(n, generator=g, dtype=DTYPE) * gain)
            m.bias.copy_(torch.randn(n, generator=g, dtype=DTYPE) * 0.5)
            m.running_mean.copy_(torch.randn(n, generator=g, dtype=DTYPE) * 0.5)
            m.running_var.copy_(torch.rand(n, generator=g, dtype=DTYPE) + 0.5)
            return
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor):
            fan = max(1, w[0].numel())
            w.copy_(torch.randn(w.shape, generator=g, dtype=DTYPE) * gain / fan**0.5)
        b = getattr(m, "bias", None)
        if isinstance(b, torch.Tensor):
            b.copy_(torch.randn(b.shape, generator=g, dtype=DTYPE) * 0.5 * gain)


def make_sequential(
    parts: list[nn.Module], sample_shape: tuple[int, ...], g: torch.Generator
) -> nn.Sequential:
    mods = []
    for p in parts:
        gain = 1.0
        if isinstance(p, _Gain):
            p, gain = p.module, p.gain
        p = p.to(DTYPE)
        _init_params(p, gain, g)
        mods.append(p)
    model = nn.Sequential(*mods).eval()
    with torch.no_grad():
        model(torch.zeros(2, *sample_shape, dtype=DTYPE))  # shapes must fit
    return model


def flat_size(parts: list[nn.Module], sample_shape: tuple[int, ...]) -> int:
    """Number of features after running ``parts`` (unwrapped, default init) on one sample."""
    x = torch.zeros(1, *sample_shape, dtype=DTYPE)
    with torch.no_grad():
        for p in parts:
            p = p.module if isinstance(p, _Gain) else p
            x = p.to(DTYPE).eval()(x)
    return x[0].numel()


def with_head(
    parts: list[nn.Module], sample_shape: tuple[int, ...], n_out: int, gain: float = 1.0
) -> list[nn.Module]:
    return [*parts, nn.Flatten(), G(nn.Linear(flat_size(parts, sample_shape), n_out), gain)]


def cfg_mlp_tanh_sigmoid(g):
    parts = [
        G(nn.Linear(6, 8), 4.0), nn.Tanh(),
        G(nn.Linear(8, 6), 5.0), nn.Sigmoid(),
        nn.Linear(6, 4),
    ]  # fmt: skip
    return Config(make_sequential(parts, (6,), g), (6,), 3, 1.5, True, True)


def cfg_mlp_relu_final_relu(g):
    # the final ReLU's inactive outputs receive seed relevance: saturated low
    parts = [G(nn.Linear(5, 7), 2.0), nn.ReLU(), G(nn.Linear(7, 6), 2.0), nn.ReLU()]
    return Config(make_sequential(parts, (5,), g), (5,), 3, 1.0, False, True)


def cfg_mlp_hardtanh_relu6(g):
    parts = [
        G(nn.Linear(6, 9), 3.0), nn.Hardtanh(),
        G(nn.Linear(9, 7), 8.0), nn.ReLU6(),
        G(nn.Linear(7, 5), 2.0), nn.Hardtanh(-0.5, 2.0),
    ]  # fmt: skip
    return Config(make_sequential(parts, (6,), g), (6,), 3, 2.0, True, True)


def cfg_mlp_lower_bounded(g):
    # silu/gelu/mish saturate low below −6: their (small, nonzero) outputs still carry relevance
    parts = [
        G(nn.Linear(5, 8), 6.0), nn.SiLU(),
        G(nn.Linear(8, 8), 6.0), nn.GELU(),
        G(nn.Linear(8, 6), 6.0), nn.Mish(),
        nn.Linear(6, 3),
    ]  # fmt: skip
    return Config(make_sequential(parts, (5,), g), (5,), 3, 2.0, False, True)


def cfg_mlp_unbounded_acts(g):
    # leaky_relu, elu, softplus never saturate, however large the pre-activation
    parts = [
        G(nn.Linear(5, 7), 8.0), activation_module("leaky_relu"),
        G(nn.Linear(7, 7), 8.0), nn.ELU(),
        G(nn.Linear(7, 6), 8.0), nn.Softplus(),
        G(nn.Linear(6, 3), 8.0),
    ]  # fmt: skip
    return Config(make_sequential(parts, (5,), g), (5,), 2, 2.0)


def cfg_mlp_hardsigmoid_gelu_tanh(g):
    parts = [
        G(nn.Linear(6, 8), 6.0), nn.Hardsigmoid(),
        G(nn.Linear(8, 8), 30.0), nn.GELU(approximate="tanh"),
        G(nn.Linear(8, 4), 1.0), nn.Tanh(),
    ]  # fmt: skip
    return Config(make_sequential(parts, (6,), g), (6,), 3, 1.5, True, True)


def cfg_conv1d_grouped(g):
    shape = (4, 11)
    parts = [
        G(nn.Conv1d(4, 6, 3, stride=2, padding=1, dilation=2, groups=2), 3.0), nn.Tanh(),
        G(nn.Conv1d(6, 6, 2, padding=2, groups=3, bias=False), 2.0), nn.ReLU(),
        nn.AvgPool1d(3, stride=2, padding=1),
        nn.AdaptiveAvgPool1d(2),
    ]  # fmt: skip
    parts = with_head(parts, shape, 3)
    return Config(make_sequential(parts, shape, g), shape, 2, 1.5, True, True)


def cfg_conv2d_grouped(g):
    shape = (3, 6, 7)
    parts = [
        G(nn.Conv2d(3, 6, (3, 2), stride=(2, 1), padding=(1, 2), dilation=(1, 2), groups=3),
          5.0),
        nn.Sigmoid(),
        G(nn.Conv2d(6, 6, 3, padding=1, groups=6), 3.0), nn.ReLU(),  # depthwise
    ]  # fmt: skip
    parts = with_head(parts, shape, 4)
    return Config(make_sequential(parts, shape, g), shape, 2, 2.0, True, True)


def cfg_conv3d(g):
    shape = (2, 4, 5, 4)
    parts = [
        G(nn.Conv3d(2, 4, 2, stride=(1, 2, 1), padding=1, dilation=(2, 1, 1), groups=2), 3.0),
        nn.Hardtanh(),
    ]
    parts = with_head(parts, shape, 3)
    return Config(make_sequential(parts, shape, g), shape, 2, 1.0, True, True)


def cfg_conv_transpose1d(g):
    shape = (4, 5)
    parts = [
        G(nn.ConvTranspose1d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2,
                             dilation=2), 4.0),
        nn.Tanh(),
    ]  # fmt: skip
    parts = with_head(parts, shape, 3)
    return Config(make_sequential(parts, shape, g), shape, 2, 1.5, True, True)


def cfg_conv_transpose2d(g):
    shape = (2, 3, 4)
    parts = [
        G(nn.ConvTranspose2d(2, 4, (3, 2), stride=2, padding=(1, 0), groups=2), 12.0),
        nn.ReLU6(),
        nn.Conv2d(4, 3, 3),
    ]
    parts = with_head(parts, shape, 3)
    return Config(make_sequential(parts, shape, g), shape, 2, 1.5, True, False)


def cfg_conv_transpose3d(g):
    shape = (2, 2, 3, 2)
    parts = [
        G(nn.ConvTranspose3d(2, 2, 2, stride=(2, 1, 2), padding=(0, 1, 0)), 12.0),
        nn.SiLU(),
    ]
    parts = with_head(parts, shape, 3)
    return Config(make_sequential(parts, shape, g), shape, 2, 1.5, False, True)


def cfg_avg_pool2d(g):
    shape = (3, 7, 8)
    parts = [
        G(nn.Conv2d(3, 4, 3, padding=1), 2.0), nn.ReLU(),
        nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False),
        G(nn.Conv2d(4, 4, 1), 4.0), nn.Tanh(),
        nn.AvgPool2d(2, stride=(1, 2), padding=(1, 0)),
    ]  # fmt: skip
    parts = with_head(parts, shape, 3)
    return Config(make_sequential(parts, shape, g), shape, 2, 1.0, True, True)


def cfg_avg_pool3d(g):
    shape = (2, 5, 6, 4)
    parts = [
        G(nn.Conv3d(2, 3, (2, 3, 1), padding=(0, 1, 0)), 2.0), nn.Sigmoid(),
        nn.AvgPool3d(2, stride=(1, 2, 2)),
    ]  # fmt: skip
    parts = with_head(parts, shape, 3)
    return Config(make_sequential(parts, shape, g), shape, 2, 1.0)


def cfg_adaptive_avg_pool(g):
    shape = (2, 5, 7)
    parts = [
        G(nn.Conv2d(2, 4, 3, padding=1), 8.0), nn.Sigmoid(),
        nn.AdaptiveAvgPool2d((2, 3)),
        nn.Unflatten(1, (2, 2)),  # [B, 4, 2, 3] -> [B, 2, 2, 2, 3]
        nn.AdaptiveAvgPool3d((1, 2, 2)),
    ]  # fmt: skip
    parts = with_head(parts, shape, 3)
    return Config(make_sequential(parts, shape, g), shape, 2, 1.5, True, True)


def cfg_upsample_bilinear(g):
    shape = (2, 3, 4)
    parts = [
        G(nn.Conv2d(2, 3, 2), 4.0), nn.Tanh(),
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        G(nn.Conv2d(3, 2, 3, stride=2), 2.0), nn.ReLU(),
        nn.Upsample(size=(5, 4), mode="bilinear", align_corners=True),
    ]  # fmt: skip
    parts = with_head(parts, shape, 3)
    return Config(make_sequential(parts, shape, g), shape, 2, 1.5, True, True)


def cfg_mean_sum(g):
    shape = (3, 6, 5)
    parts = [
        G(nn.Conv2d(3, 5, 3, padding=1), 2.0), nn.GELU(),
        MeanDims((2, 3)),
        G(nn.Linear(5, 6), 25.0), nn.Sigmoid(),
        nn.Unflatten(1, (2, 3)),
        MeanDims((1,), op="sum"),
    ]  # fmt: skip
    return Config(make_sequential(parts, shape, g), shape, 3, 1.5, True, True)


def cfg_batchnorm(g):
    shape = (3, 5, 5)
    parts = [
        G(nn.Conv2d(3, 4, 3, bias=False), 2.0),
        G(nn.BatchNorm2d(4), 2.0), nn.ReLU(),
        nn.Flatten(),
        G(nn.Linear(36, 6), 2.0),
        G(nn.BatchNorm1d(6), 3.0), nn.Tanh(),
        nn.Linear(6, 3),
    ]  # fmt: skip
    return Config(make_sequential(parts, shape, g), shape, 3, 1.5, True, True)


def cfg_tokenwise_linear(g):
    shape = (5, 4)  # [T, F]: the Linear acts on the last dim of a 3-d input
    parts = [
        G(nn.Linear(4, 6), 4.0), nn.Tanh(),
        G(nn.Linear(6, 6, bias=False), 2.0), nn.ReLU(),
        MeanDims((1,)),
        nn.Linear(6, 3),
    ]  # fmt: skip
    return Config(make_sequential(parts, shape, g), shape, 2, 1.5, True, True)


def cfg_zero_denominator(g):
    parts = [nn.Linear(4, 5), nn.ReLU(), nn.Linear(5, 4)]
    model = make_sequential(parts, (4,), g)
    with torch.no_grad():  # output unit 1 has no contributions and no bias: all absorbed
        model[2].weight[1].zero_()
        model[2].bias[1] = 0.0
    return Config(model, (4,), 3, 1.0)


def _random_chain(index: int) -> Callable[[torch.Generator], Config]:
    def build(g: torch.Generator) -> Config:
        acts = [
            "relu", "relu6", ("hardtanh", -1.0, 1.0), ("hardtanh", -0.5, 1.5), "sigmoid",
            "hardsigmoid", "tanh", "silu", "gelu", "mish", "leaky_relu", "elu", "softplus",
            "identity",
        ]  # fmt: skip
        depth = int(torch.randint(2, 5, (), generator=g))
        width = int(torch.randint(3, 8, (), generator=g))
        n_in = width
        parts: list[nn.Module] = []
        for k in range(depth):
            last = k == depth - 1
            n_out = 3 if last else int(torch.randint(3, 9, (), generator=g))
            gain = float(torch.empty(()).uniform_(0.5, 8.0, generator=g))
            bias = bool(torch.rand((), generator=g) < 0.8)
            parts.append(G(nn.Linear(n_in, n_out, bias=bias), gain))
            act = acts[int(torch.randint(len(acts), (), generator=g))]
            if act != "identity":
                parts.append(activation_module(act))
            n_in = n_out
        return Config(make_sequential(parts, (width,), g), (width,), 3, 2.0)

    build.__name__ = f"cfg_random_chain_{index}"
    return build


CONFIGS = [
    cfg_mlp_tanh_sigmoid,
    cfg_mlp_relu_final_relu,
    cfg_mlp_hardtanh_relu6,
    cfg_mlp_lower_bounded,
    cfg_mlp_unbounded_acts,
    cfg_mlp_hardsigmoid_gelu_tanh,
    cfg_conv1d_grouped,
    cfg_conv2d_grouped,
    cfg_conv3d,
    cfg_conv_transpose1d,
    cfg_conv_transpose2d,
    cfg_conv_transpose3d,
    cfg_avg_pool2d,
    cfg_avg_pool3d,
    cfg_adaptive_avg_pool,
    cfg_upsample_bilinear,
    cfg_mean_sum,
    cfg_batchnorm,
    cfg_tokenwise_linear,
    cfg_zero_denominator,
    *[_random_chain(i) for i in range(4)],
]
IDS = [c.__name__.removeprefix("cfg_") for c in CONFIGS]


@dataclass
class Case:
    model: nn.Sequential
    x: torch.Tensor
    seed: torch.Tensor  # dense, signed
    config: Config

    @functools.cached_property
    def layers(self):
        return chain_from_sequential(self.model, self.config.sample_shape)

    @functools.cached_property
    def ref(self):
        return reference_chain(self.layers, self.x, self.seed)


@functools.cache
def make_case(index: int) -> Case:
    g = torch.Generator().manual_seed(1000 + index)
    cfg = CONFIGS[index](g)
    x = torch.randn(cfg.batch, *cfg.sample_shape, generator=g, dtype=DTYPE) * cfg.input_scale
    with torch.no_grad():
        y = cfg.model(x)
    seed = torch.randn(y.shape, generator=g, dtype=DTYPE)
    return Case(cfg.model, x, seed, cfg)


def close(got: torch.Tensor, want: torch.Tensor, what: str) -> None:
    assert isinstance(got, torch.Tensor), f"{what}: expected a tensor, got {type(got)}"
    assert got.shape == want.shape, f"{what}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    torch.testing.assert_close(
        got.detach().to(DTYPE), want, atol=ATOL, rtol=RTOL, msg=lambda m: f"{what}: {m}"
    )


def absorbed_values(exp) -> list[float]:
    assert isinstance(exp.absorbed, dict)
    return [float(v) for v in exp.absorbed.values()]


def check_absorbed(exp, per_layer: list[float], seed_total: float) -> None:
    got = absorbed_values(exp)
    want = sum(per_layer)
    assert abs(sum(got) - want) <= ATOL + RTOL * abs(want), (sum(got), want)
    # per node: the nonzero entries are the per-layer bias shares (one affine node per layer)
    tiny = 1e-12 * max(1.0, seed_total)
    got_nz = sorted(v for v in got if abs(v) > tiny)
    want_nz = sorted(v for v in per_layer if abs(v) > tiny)
    assert len(got_nz) == len(want_nz), (got_nz, want_nz)
    for a, b in zip(got_nz, want_nz, strict=True):
        assert abs(a - b) <= ATOL + RTOL * abs(b), (got_nz, want_nz)


# --------------------------------------------------------------------------------------------
# The reference itself (no engine): it must be a faithful chain of the model
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(CONFIGS)), ids=IDS)
def test_reference_chain_reproduces_model(index):
    case = make_case(index)
    ref = case.ref
    with torch.no_grad():
        y = case.model(case.x)
    torch.testing.assert_close(ref.output, y, atol=1e-12, rtol=1e-12)
    # conservation and contrast identities hold in the reference by construction of the rule
    seed_total = float(case.seed.abs().sum())
    total = float(ref.relevance.sum()) + sum(ref.absorbed)
    assert abs(total - seed_total) < 1e-10 * max(1.0, seed_total)
    assert (ref.relevance >= 0).all() and (ref.positive >= 0).all() and (ref.negative >= 0).all()
    explained = float((case.seed * y).sum())  # contrast mode explains seed ⊙ output
    scale = float((case.seed * y).abs().sum())
    got = float(ref.net.sum()) + sum(ref.absorbed_contrast)
    assert abs(got - explained) < 1e-10 * max(1.0, scale)
    # the configuration exercises what it claims to
    if case.config.expect_high:
        assert ref.saturated_high > 0, "no relevance-carrying neuron saturated high"
    if case.config.expect_low:
        assert ref.saturated_low > 0, "no relevance-carrying neuron saturated low"


# --------------------------------------------------------------------------------------------
# Engine vs reference
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("index", range(len(CONFIGS)), ids=IDS)
def test_default_mode_signed_seed(index):
    case = make_case(index)
    ref = case.ref

    exp = Backtrace(case.model, mode="default").explain(case.x, seed=case.seed)
    close(exp.relevance, ref.relevance, "default relevance")
    close(exp.total, ref.relevance, "default total")
    check_absorbed(exp, ref.absorbed, float(case.seed.abs().sum()))
    assert abs(float(exp.conservation_error)) < 1e-9


@pytest.mark.parametrize("index", range(len(CONFIGS)), ids=IDS)
def test_contrast_mode_signed_seed(index):
    case = make_case(index)
    ref = case.ref

    exp = Backtrace(case.model, mode="contrast").explain(case.x, seed=case.seed)
    close(exp.positive, ref.positive, "contrast positive")
    close(exp.negative, ref.negative, "contrast negative")
    close(exp.relevance, ref.net, "contrast net relevance")
    assert torch.equal(exp.positive - exp.negative, exp.relevance)
    assert torch.equal(exp.total, exp.positive + exp.negative)
    check_absorbed(exp, ref.absorbed_contrast, float((exp.seed).abs().sum()))
    assert abs(float(exp.conservation_error)) < 1e-9


@pytest.mark.parametrize("index", range(len(CONFIGS)), ids=IDS)
def test_default_target_seed(index):
    """No seed: one-hot at the argmax of each row ([B, C] outputs), times ``scale``."""
    case = make_case(index)
    with torch.no_grad():
        y = case.model(case.x)
    if y.dim() != 2:
        pytest.skip("default target seeds are for [B, C] outputs")
    layers = case.layers
    onehot = torch.zeros_like(y)
    onehot[torch.arange(y.shape[0]), y.argmax(dim=1)] = 1.0
    ref = reference_chain(layers, case.x, onehot)

    bt = Backtrace(case.model)
    exp = bt.explain(case.x)
    close(exp.relevance, ref.relevance, "default relevance, argmax target")
    assert abs(sum(absorbed_values(exp)) - sum(ref.absorbed)) < 1e-10

    exp_c = bt.explain(case.x, mode="contrast")
    close(exp_c.positive, ref.positive, "contrast positive, argmax target")
    close(exp_c.negative, ref.negative, "contrast negative, argmax target")
    close(exp_c.relevance, ref.net, "contrast net, argmax target")

    # an explicit target and a scale
    target = (int(y[0].argmin()) + 1) % y.shape[1]
    seed = torch.zeros_like(y)
    seed[:, target] = 2.5
    ref2 = reference_chain(layers, case.x, seed)
    exp2 = bt.explain(case.x, target=target, scale=2.5, mode="contrast")
    close(exp2.positive, ref2.positive, "contrast positive, explicit target")
    close(exp2.negative, ref2.negative, "contrast negative, explicit target")
    assert abs(sum(absorbed_values(exp2)) - sum(ref2.absorbed_contrast)) < 1e-9
