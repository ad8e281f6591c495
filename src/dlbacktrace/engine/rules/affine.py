"""The core DLBacktrace rule for ops affine in their data input (DESIGN.md 2.1).

Efficient form: the contribution matrix ``z_ji = w_ji·x_i`` is never built. With
``A = f(|x|; |w|)`` and ``S = f(x; w)`` (no bias), ``P = (A+S)/2`` and ``N = (A−S)/2``; per-output
coefficients ``p_j`` (for positive contributions) and ``n_j`` (for negative ones) are pushed back
with the op's transpose (its vector–Jacobian product):
``Σ_j (α_j·max(z_ji,0) + β_j·max(−z_ji,0)) = ½(|x| ⊙ f*_{|w|}(α+β) + x ⊙ f*_w(α−β))``.

Contrast mode (``options.signed``) shares one signed relevance by ``z_ji / (T_j + ε_j)``: where
no output is saturated that is ``ρ = x ⊙ f*_w(R ⊘ (T + ε))``, one signed transposed op; saturated
outputs keep their one-sided, non-negative shares (``α``/``β`` above, with ``R`` signed).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
import torch.nn.functional as F

from dlbacktrace.engine.errors import RuleError
from dlbacktrace.engine.rules.base import (
    Call,
    Contribution,
    SaturatedSites,
    keep_rows,
    nonnegative_,
    positive_,
    safe_reciprocal,
    stabilised,
    streamed_grad,
    sum_to,
    total,
    total_at,
)


@dataclass
class Coefficients:
    """Per-output shares: relevance per unit of positive (p) / negative (n) contribution.

    Unsaturated shares (``saturated`` False) are one tensor ``p = n``; ``absorbed`` is then
    already the node's ledger entry (bias shares and outputs with nothing to share).
    """

    p: torch.Tensor
    n: torch.Tensor
    dead: torch.Tensor | None  # 1 for outputs absorbed entirely (zero denominator), else 0
    saturated: bool  # whether the one-sided shares of saturated outputs are in use
    absorbed: torch.Tensor | None = None


def unsaturated_shares(
    R: torch.Tensor, A: torch.Tensor, bias: torch.Tensor | None, own: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``G = R ⊘ (Σ|z| + |b|)`` per stream and the node's absorbed relevance.

    Branch-free, in float arithmetic only and with one new buffer where it can (a boolean mask
    or a fresh allocation each cost several float passes on a CPU): an output with nothing to
    share (``D = 0``) gets ``G = 0`` through ``sign(D) = 0``, and its relevance is counted as
    absorbed, ``ΣR − Σ R·sign(D)`` (exactly 0 when no output is dead). ``own``: ``A`` is a
    fresh buffer of the output's shape that nothing else reads, so it may be overwritten.
    """
    if bias is not None:
        D = A.add_(bias.abs()) if own else A + bias.abs()
    else:
        D = A
    if R.shape[0] == 1 and R.shape[1:] == D.shape and R.dtype == D.dtype:
        kept = D.sign().mul_(R[0]).unsqueeze(0)  # one stream: one new buffer, which becomes G
    else:
        kept = R * D.sign()
    absorbed = total(R) - total(kept)
    tiny = torch.finfo(D.dtype).tiny
    G = kept.div_(D.clamp_min_(tiny) if own or bias is not None else D.clamp_min(tiny))
    if bias is not None:
        absorbed = absorbed + total(keep_rows(G, bias.shape) * bias.abs())
    return G, absorbed


def saturated_outputs(
    y: torch.Tensor, bounds: tuple[float | None, float | None]
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """0/1 indicators of the outputs above the high bound and below the low one (in float
    arithmetic, no boolean masks), None for a side without a bound."""
    low, high = bounds
    hi = positive_(y - high) if high is not None else None
    lo = positive_(torch.rsub(y, low)) if low is not None else None
    return hi, lo


def _nothing_to_share(d: torch.Tensor) -> torch.Tensor:
    """1 where the non-negative denominator ``d`` is 0, else 0."""
    return d.sign().neg_().add_(1.0)


def coefficients(
    T: torch.Tensor,
    y: torch.Tensor,
    A: torch.Tensor,
    S: torch.Tensor | None,
    bias: torch.Tensor | None,
    bounds: tuple[float | None, float | None],
) -> Coefficients:
    """Activation-aware shares of the rule of 2.1 (the sweep passes ``bounds`` only for nodes
    with a saturated output; :func:`unsaturated_shares` is the common case).

    ``A`` is Σ|z| (P+N), ``S`` is Σz (P−N), ``y`` the op's output (the pre-activation T_j of
    the formulas), ``T`` the total relevance per output.
    """
    if S is None:
        raise RuleError("internal: saturation needs the signed forward")
    D = A + bias.abs() if bias is not None else A
    hi, lo = saturated_outputs(y, bounds)
    P = (A + S).div_(2).clamp_min_(0)
    N = (A - S).div_(2).clamp_min_(0)
    bp = bias.clamp_min(0) if bias is not None else 0.0
    bn = (-bias).clamp_min(0) if bias is not None else 0.0
    r = safe_reciprocal(D)
    p, n, dead = r, r, _nothing_to_share(D)
    # 0/1 indicators select exactly: lerp(a, b, 1) = b, lerp(a, b, 0) = a, a − a·1 = 0
    if hi is not None:
        den = P + bp
        p = p.lerp(safe_reciprocal(den), hi)
        n = torch.addcmul(n, n, hi, value=-1)
        dead = dead.lerp(_nothing_to_share(den), hi)
    if lo is not None:
        den = N + bn
        p = torch.addcmul(p, p, lo, value=-1)
        n = n.lerp(safe_reciprocal(den), lo)
        dead = dead.lerp(_nothing_to_share(den), lo)
    return Coefficients(p=p, n=n, dead=dead, saturated=True)


def absorbed_by_bias(T: torch.Tensor, c: Coefficients, bias: torch.Tensor | None) -> torch.Tensor:
    """Relevance that the bias (and dead outputs) take: ``T·(p·b⁺ + n·b⁻)`` plus ``T`` if dead.

    Dead outputs have ``p = n = 0``, so the two parts never overlap.
    """
    out = total(T * c.dead)
    if bias is not None:
        share = c.p * bias.clamp_min(0) + c.n * (-bias).clamp_min(0)
        out = out + total(T * share)
    return out


@dataclass
class AffineMap:
    """``y = forward(x, *weights) + bias`` with ``forward`` linear in ``x``.

    ``transpose(g, *weights)`` is the op's transpose (its VJP in ``x``) when a closed form is
    cheaper than autograd; without it the transpose is taken by autograd. Transposes take
    streamed relevance ``g [S, *out]`` and return ``[S, *x.shape]``.
    """

    forward: Callable[..., torch.Tensor]
    weights: list[torch.Tensor]
    bias: torch.Tensor | None = None
    transpose: Callable[..., torch.Tensor] | None = None
    # The map with every weight replaced by its magnitude, on |x| (and its transpose), for
    # maps whose weights are not parameters (centring: |δ_ik − 1/n|). Without it the map is
    # run on |x| with ``|w|`` of each weight.
    abs_forward: Callable[..., torch.Tensor] | None = None
    abs_transpose: Callable[..., torch.Tensor] | None = None


def _autograd_transpose(fn, x: torch.Tensor, weights: list[torch.Tensor]):
    """Run ``fn`` once with graph recording; return (output, g -> VJP)."""
    leaf = x.requires_grad_(True)
    with torch.enable_grad():
        out = fn(leaf, *weights)

    def transpose(g: torch.Tensor) -> torch.Tensor:
        return streamed_grad([out], [leaf], [g], retain_graph=True)[0]

    return out.detach(), transpose


def matrix_affine(
    call: Call, R: torch.Tensor, x: torch.Tensor, amap: AffineMap
) -> tuple[torch.Tensor, torch.Tensor]:
    """Relevance of the data input ``x`` of an affine map (DESIGN.md 2.1, efficient form).

    Returns ``(rho [S, *x.shape], absorbed)``. One forward on ``|x|, |w|`` and one transposed
    op per needed stream; the signed transpose only for contrast or saturated outputs.
    """
    if call.options.signed:
        return signed_matrix_affine(call, R, x, amap)
    y = call.out
    bias = amap.bias
    xd = x.detach()
    absx = xd.abs()
    abs_w = [call.abs_of(w) for w in amap.weights]
    weights = [w.detach() for w in amap.weights]
    if amap.abs_forward is not None:
        A = amap.abs_forward(absx)
        S = y - bias if bias is not None else y
        t_abs = amap.abs_transpose

        def t_sgn(g):
            return amap.transpose(g, *weights)
    elif amap.transpose is not None:
        A = amap.forward(absx, *abs_w)
        S = None
        if call.saturation is not None:
            S = y - bias if bias is not None else y

        def t_abs(g):
            return amap.transpose(g, *abs_w)

        def t_sgn(g):
            return amap.transpose(g, *weights)
    else:
        A, t_abs = _autograd_transpose(amap.forward, absx.detach(), abs_w)
        S, t_sgn = None, None
        if call.saturation is not None:
            S, t_sgn = _autograd_transpose(amap.forward, xd.detach(), weights)
    # Closed-form transposes return fresh tensors; autograd may hand back views of its input.
    closed = amap.transpose is not None or amap.abs_forward is not None
    if call.saturation is None:
        # closed-form maps build A in a new buffer (the autograd one may alias |x| or be saved)
        own = closed and A.data_ptr() != absx.data_ptr()
        G, absorbed = unsaturated_shares(R, A, bias, own=own)
        pushed = t_abs(G)
        rho = pushed.mul_(absx) if closed else pushed * absx
        return rho.to(R.dtype), absorbed
    c = coefficients(R, y, A, S, bias, call.saturation)
    absorbed = absorbed_by_bias(R, c, bias)
    pushed = t_abs(R * (c.p + c.n) / 2)
    rho = pushed.mul_(absx) if closed else pushed * absx
    rho = rho + xd * t_sgn(R * (c.p - c.n) / 2)
    return rho.to(R.dtype), absorbed


def elementwise_affine(
    call: Call,
    R: torch.Tensor,
    terms: list[tuple[fx.Node, torch.Tensor, torch.Size]],
    bias: torch.Tensor | float | None,
    own_terms: bool = False,
) -> Contribution:
    """``y = Σ_k s_k + c`` where each data term ``s_k`` is elementwise in its input.

    ``terms`` are (input node, contribution tensor s_k, input shape); broadcasting is undone
    by summing each term's relevance back to its input's shape. Covers add/sub of data,
    adding or multiplying by constants, eval BatchNorm and the affine part of normalisations.
    ``own_terms``: the ``s_k`` are new buffers of the caller's that nothing else reads (they
    are then overwritten instead of copied).
    """
    y = call.out
    if bias is not None and not isinstance(bias, torch.Tensor):
        bias = torch.full((), float(bias), dtype=y.dtype, device=y.device)
    if call.options.signed:
        return signed_elementwise_affine(call, R, terms, bias)
    shape = y.shape
    if call.saturation is None:  # p == n: the shares are |s|/D
        magnitudes = [s.abs_() if own_terms else s.abs() for _, s, _ in terms]
        A = functools.reduce(torch.add, magnitudes)
        # several terms: their sum is a new buffer; one term: A is the magnitude, read below
        own = len(terms) > 1 and A.shape == shape
        G, absorbed = unsaturated_shares(R, A.expand(shape), bias, own=own)  # bias broadcasts
        result = Contribution(absorbed=absorbed)
        for (node, _, in_shape), magnitude in zip(terms, magnitudes, strict=True):
            if G.shape[0] == 1 and magnitude.shape == G.shape[1:]:
                rho = magnitude.mul_(G[0]).unsqueeze(0)  # one stream: in place, no copy
            else:
                rho = G * magnitude
            result.add(node, sum_to(rho.to(R.dtype), in_shape))
        return result
    A = functools.reduce(torch.add, [s.abs() for _, s, _ in terms]).expand(shape)
    S = functools.reduce(torch.add, [s for _, s, _ in terms]).expand(shape)
    c = coefficients(R, y, A, S, bias, call.saturation)
    result = Contribution(absorbed=absorbed_by_bias(R, c, bias))  # bias broadcasts
    for node, s, in_shape in terms:
        pos, neg = s.clamp_min(0), (-s).clamp_min(0)
        rho = R * (c.p * pos + c.n * neg)
        result.add(node, sum_to(rho.to(R.dtype), in_shape))
    return result


# ---- contrast mode: signed shares (DESIGN.md 2.1, revised) --------------------------------------


@dataclass
class SignedShares:
    """Per-output multipliers of the signed rule: ``ρ_i = Σ_j α_j z⁺_ji + β_j z⁻_ji``.

    Unsaturated outputs have ``α = G``, ``β = −G`` with ``G = R/(T + ε_j)`` (so the share is
    ``G·z``); saturated ones their one-sided non-negative shares. ``absorbed`` is the
    ledger entry of the node (bias, stabiliser and dead outputs), in float64.
    """

    G: torch.Tensor  # R/(T+ε), the multiplier of z where no output is saturated
    alpha: torch.Tensor | None  # None when nothing saturated carries relevance
    beta: torch.Tensor | None
    absorbed: torch.Tensor


# An output whose contributions cancel to rounding noise (|T| ≤ this × Σ|z|, e.g. ``x − max(x)``
# at the maximum) has no meaningful signed shares (they would be ±Σ|z|/ε): it is absorbed (as is
# an output with nothing to share, Σ|z| = 0).
CANCELLED = 64


def signed_shares(
    call: Call,
    R: torch.Tensor,
    y: torch.Tensor,
    bias: torch.Tensor | None,
    positive_negative: Callable[[], tuple[torch.Tensor, torch.Tensor]],
    magnitude: torch.Tensor | None = None,
    own_magnitude: bool = False,
) -> SignedShares:
    """Shares of streamed ``R`` (``[S, *y.shape]``; ``y`` is the pre-activation output ``T``).

    ``positive_negative()`` returns ``(P, N)`` and is called only for a node the sweep marks
    saturated (it costs a forward on ``|x|, |w|``). ``magnitude`` (``Σ|z| + |b|``, where it is
    cheap) lets outputs that cancel to rounding noise be absorbed whole; ``own_magnitude``: it
    is a buffer the rule may overwrite.
    """
    eps = call.options.epsilon
    den = stabilised(y, eps)
    G = R / den
    step = den.sub_(y)  # ε_j as rounded into den: the ledger then balances to the last bit
    if bias is not None:
        step = step.add_(bias)
    if R.shape[0] == 1 and R.shape[1:] == step.shape and R.dtype == step.dtype:
        absorbed_map = step.mul_(G[0]).unsqueeze(0)  # one stream: in the same buffer
    else:
        absorbed_map = G * step
    if magnitude is not None:  # in float arithmetic: 1 where |y| ≤ CANCELLED·eps·Σ|z|, else 0
        k = CANCELLED * torch.finfo(y.dtype).eps
        cut = (magnitude.mul_(k) if own_magnitude else magnitude * k).sub_(y.abs())
        cut = nonnegative_(cut).to(G.dtype)
        G = G.addcmul_(G, cut, value=-1)  # exactly G or 0
        absorbed_map = absorbed_map.lerp_(R, cut)  # exactly the map or R
    hi, lo = (None, None) if call.saturation is None else saturated_outputs(y, call.saturation)
    if hi is None and lo is None:
        return SignedShares(G=G, alpha=None, beta=None, absorbed=total(absorbed_map))
    b = bias if bias is not None else torch.zeros((), dtype=y.dtype, device=y.device)
    P, N = positive_negative()
    alpha, beta = G, -G
    # 0/1 indicators select exactly: lerp(a, b, 1) = b, lerp(a, b, 0) = a, a − a·1 = 0
    for high, mask, side, bside in ((True, hi, P, b.clamp_min(0)),
                                    (False, lo, N, (-b).clamp_min(0))):
        if mask is None:
            continue
        mask = mask.to(R.dtype)
        d = side + bside
        share = R * safe_reciprocal(d)
        if high:
            alpha, beta = alpha.lerp(share, mask), torch.addcmul(beta, beta, mask, value=-1)
        else:
            alpha, beta = torch.addcmul(alpha, alpha, mask, value=-1), beta.lerp(share, mask)
        # the bias share, or everything where there is nothing to share
        taken = torch.addcmul(share * bside, R, _nothing_to_share(d))
        absorbed_map = absorbed_map.lerp(taken, mask)
    return SignedShares(G=G, alpha=alpha, beta=beta, absorbed=total(absorbed_map))


def signed_matrix_affine(
    call: Call, R: torch.Tensor, x: torch.Tensor, amap: AffineMap
) -> tuple[torch.Tensor, torch.Tensor]:
    """Contrast mode's rule for a matrix-like affine map: ``ρ = x ⊙ f*_w(R ⊘ (T + ε))``.

    One signed transposed op for all streams; outputs saturated by the following activation (and
    carrying relevance) add the ``|x| ⊙ f*_{|w|}`` term of the efficient form.
    """
    y = call.out
    bias = amap.bias
    xd = x.detach()
    weights = [w.detach() for w in amap.weights]
    if amap.transpose is not None:

        def t_sgn(g):
            return amap.transpose(g, *weights)
    else:
        _, t_sgn = _autograd_transpose(amap.forward, xd.detach(), weights)

    magnitudes: dict[str, Any] = {}  # the |x|, |w| map, built once if saturation needs it

    def abs_map() -> dict[str, Any]:
        if not magnitudes:
            absx = xd.abs()
            magnitudes["absx"] = absx
            if amap.abs_forward is not None:
                magnitudes["A"] = amap.abs_forward(absx)
                magnitudes["t"] = amap.abs_transpose
            elif amap.transpose is not None:
                abs_w = [call.abs_of(w) for w in amap.weights]
                magnitudes["A"] = amap.forward(absx, *abs_w)
                magnitudes["t"] = lambda g: amap.transpose(g, *abs_w)
            else:
                abs_w = [call.abs_of(w) for w in amap.weights]
                magnitudes["A"], magnitudes["t"] = _autograd_transpose(
                    amap.forward, absx.detach(), abs_w
                )
        return magnitudes

    def positive_negative():
        A = abs_map()["A"]
        S = y - bias if bias is not None else y
        return ((A + S) / 2).clamp_min(0), ((A - S) / 2).clamp_min(0)

    sh = signed_shares(call, R, y, bias, positive_negative)
    if sh.alpha is None:  # a closed-form transpose returns a new buffer: scaled in place
        rho = t_sgn(sh.G).mul_(xd) if amap.transpose is not None else xd * t_sgn(sh.G)
    else:  # ½(|x| ⊙ f*_{|w|}(α+β) + x ⊙ f*_w(α−β)), G folded into α − β
        m = abs_map()
        rho = (m["absx"] * m["t"](sh.alpha + sh.beta) + xd * t_sgn(sh.alpha - sh.beta)) / 2
    return rho.to(R.dtype), sh.absorbed


def signed_elementwise_affine(
    call: Call,
    R: torch.Tensor,
    terms: list[tuple[fx.Node, torch.Tensor, torch.Size]],
    bias: torch.Tensor | None,
) -> Contribution:
    """Contrast mode's rule for ``y = Σ_k s_k + c`` (elementwise terms): shares ``s_k/(y+ε)``.

    A single term without a bias (a scale by a constant, a cast) passes relevance unchanged:
    its share is exactly 1 wherever the output is not zero.
    """
    y = call.out
    shape = y.shape
    if len(terms) == 1 and bias is None:  # R where y ≠ 0 (|sign y| = 1), absorbed where y = 0
        node, _, in_shape = terms[0]
        kept = R * y.sign().abs_()
        result = Contribution(absorbed=total(R) - total(kept))
        result.add(node, sum_to(kept, in_shape))
        return result

    def positive_negative():
        P = functools.reduce(torch.add, [s.clamp_min(0) for _, s, _ in terms]).expand(shape)
        N = functools.reduce(torch.add, [(-s).clamp_min(0) for _, s, _ in terms]).expand(shape)
        return P, N

    magnitude = functools.reduce(torch.add, [s.abs() for _, s, _ in terms])
    if bias is not None:
        fits = magnitude.shape == torch.broadcast_shapes(magnitude.shape, bias.shape)
        magnitude = magnitude.add_(bias.abs()) if fits else magnitude + bias.abs()
    full = magnitude.shape == shape  # a new buffer of the output's shape, read only by the rule
    sh = signed_shares(call, R, y, bias, positive_negative, magnitude.expand(shape),
                       own_magnitude=full)
    result = Contribution(absorbed=sh.absorbed)
    for node, s, in_shape in terms:
        if sh.alpha is None:
            rho = sh.G * s
        else:
            rho = sh.alpha * s.clamp_min(0) + sh.beta * (-s).clamp_min(0)
        result.add(node, sum_to(rho.to(R.dtype), in_shape))
    return result


# ---- a few saturated outputs, corrected at their sites -----------------------------------------


def _unused() -> tuple[torch.Tensor, torch.Tensor]:
    raise RuleError("internal: the unsaturated shares asked for the saturated form's P and N")


def site_corrected_linear(
    call: Call, R: torch.Tensor, x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None,
    sites: SaturatedSites,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``y = x·wᵀ + b`` whose few saturated outputs are corrected where they are (DESIGN.md 2.1).

    Every output first gets the unsaturated rule (one transposed product, as a node without
    saturation). At each saturated site ``(r, j)`` the contributions ``z = x_r ⊙ w_j`` are then
    formed explicitly (``m × in`` values for ``m`` sites) and the difference between the
    one-sided shares and the unsaturated ones is added to row ``r`` of the input relevance
    (segment sums over the ascending sites, deterministic on every device), and to the ledger.
    This replaces the saturated form's full-size ``|x|, |w|`` products where a handful of GELU
    outputs lie below its bound. ``bias`` is None or has one value per output.
    """
    y = call.out
    xd, wd = x.detach(), w.detach()
    out_features, in_features = wd.shape
    streams = R.shape[0]
    flat = sites.flat
    cols = flat % out_features
    z = xd.reshape(-1, in_features).index_select(0, flat // out_features)
    z = z.mul_(wd.index_select(0, cols))  # [m, in]: the sites' contributions
    y_s = y.reshape(-1).index_select(0, flat)
    R_s = R.reshape(streams, -1).index_select(1, flat)  # [S, m]
    b_s = bias.index_select(0, cols) if bias is not None else torch.zeros_like(y_s)
    bp, bn = b_s.clamp_min(0), (-b_s).clamp_min(0)
    d_hi, d_lo = z.clamp_min(0).sum(-1).add_(bp), (-z).clamp_min(0).sum(-1).add_(bn)
    zero = torch.zeros_like(y_s)
    hi, lo = saturated_outputs(y_s, call.saturation)
    hi = zero if hi is None else hi
    lo = zero if lo is None else lo
    # one-sided shares of each site: p for its positive contributions, n for its negative ones
    p = safe_reciprocal(d_hi).mul_(hi)
    n = safe_reciprocal(d_lo).mul_(lo)
    dead = _nothing_to_share(d_hi).mul_(hi).add_(_nothing_to_share(d_lo).mul_(lo))
    taken = R_s * (p * bp + n * bn + dead)  # bias shares, or all where nothing is shared
    if call.options.signed:
        plain = dataclasses.replace(call, saturation=None, saturated_sites=None)
        sh = signed_shares(plain, R, y, bias, positive_negative=_unused)
        rho = (sh.G @ wd).mul_(xd)
        G_s = sh.G.reshape(streams, -1).index_select(1, flat)
        step = stabilised(y_s, call.options.epsilon).sub_(y_s).add_(b_s)
        taken = taken - G_s * step  # what the unsaturated shares had put in the ledger there
        absorbed = sh.absorbed
        c_abs = R_s * (p + n) / 2
        c_sgn = R_s * (p - n) / 2 - G_s
    else:
        absx = xd.abs()
        abs_w = call.abs_of(w)
        A = F.linear(absx, abs_w)
        D_s = A.reshape(-1).index_select(0, flat).add_(b_s.abs())
        G, absorbed = unsaturated_shares(R, A, bias, own=True)
        rho = (G @ abs_w).mul_(absx)
        G_s = G.reshape(streams, -1).index_select(1, flat)
        taken = taken - (R_s - R_s * D_s.sign() + G_s * b_s.abs())
        c_abs = R_s * (p + n) / 2 - G_s
        c_sgn = R_s * (p - n) / 2
    # per site: c_abs·|z| + c_sgn·z, summed over the sites of each row
    change = c_abs.unsqueeze(-1) * z.abs() + c_sgn.unsqueeze(-1) * z  # [S, m, in]
    lengths = sites.counts.expand(streams, -1)
    per_row = torch.segment_reduce(change, "sum", lengths=lengths, axis=1)
    rho.reshape(streams, -1, in_features).index_add_(1, sites.rows, per_row)
    absorbed = absorbed + total_at(taken, flat, y.shape)
    return rho.to(R.dtype), absorbed
