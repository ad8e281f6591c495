"""Products of two data tensors (DESIGN.md 2.2): gates, broadcast scales, 50/50 splits,
normalising divisions and matrix products (attention ``A·V`` and ``Q·Kᵀ``)."""

from __future__ import annotations

from typing import Any

import torch

from dlbacktrace.engine.rules.affine import AffineMap, matrix_affine
from dlbacktrace.engine.rules.base import (
    Call,
    Contribution,
    safe_reciprocal,
    stabilised,
    streamed_grad,
    sum_to,
    total,
)


def _is_broadcast(small: torch.Tensor, big: torch.Tensor) -> bool:
    """``small`` has size 1 along a dim where ``big`` does not, and never the other way."""
    n = max(small.dim(), big.dim())
    s = (1,) * (n - small.dim()) + tuple(small.shape)
    b = (1,) * (n - big.dim()) + tuple(big.shape)
    smaller = any(si == 1 and bi != 1 for si, bi in zip(s, b, strict=True))
    larger = any(bi == 1 and si != 1 for si, bi in zip(s, b, strict=True))
    return smaller and not larger


def _to(call: Call, i: int, rho: torch.Tensor, result: Contribution) -> None:
    result.add(call.arg_node(i), sum_to(rho, call.args[i].shape))


def multiply_data(call: Call, R) -> Contribution:
    """``a·b``: a gate or a broadcast scale passes everything to the other operand."""
    a, b = call.args[0], call.args[1]
    result = Contribution()
    for keep, other in ((1, 0), (0, 1)):
        if call.is_gate(other) and not call.is_gate(keep):
            _to(call, keep, R, result)
            return result
    if _is_broadcast(a, b):
        _to(call, 1, R, result)
    elif _is_broadcast(b, a):
        _to(call, 0, R, result)
    else:
        half = R / 2
        _to(call, 0, half, result)
        _to(call, 1, half, result)
    return result


def divide_by_data(call: Call, R) -> Contribution:
    """``a / b`` with data ``b``: ``b`` is a normaliser; all relevance to ``a``."""
    result = Contribution()
    if call.is_data(0):
        _to(call, 0, R, result)
    else:
        result.absorbed = total(R)
    return result


def magnitude_share(
    call: Any, R: torch.Tensor, fn: Any, a: torch.Tensor, b: torch.Tensor,
    which: tuple[bool, bool],
) -> tuple[list, torch.Tensor]:
    """Split relevance of ``fn(a, b)`` (bilinear) over both operands by ``|a_i·b_j|``.

    Parameters
    ----------
    call
        The node's :class:`~dlbacktrace.engine.rules.base.Call`.
    R
        Relevance of the output (leading stream dimension).
    fn
        The bilinear function (matmul, bmm, einsum, ...), re-run on ``|a|`` and ``|b|``.
    a, b
        The two data operands.
    which
        Which operands get relevance.

    Returns
    -------
    Per-operand relevance for the operands flagged in ``which`` and the absorbed part (outputs
    whose contributions are all zero).
    """
    la = a.detach().abs().requires_grad_(True)
    lb = b.detach().abs().requires_grad_(True)
    with torch.enable_grad():
        A = fn(la, lb)
    G = R * safe_reciprocal(A.detach())
    dead = total(torch.where(A.detach() == 0, R, 0.0))
    leaves = [la, lb]
    grads = streamed_grad([A], leaves, [G])
    outs: list = [leaves[j].detach() * grads[j] if which[j] else None for j in (0, 1)]
    return outs, dead


def signed_ratio(
    R: torch.Tensor, out: torch.Tensor, eps: float, spare: torch.Tensor | None = None,
    own: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``G = R/(out + ε)``, the multiplier of a product's signed shares, and the stabiliser's
    part of the ledger (``Σ G·ε`` as rounded into the denominator).

    ``spare``: a buffer of ``out``'s shape to build the denominator in; ``own``: ``R`` is the
    caller's to overwrite with ``G`` (both spare a new buffer: L×S tensors are large).
    """
    den = stabilised(out, eps, out=spare)
    G = R.div_(den) if own else R / den
    step = den.sub_(out)
    one_stream = G.shape[0] == 1 and G.shape[1:] == step.shape and G.dtype == step.dtype
    return G, total(step.mul_(G[0]) if one_stream else G * step)


def signed_share(call, R, fn, a, b, out=None) -> tuple[list, torch.Tensor]:
    """Contrast mode's split of ``fn(a, b)`` (bilinear) over both operands by signed shares.

    Each operand receives ``Σ R·z/(out + ε)`` over the contributions ``z = a_i·b_j`` it takes
    part in: ``a ⊙ ∂⟨G, fn(a, b)⟩/∂a`` with ``G = R/(out + ε)`` (likewise ``b``). Returns the
    relevance of both operands and the stabiliser's share of one operand (absorbed). ``out``:
    the recorded output (None: the product recomputed here is the denominator).
    """
    la = a.detach().requires_grad_(True)
    lb = b.detach().requires_grad_(True)
    with torch.enable_grad():
        y = fn(la, lb)
    out = y.detach() if out is None else out.detach()
    G, absorbed = signed_ratio(R, out, call.options.epsilon)
    ga, gb = streamed_grad([y], [la, lb], [G])
    return [la.detach() * ga, lb.detach() * gb], absorbed


def matmul_of_data(call: Call, R) -> Contribution:
    """``a @ b`` with both operands data.

    If ``a`` is probability-like (attention weights) and attention="value", all relevance goes
    to ``b`` by the affine rule with ``a`` as weights. Otherwise it splits 50/50: each half is
    shared over its operand by the magnitude of the contributions ``|a_ts·b_sd|`` (contrast
    mode: by their signed shares). In contrast mode only attention probabilities (a softmax
    feeding the product) are split; other gates, such as routing weights, stay gates.
    """
    op = call.node.target
    a, b = call.args[0], call.args[1]
    result = Contribution()
    a_gate, b_gate = call.is_gate(0), call.is_gate(1)
    as_weights = call.options.attention == "value"
    if call.options.signed and not as_weights:
        as_weights = (a_gate and not call.is_attention_probs(0)) or (
            b_gate and not call.is_attention_probs(1)
        )
    if as_weights and (a_gate or b_gate):
        if a_gate:
            rho, absorbed = matrix_affine(call, R, b, AffineMap(lambda x, w: op(w, x), [a]))
            result.add(call.arg_node(1), rho)
        else:
            rho, absorbed = matrix_affine(call, R, a, AffineMap(lambda x, w: op(x, w), [b]))
            result.add(call.arg_node(0), rho)
        result.absorbed = absorbed
        return result
    half = R / 2
    if call.options.signed:
        outs, dead = signed_share(call, half, op, a, b, call.out)
    else:
        outs, dead = magnitude_share(call, half, op, a, b, (True, True))
    result.add(call.arg_node(0), outs[0].to(R.dtype))
    result.add(call.arg_node(1), outs[1].to(R.dtype))
    result.absorbed = 2 * dead
    return result


def bilinear_linear(call: Call, R) -> Contribution:
    """``linear(x, W)`` where the weight itself is data: a 50/50 magnitude split."""
    if call.arg(2, "bias") is not None:
        from dlbacktrace.engine.errors import RuleError

        raise RuleError(f"{call.node.target} with data weight and a bias is not supported")
    fn = torch.nn.functional.linear
    if call.options.signed:
        outs, dead = signed_share(call, R / 2, fn, call.args[0], call.args[1], call.out)
    else:
        outs, dead = magnitude_share(call, R / 2, fn, call.args[0], call.args[1], (True, True))
    result = Contribution(absorbed=2 * dead)
    result.add(call.arg_node(0), outs[0].to(R.dtype))
    result.add(call.arg_node(1), outs[1].to(R.dtype))
    return result
