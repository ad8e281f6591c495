"""Slow float64 reference of the DLBacktrace affine rule, written straight from DESIGN.md 2.1.

Nothing here is efficient on purpose: for every sample the contribution matrix
``z_ji = W_ji·x_i`` is built explicitly, ``P``, ``N``, ``b⁺``, ``b⁻`` and ``T`` are formed
from it, and the per-output shares ``c⁺_ji`` / ``c⁻_ji`` (and the bias share) are written out
case by case (default, saturated high, saturated low, zero denominator). Contrast mode's signed
shares ``z_ji/(T_j + ε·sign(T_j))`` (with the one-sided shares of saturated outputs) are written
out the same way (:func:`signed_layer_shares`).

The model is a chain of affine layers, each an explicit weight matrix ``W [out, in]`` and bias
``b [out]`` acting on the flattened sample, followed by an optional elementwise activation.
Elementwise activations pass relevance unchanged (identity); their saturation range makes the
*producing* affine layer activation-aware.

Any affine op (convolution, pooling, interpolation, mean/sum, eval BatchNorm) becomes such a
layer through :func:`affine_from_fn`, which takes the Jacobian of the op at zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.autograd.functional import jacobian

DTYPE = torch.float64

# Activation spec: a name ("relu", "tanh", ...), ("hardtanh", min_val, max_val), or None.
Act = str | tuple | None


# --------------------------------------------------------------------------------------------
# Activations: saturation table of DESIGN.md 2.1 and forward functions
# --------------------------------------------------------------------------------------------


def saturation_range(act: Act) -> tuple[float | None, float | None]:
    """``(l, u)`` of the table in DESIGN.md 2.1; ``None`` where the side does not saturate."""
    if act is None:
        return (None, None)
    if isinstance(act, tuple):
        name, lo, hi = act
        assert name == "hardtanh", act
        return (float(lo), float(hi))
    table: dict[str, tuple[float | None, float | None]] = {
        "relu": (0.0, None),
        "relu6": (0.0, 6.0),
        "hardtanh": (-1.0, 1.0),
        "sigmoid": (-4.0, 4.0),
        "hardsigmoid": (-4.0, 4.0),
        "tanh": (-2.0, 2.0),
        "silu": (-6.0, None),
        "gelu": (-6.0, None),
        "gelu_tanh": (-6.0, None),
        "mish": (-6.0, None),
        "identity": (None, None),
        "leaky_relu": (None, None),
        "elu": (None, None),
        "softplus": (None, None),
    }
    return table[act]


def apply_activation(act: Act, t: torch.Tensor) -> torch.Tensor:
    """The forward of an activation spec (used to run the chain and to check it)."""
    if act is None or act == "identity":
        return t
    if isinstance(act, tuple):
        _, lo, hi = act
        return F.hardtanh(t, lo, hi)
    fns: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
        "relu": F.relu,
        "relu6": F.relu6,
        "hardtanh": F.hardtanh,
        "sigmoid": torch.sigmoid,
        "hardsigmoid": F.hardsigmoid,
        "tanh": torch.tanh,
        "silu": F.silu,
        "gelu": F.gelu,
        "gelu_tanh": lambda v: F.gelu(v, approximate="tanh"),
        "mish": F.mish,
        "leaky_relu": lambda v: F.leaky_relu(v, 0.1),
        "elu": F.elu,
        "softplus": F.softplus,
    }
    return fns[act](t)


def activation_module(act: Act) -> nn.Module:
    """The ``nn.Module`` matching an activation spec (same forward as :func:`apply_activation`)."""
    if act is None or act == "identity":
        return nn.Identity()
    if isinstance(act, tuple):
        _, lo, hi = act
        return nn.Hardtanh(lo, hi)
    mods: dict[str, Callable[[], nn.Module]] = {
        "relu": nn.ReLU,
        "relu6": nn.ReLU6,
        "hardtanh": nn.Hardtanh,
        "sigmoid": nn.Sigmoid,
        "hardsigmoid": nn.Hardsigmoid,
        "tanh": nn.Tanh,
        "silu": nn.SiLU,
        "gelu": nn.GELU,
        "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
        "mish": nn.Mish,
        "leaky_relu": lambda: nn.LeakyReLU(0.1),
        "elu": nn.ELU,
        "softplus": nn.Softplus,
    }
    return mods[act]()


def activation_spec(mod: nn.Module) -> Act:
    """Inverse of :func:`activation_module` for the modules used in the tests."""
    if isinstance(mod, nn.ReLU6):  # ReLU6 subclasses Hardtanh: test it first
        return "relu6"
    if isinstance(mod, nn.Hardtanh):
        return ("hardtanh", float(mod.min_val), float(mod.max_val))
    if isinstance(mod, nn.GELU):
        return "gelu_tanh" if mod.approximate == "tanh" else "gelu"
    if isinstance(mod, nn.LeakyReLU):
        assert mod.negative_slope == 0.1
        return "leaky_relu"
    if isinstance(mod, nn.Softplus):
        assert mod.beta == 1 and mod.threshold == 20
        return "softplus"
    if isinstance(mod, nn.ELU):
        assert mod.alpha == 1.0
        return "elu"
    names = {
        nn.ReLU: "relu",
        nn.Sigmoid: "sigmoid",
        nn.Hardsigmoid: "hardsigmoid",
        nn.Tanh: "tanh",
        nn.SiLU: "silu",
        nn.Mish: "mish",
        nn.Identity: "identity",
    }
    for cls, name in names.items():
        if type(mod) is cls:
            return name
    raise TypeError(f"not an activation used by the reference: {mod!r}")


# --------------------------------------------------------------------------------------------
# Affine layers
# --------------------------------------------------------------------------------------------


@dataclass
class AffineLayer:
    """``y = act(W·x + b)`` on flattened samples; ``out_shape`` is the per-sample output shape."""

    W: torch.Tensor  # [out, in]
    b: torch.Tensor  # [out]
    act: Act = None
    out_shape: tuple[int, ...] = ()
    name: str = ""

    def __post_init__(self) -> None:
        self.W = self.W.to(DTYPE)
        self.b = self.b.to(DTYPE)
        assert self.W.dim() == 2 and self.b.shape == (self.W.shape[0],)
        if not self.out_shape:
            self.out_shape = (self.W.shape[0],)


def affine_from_fn(
    fn: Callable[[torch.Tensor], torch.Tensor], in_shape: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """``(W, b, out_shape)`` of an op that is affine in its input, via its Jacobian at zero.

    ``in_shape`` is the per-sample shape; ``fn`` is called on a batch of one sample.
    """
    in_shape = tuple(int(s) for s in in_shape)
    n_in = 1
    for s in in_shape:
        n_in *= s

    def flat(v: torch.Tensor) -> torch.Tensor:
        return fn(v.reshape(1, *in_shape)).reshape(-1)

    zero = torch.zeros(n_in, dtype=DTYPE)
    with torch.no_grad():
        out = fn(zero.reshape(1, *in_shape))
    b = out.reshape(-1).clone()
    W = jacobian(flat, zero)
    assert W.shape == (b.numel(), n_in)
    return W.detach().clone(), b, tuple(out.shape[1:])


def affine_layer_from_module(
    module: Callable[[torch.Tensor], torch.Tensor],
    in_shape: Sequence[int],
    act: Act = None,
    name: str = "",
) -> AffineLayer:
    W, b, out_shape = affine_from_fn(module, in_shape)
    return AffineLayer(W=W, b=b, act=act, out_shape=out_shape, name=name)


# --------------------------------------------------------------------------------------------
# The rule of 2.1, one layer and one sample at a time
# --------------------------------------------------------------------------------------------


@dataclass
class LayerShares:
    """Everything the rule of 2.1 computes for one layer and one sample."""

    z: torch.Tensor  # [out, in] contributions W_ji·x_i
    P: torch.Tensor  # [out]
    N: torch.Tensor  # [out]
    b_pos: torch.Tensor  # [out]
    b_neg: torch.Tensor  # [out]
    T: torch.Tensor  # [out] pre-activation
    c_pos: torch.Tensor  # [out, in] share of R_j given to x_i as a positive contributor
    c_neg: torch.Tensor  # [out, in] share of R_j given to x_i as a negative contributor
    c_bias: torch.Tensor  # [out] share of R_j absorbed (bias, or everything if D = 0)
    high: torch.Tensor  # [out] bool, saturated high
    low: torch.Tensor  # [out] bool, saturated low


def layer_shares(W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, act: Act) -> LayerShares:
    """Shares ``c⁺``, ``c⁻`` and the bias share for ``y = W·x + b`` feeding ``act``."""
    z = W * x[None, :]  # z_ji = W_ji·x_i
    zp = z.clamp_min(0)  # max(z_ji, 0)
    zn = (-z).clamp_min(0)  # max(−z_ji, 0)
    P = zp.sum(dim=1)
    N = zn.sum(dim=1)
    b_pos = b.clamp_min(0)
    b_neg = (-b).clamp_min(0)
    T = P - N + b
    lo, hi = saturation_range(act)

    n_out, n_in = z.shape
    c_pos = torch.zeros(n_out, n_in, dtype=DTYPE)
    c_neg = torch.zeros(n_out, n_in, dtype=DTYPE)
    c_bias = torch.zeros(n_out, dtype=DTYPE)
    high = torch.zeros(n_out, dtype=torch.bool)
    low = torch.zeros(n_out, dtype=torch.bool)
    for j in range(n_out):
        if hi is not None and T[j] > hi:
            # saturated high: negative contributors get nothing
            high[j] = True
            den = P[j] + b_pos[j]
            c_pos[j] = zp[j] / den
            c_bias[j] = b_pos[j] / den
        elif lo is not None and T[j] < lo:
            # saturated low / inactive: positive contributors get nothing
            low[j] = True
            den = N[j] + b_neg[j]
            c_neg[j] = zn[j] / den
            c_bias[j] = b_neg[j] / den
        else:
            den = P[j] + N[j] + b[j].abs()
            if den == 0:
                c_bias[j] = 1.0  # all of R_j is absorbed
            else:
                c_pos[j] = zp[j] / den
                c_neg[j] = zn[j] / den
                c_bias[j] = b[j].abs() / den
    return LayerShares(z, P, N, b_pos, b_neg, T, c_pos, c_neg, c_bias, high, low)


def signed_layer_shares(
    W: torch.Tensor, b: torch.Tensor, x: torch.Tensor, act: Act, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrast mode (DESIGN.md 2.1, revised): signed shares ``c [out, in]`` and the absorbed
    share per output (bias and stabiliser, or everything when nothing can take it)."""
    z = W * x[None, :]
    zp = z.clamp_min(0)
    zn = (-z).clamp_min(0)
    P, N = zp.sum(dim=1), zn.sum(dim=1)
    T = z.sum(dim=1) + b
    lo, hi = saturation_range(act)
    n_out, n_in = z.shape
    c = torch.zeros(n_out, n_in, dtype=DTYPE)
    c_bias = torch.zeros(n_out, dtype=DTYPE)
    for j in range(n_out):
        if hi is not None and T[j] > hi:  # one-sided: positive contributors only
            den = P[j] + b[j].clamp_min(0)
            if den == 0:
                c_bias[j] = 1.0
            else:
                c[j] = zp[j] / den
                c_bias[j] = b[j].clamp_min(0) / den
        elif lo is not None and T[j] < lo:  # negative contributors only
            den = N[j] + (-b[j]).clamp_min(0)
            if den == 0:
                c_bias[j] = 1.0
            else:
                c[j] = zn[j] / den
                c_bias[j] = (-b[j]).clamp_min(0) / den
        else:
            eps_j = eps if T[j] >= 0 else -eps
            den = T[j] + eps_j
            c[j] = z[j] / den
            c_bias[j] = (b[j] + eps_j) / den
    return c, c_bias


@dataclass
class ReferenceResult:
    """Reference relevance of the chain input (shaped like the input batch)."""

    output: torch.Tensor  # model output
    relevance: torch.Tensor  # default mode (from |seed|)
    net: torch.Tensor  # contrast mode's signed relevance (from seed ⊙ output)
    absorbed: list[float]  # per layer, default mode
    absorbed_contrast: list[float]  # per layer, contrast mode (signed)
    saturated_high: int = 0  # outputs saturated high that carried relevance
    saturated_low: int = 0  # outputs saturated low that carried relevance
    shares: list[list[LayerShares]] = field(default_factory=list)  # [sample][layer]

    @property
    def positive(self) -> torch.Tensor:
        return self.net.clamp_min(0)

    @property
    def negative(self) -> torch.Tensor:
        return (-self.net).clamp_min(0)


def forward_chain(layers: Sequence[AffineLayer], x: torch.Tensor) -> list[torch.Tensor]:
    """Per-sample flattened activations ``[a_0, a_1, …, a_L]`` of the chain (batch kept)."""
    a = x.to(DTYPE).reshape(x.shape[0], -1)
    acts = [a]
    for layer in layers:
        t = a @ layer.W.T + layer.b
        a = apply_activation(layer.act, t)
        acts.append(a)
    return acts


def reference_chain(
    layers: Sequence[AffineLayer], x: torch.Tensor, seed: torch.Tensor, eps: float = 1e-12
) -> ReferenceResult:
    """Default and contrast relevance of ``x`` for the chain, from a (possibly signed) seed.

    Default mode starts from ``|seed|``; contrast mode from ``seed ⊙ output`` (it explains the
    value of the selected outputs) and shares it by signed shares with stabiliser ``eps``.
    """
    B = x.shape[0]
    acts = forward_chain(layers, x)
    out = acts[-1].reshape(B, *layers[-1].out_shape)
    assert seed.shape == out.shape, (seed.shape, out.shape)
    seed = seed.to(DTYPE).reshape(B, -1)

    out_flat = acts[-1].reshape(B, -1)
    rel = torch.zeros_like(acts[0])
    net = torch.zeros_like(acts[0])
    absorbed = [0.0] * len(layers)
    absorbed_c = [0.0] * len(layers)
    n_high = n_low = 0
    all_shares: list[list[LayerShares]] = []
    for s in range(B):
        R = seed[s].abs()
        Rc = seed[s] * out_flat[s]
        sample_shares: list[LayerShares] = [None] * len(layers)  # type: ignore[list-item]
        for k in range(len(layers) - 1, -1, -1):
            layer = layers[k]
            # the activation after layer k is elementwise: relevance passes unchanged
            sh = layer_shares(layer.W, layer.b, acts[k][s], layer.act)
            sample_shares[k] = sh
            n_high += int((sh.high & (R > 0)).sum())
            n_low += int((sh.low & (R > 0)).sum())
            # default: ρ_i = Σ_j R_j (c⁺_ji + c⁻_ji)
            R_new = (R[:, None] * (sh.c_pos + sh.c_neg)).sum(dim=0)
            absorbed[k] += float((R * sh.c_bias).sum())
            # contrast: ρ_i = Σ_j R_j c_ji with signed shares
            c, c_bias = signed_layer_shares(layer.W, layer.b, acts[k][s], layer.act, eps)
            Rc_new = (Rc[:, None] * c).sum(dim=0)
            absorbed_c[k] += float((Rc * c_bias).sum())
            R, Rc = R_new, Rc_new
        rel[s], net[s] = R, Rc
        all_shares.append(sample_shares)
    shape = x.shape
    return ReferenceResult(
        output=out,
        relevance=rel.reshape(shape),
        net=net.reshape(shape),
        absorbed=absorbed,
        absorbed_contrast=absorbed_c,
        saturated_high=n_high,
        saturated_low=n_low,
        shares=all_shares,
    )


# --------------------------------------------------------------------------------------------
# nn.Sequential -> chain of explicit affine layers
# --------------------------------------------------------------------------------------------


class MeanDims(nn.Module):
    """``x.mean(dims)`` (or ``x.sum(dims)``) as a module, for building chains."""

    def __init__(self, dims: tuple[int, ...], keepdim: bool = False, op: str = "mean"):
        super().__init__()
        self.dims = dims
        self.keepdim = keepdim
        self.op = op

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.op == "mean":
            return x.mean(dim=self.dims, keepdim=self.keepdim)
        return x.sum(dim=self.dims, keepdim=self.keepdim)


ACTIVATION_TYPES = (
    nn.ReLU,
    nn.ReLU6,
    nn.Hardtanh,
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Tanh,
    nn.SiLU,
    nn.GELU,
    nn.Mish,
    nn.LeakyReLU,
    nn.ELU,
    nn.Softplus,
    nn.Identity,
)

RESHAPE_TYPES = (nn.Flatten, nn.Unflatten)


def chain_from_sequential(model: nn.Sequential, sample_shape: Sequence[int]) -> list[AffineLayer]:
    """Explicit affine layers of a ``Sequential`` of affine ops, activations and reshapes.

    Every affine module becomes one layer (its Jacobian); an activation directly after it
    becomes that layer's ``act``. Reshapes (Flatten/Unflatten) are no-ops on flattened samples.
    """
    layers: list[AffineLayer] = []
    shape = tuple(sample_shape)
    mods = list(model)
    i = 0
    while i < len(mods):
        m = mods[i]
        if isinstance(m, RESHAPE_TYPES):
            with torch.no_grad():
                shape = tuple(m(torch.zeros(1, *shape, dtype=DTYPE)).shape[1:])
            i += 1
            continue
        if isinstance(m, ACTIVATION_TYPES):
            raise ValueError(f"activation {m!r} at position {i} does not follow an affine op")
        act: Act = None
        if i + 1 < len(mods) and isinstance(mods[i + 1], ACTIVATION_TYPES):
            act = activation_spec(mods[i + 1])
            if act == "identity":
                act = None
        layer = affine_layer_from_module(m, shape, act=act, name=f"{i}:{type(m).__name__}")
        layers.append(layer)
        shape = layer.out_shape
        i += 2 if i + 1 < len(mods) and isinstance(mods[i + 1], ACTIVATION_TYPES) else 1
    return layers
