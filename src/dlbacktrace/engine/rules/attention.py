"""Attention (DESIGN.md 2.2): ``scaled_dot_product_attention`` as one op, and the softmax rule.

The attention probabilities are recomputed exactly as the op computes them — scale, boolean
or additive mask, causal mask, grouped-query heads — and relevance goes to V by the affine
rule with A as weights (``attention="value"``), or half of it also through A to Q and K
(``attention="split"``). In contrast mode the part reaching A passes the softmax by the
first-order rule ``R_s = s ⊙ (R_A − A ⊙ Σ R_A)`` (:func:`softmax_relevance`), exactly as the
eager graph (matmul → softmax → matmul) is explained op by op, so both give the same maps.
"""

from __future__ import annotations

import math

import torch

from dlbacktrace.engine.errors import RuleError
from dlbacktrace.engine.rules.affine import AffineMap, matrix_affine
from dlbacktrace.engine.rules.base import (
    Call,
    Contribution,
    safe_reciprocal,
    stabilised,
    sum_to,
    total,
)
from dlbacktrace.engine.rules.movement import identity
from dlbacktrace.engine.rules.products import magnitude_share, signed_ratio


def softmax_relevance(R_A: torch.Tensor, A: torch.Tensor, logits: torch.Tensor, dim: int):
    """First-order (Taylor) softmax rule per row: ``logits ⊙ (R_A − A ⊙ Σ_k R_A,k)``.

    Positions with ``A == 0`` (masked, or underflowed) get exactly 0. Returns the relevance of
    the logits and what the rule does not pass on (absorbed, float64). Built in one buffer
    (attention tensors are large).
    """
    R_s = (A * R_A.sum(dim=dim, keepdim=True)).neg_().add_(R_A).mul_(logits)
    R_s = R_s.masked_fill_(A == 0, 0.0).to(R_A.dtype)
    return R_s, total(R_A) - total(R_s)


def softmax(call: Call, R) -> Contribution:
    """``softmax(x, dim)``: the Taylor rule for attention probabilities in contrast mode.

    Elsewhere (a standalone softmax, default mode) relevance passes unchanged (DESIGN.md 2.3).
    """
    if not (call.options.signed and call.node in call.attention_probs):
        return identity(call, R)
    x, dim = call.args[0], call.args[1]
    R_s, absorbed = softmax_relevance(R, call.out, x, dim % x.dim() + 1)
    result = Contribution(absorbed=absorbed)
    result.add(call.arg_node(0), R_s)
    return result


def _repeat_heads(t: torch.Tensor, heads: int) -> torch.Tensor:
    if t.dim() < 3 or t.shape[-3] == heads:
        return t
    return t.repeat_interleave(heads // t.shape[-3], dim=-3)


def _bias(mask, q, k, causal: bool) -> torch.Tensor | None:
    """Additive score bias of the op (``-inf`` where masked), or None."""
    L, S = q.shape[-2], k.shape[-2]
    bias = None
    if causal:
        keep = torch.ones(L, S, dtype=torch.bool, device=q.device).tril()
        bias = torch.zeros(L, S, dtype=q.dtype, device=q.device).masked_fill(~keep, -math.inf)
    if mask is not None:
        if mask.dtype == torch.bool:
            m = torch.zeros(mask.shape, dtype=q.dtype, device=q.device).masked_fill(
                ~mask, -math.inf
            )
        else:
            m = mask.to(q.dtype)
        bias = m if bias is None else bias + m
    return bias


def sdpa(call: Call, R) -> Contribution:
    q, k, v = call.args[:3]
    mask = call.arg(3, "attn_mask")
    dropout = call.arg(4, "dropout_p", 0.0)
    causal = bool(call.arg(5, "is_causal", False))
    scale = call.arg(6, "scale")
    if dropout:
        raise RuleError("scaled_dot_product_attention with dropout_p > 0 is not deterministic")
    if call.is_data(3):
        raise RuleError("scaled_dot_product_attention with a data-dependent attn_mask")
    heads = q.shape[-3] if q.dim() >= 3 else 1
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    bias = _bias(mask, q, k, causal)

    def scores_of(qq, kk):
        return (qq @ _repeat_heads(kk, heads).transpose(-2, -1)) * scale

    result = Contribution()
    if call.options.attention == "value":
        return _value_only(call, R, result, v, _probabilities(q, k, scale, bias, heads), heads)
    qk = q @ _repeat_heads(k, heads).transpose(-2, -1)
    if call.options.signed and call.options.attention == "split":
        full = qk.mul_(scale)  # Q·Kᵀ, the scores, then the logits, all in one buffer
        if bias is not None:
            fits = torch.broadcast_shapes(full.shape, bias.shape) == full.shape
            full = full.add_(bias) if fits else full + bias
        attn = torch.softmax(full, dim=-1).nan_to_num_(nan=0.0)  # fully masked rows: 0
        return _signed_split(call, R, result, q, k, v, attn, full, bias, heads, scale)
    scores = qk * scale
    full = scores if bias is None else scores + bias
    # fully masked rows: the op returns zeros or NaN
    attn = torch.softmax(full, dim=-1).nan_to_num_(nan=0.0)
    value_share = R / 2
    if call.is_data(2):
        amap = AffineMap(lambda x, w: w @ _repeat_heads(x, heads), [attn])
        rho_v, absorbed = matrix_affine(call, value_share, v, amap)
        result.add(call.arg_node(2), rho_v)
        result.absorbed = absorbed
    else:
        result.absorbed = total(value_share)

    # Split: the other half reaches A (share |A_ts·V_sd|), softmax passes it to the scores,
    # an additive bias absorbs its magnitude share, and Q·Kᵀ splits it 50/50.
    vr = _repeat_heads(v, heads).abs()
    half = R / 2
    D = attn @ vr
    rho_attn = attn * ((half * safe_reciprocal(D)) @ vr.transpose(-2, -1))
    absorbed = total(torch.where(D == 0, half, 0.0))
    if bias is not None:
        finite_bias = torch.where(torch.isfinite(bias), bias, torch.zeros_like(bias)).abs()
        share = scores.abs() * safe_reciprocal(scores.abs() + finite_bias)
        share = torch.where(scores.abs() + finite_bias == 0, torch.zeros_like(share), share)
        kept = rho_attn * share
        absorbed = absorbed + total(rho_attn - kept)
        rho_attn = kept
    # Each operand of Q·Kᵀ takes half of the scores' relevance.
    outs, dead = magnitude_share(call, rho_attn / 2, scores_of, q, k, (True, True))
    result.absorbed = result.absorbed + absorbed + 2 * dead
    for i, part in ((0, outs[0]), (1, outs[1])):
        if call.is_data(i):
            result.add(call.arg_node(i), sum_to(part.to(R.dtype), call.args[i].shape))
        else:
            result.absorbed = result.absorbed + total(part)
    return result


def _probabilities(q, k, scale, bias, heads) -> torch.Tensor:
    """The op's attention probabilities, built in place in one L×S buffer.

    Fully masked rows (all ``-inf``) come out as zeros, as the op's own output does.
    """
    attn = q @ _repeat_heads(k, heads).transpose(-2, -1)
    attn.mul_(scale)
    if bias is not None:
        attn.add_(bias)
    attn.sub_(attn.amax(dim=-1, keepdim=True)).exp_()
    attn.div_(attn.sum(dim=-1, keepdim=True))
    return attn.nan_to_num_(nan=0.0)


def _unrepeat_heads(t: torch.Tensor, kv_heads: int) -> torch.Tensor:
    """Adjoint of :func:`_repeat_heads`: sum the query heads that share a key/value head."""
    if t.dim() < 3 or t.shape[-3] == kv_heads:
        return t
    groups = t.shape[-3] // kv_heads
    return t.unflatten(-3, (kv_heads, groups)).sum(-3)


def _value_only(call, R, result, v, attn, heads) -> Contribution:
    """``attention="value"``: the affine rule on ``V`` with the probabilities as weights.

    The probabilities are non-negative, so they are their own magnitudes: the map on
    ``|V|`` and both transposes reuse the one probability buffer (no second L×S matrix).
    """
    if not call.is_data(2):
        result.absorbed = total(R)
        return result
    kv_heads = v.shape[-3] if v.dim() >= 3 else 1

    def apply(x, *_):
        return attn @ _repeat_heads(x, heads)

    def adjoint(g, *_):
        return _unrepeat_heads(attn.transpose(-2, -1) @ g, kv_heads)

    amap = AffineMap(forward=apply, weights=[], transpose=adjoint, abs_forward=apply,
                     abs_transpose=adjoint)
    rho_v, absorbed = matrix_affine(call, R, v, amap)
    result.add(call.arg_node(2), rho_v)
    result.absorbed = absorbed
    return result


def _signed_split(call, R, result, q, k, v, attn, full, bias, heads, scale) -> Contribution:
    """Contrast mode, ``attention="split"``: the same rules as the eager graph, op by op.

    ``O = A·V`` splits each contribution's signed share 50/50 between V and A; A's part passes
    the softmax rule to the logits ``QKᵀ·scale + mask`` (``full``); the mask (an additive
    constant) absorbs its signed share; the scale passes; ``Q·Kᵀ`` splits 50/50 by signed
    shares. Both products are bilinear, so each operand's share is closed-form:
    ``a ⊙ (G·bᵀ)`` and ``b ⊙ (aᵀ·G)`` with ``G = R/(out + ε)`` (no forward re-run, no autograd).

    The L×S steps work in place in one relevance buffer, the probabilities' and logits'
    buffers are reused once they have been read for the last time, and ``Q·Kᵀ`` and the scores
    are recomputed where they are needed rather than kept: at 512 tokens each L×S tensor is
    ~100 MB, so the rule holds three of them at a time instead of four (for one more
    batched product, two with a mask).
    """
    out = call.out
    eps = call.options.epsilon
    kv_heads = v.shape[-3] if v.dim() >= 3 else 1
    v_all = _repeat_heads(v, heads)
    G, eps_part = signed_ratio(R / 2, out, eps, own=True)
    absorbed = 2 * eps_part
    if call.is_data(2):
        rho_v = v * _unrepeat_heads(attn.transpose(-2, -1) @ G, kv_heads)
        result.add(call.arg_node(2), rho_v.to(R.dtype))
    else:
        absorbed = absorbed + total(v_all * (attn.transpose(-2, -1) @ G))
    # A's signed shares, then the softmax rule logits ⊙ (R_A − A·ΣR_A) in the same buffer. R_A
    # is ±0 wherever A is 0, so the only non-finite values are 0·(−inf) at masked logits: NaN,
    # which become the rule's 0 there.
    R_s = (G @ v_all.transpose(-2, -1)).mul_(attn)
    del G
    one_stream = (R_s.shape[0] == 1 and R_s.shape[1:] == attn.shape
                  and R_s.dtype == attn.dtype)  # then the probabilities' buffer takes A·ΣR_A
    before = total(R_s)
    row_sums = R_s.sum(dim=-1, keepdim=True)
    R_s.sub_(attn.mul_(row_sums[0]) if one_stream else attn * row_sums)
    R_s.mul_(full).nan_to_num_(nan=0.0, posinf=math.inf, neginf=-math.inf)
    absorbed = absorbed + before - total(R_s)
    k_all = _repeat_heads(k, heads)

    def products(into: torch.Tensor | None) -> torch.Tensor:  # Q·Kᵀ, as the forward computed it
        if into is None:
            return q @ k_all.transpose(-2, -1)
        return torch.matmul(q, k_all.transpose(-2, -1), out=into)

    spare = attn  # the probabilities are not read again
    # False only for a mask broadcast beyond the scores' shape
    same = full.shape == (*torch.broadcast_shapes(q.shape[:-2], k_all.shape[:-2]),
                          q.shape[-2], k_all.shape[-2])
    if bias is not None:  # the mask's signed share, as ``add(scores, mask)`` in the eager graph
        share = stabilised(full, eps, out=spare)  # the logits are not read again
        scores = products(full if same else None).mul_(scale)
        torch.div(scores, share, out=share)
        before = total(R_s)
        R_s.mul_(share)  # 0 stays 0: the share is finite (−0 at masked logits)
        absorbed = absorbed + before - total(R_s)
        qk = products(scores if same else None)
    else:
        qk = products(full if same else None)  # the scores are the logits: not read again
    # the scale passes; shares over the unscaled products Q·Kᵀ (as the eager graph's matmul)
    G, eps_part = signed_ratio(R_s.div_(2), qk, eps, spare=spare if same else None, own=True)
    absorbed = absorbed + 2 * eps_part
    rho_q = q * (G @ k_all)
    rho_k = k * _unrepeat_heads(G.transpose(-2, -1) @ q, k.shape[-3] if k.dim() >= 3 else 1)
    for i, part in ((0, rho_q), (1, rho_k)):
        if call.is_data(i):
            result.add(call.arg_node(i), sum_to(part.to(R.dtype), call.args[i].shape))
        else:
            absorbed = absorbed + total(part)
    result.absorbed = absorbed
    return result
