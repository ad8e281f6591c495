"""Data movement, selection, masking, embeddings and elementwise nonlinearities (DESIGN.md 2.3).

Movement and selection use the exact adjoint of the op's index map (its vector–Jacobian
product); the most frequent ones (reshapes, permutes, slice, select, index_select, cat,
constant padding) have closed-form adjoints, so the sweep never re-runs them.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.fx as fx

from dlbacktrace.engine.errors import RuleError
from dlbacktrace.engine.rules.base import Call, Contribution, sum_to, total, vjp_contribution

aten = torch.ops.aten


def _first_input(call: Call, rho: torch.Tensor) -> Contribution:
    result = Contribution()
    result.add(call.arg_node(0), rho)
    return result


def reshape_like(call: Call, R) -> Contribution:
    """view / reshape / squeeze / unsqueeze / flatten: same elements, new shape."""
    x = call.args[0]
    return _first_input(call, R.reshape(R.shape[0], *x.shape))


def identity(call: Call, R) -> Contribution:
    """Elementwise ops whose relevance passes unchanged (clone, casts, activations, …)."""
    x = call.args[0]
    others = [i for i in range(1, len(call.args)) if call.is_data(i)]
    if others:
        raise RuleError(
            f"{call.node.target} on node '{call.node.name}' has several data operands "
            f"(arguments 0 and {others}); its identity rule would drop relevance"
        )
    if R.shape[1:] != x.shape:
        return _first_input(call, sum_to(R, x.shape))
    return _first_input(call, R)


def type_as(call: Call, R) -> Contribution:
    """``type_as(x, other)``: the value is ``x``'s; ``other`` only lends its dtype."""
    return _first_input(call, R)


def dropout(call: Call, R) -> Contribution:
    train = call.arg(2, "train", False)
    if train:
        raise RuleError("dropout in training mode is random; explain the model in eval mode")
    return identity(call, R)


def permute(call: Call, R) -> Contribution:
    dims = list(call.args[1])
    ndim = len(dims)
    inverse = [0] * ndim
    for i, d in enumerate(dims):
        inverse[d % ndim] = i
    return _first_input(call, R.permute(0, *[i + 1 for i in inverse]))


def transpose(call: Call, R) -> Contribution:
    x = call.args[0]
    if len(call.args) < 3:  # aten.t
        return _first_input(call, R.transpose(1, 2) if x.dim() == 2 else R)
    d0, d1 = (d % x.dim() for d in call.args[1:3])
    return _first_input(call, R.transpose(d0 + 1, d1 + 1))


def expand(call: Call, R) -> Contribution:
    return _first_input(call, sum_to(R, call.args[0].shape))


def adjoint(call: Call, R) -> Contribution:
    """Generic exact adjoint (gather, flip, split, max, topk, …): the op's VJP."""
    return vjp_contribution(call, R)


# Closed-form adjoints of the most common index maps: the op's own backward kernel on the
# streamed relevance (stream dim first, so every op dim moves by one), no forward re-run.


def slice_adjoint(call: Call, R) -> Contribution:
    """``slice(x, dim, start, end, step)``: R back in place in a zero tensor."""
    x = call.args[0]
    dim = call.arg(1, "dim", 0) % x.dim()
    start = call.arg(2, "start")
    end = call.arg(3, "end")
    step = call.arg(4, "step", 1)
    rho = aten.slice_backward(R, [R.shape[0], *x.shape], dim + 1,
                              0 if start is None else start,
                              sys.maxsize if end is None else end, step)
    return _first_input(call, rho)


def select_adjoint(call: Call, R) -> Contribution:
    """``select(x, dim, index)``: R back at the selected index of a zero tensor."""
    x = call.args[0]
    dim = call.args[1] % x.dim()
    rho = aten.select_backward(R, [R.shape[0], *x.shape], dim + 1, call.args[2])
    return _first_input(call, rho)


def index_select_adjoint(call: Call, R) -> Contribution:
    """``index_select(x, dim, index)``: R added back at the picked indices (repeats add up)."""
    x = call.args[0]
    dim = call.args[1] % x.dim()
    rho = aten.index_select_backward(R, [R.shape[0], *x.shape], dim + 1, call.args[2])
    return _first_input(call, rho)


def cat_adjoint(call: Call, R) -> Contribution:
    """``cat(tensors, dim)``: each data operand gets its own block of R; constants absorb theirs.

    1-D empty operands are skipped by ``cat`` whatever ``dim`` is, and get nothing here.
    """
    tensors, nodes = call.args[0], call.node.args[0]
    dims = max(t.dim() for t in tensors)
    dim = call.arg(1, "dim", 0) % dims
    result = Contribution()
    absorbed = torch.zeros((), dtype=torch.float64, device=R.device)
    offset = 0
    for t, n in zip(tensors, nodes, strict=True):
        if t.dim() == 1 and t.numel() == 0 and dims > 1:
            continue
        size = t.shape[dim]
        part = R.narrow(dim + 1, offset, size)
        offset += size
        if isinstance(n, fx.Node) and n in call.data:
            result.add(n, part)
        else:
            absorbed = absorbed + total(part)
    result.absorbed = absorbed
    return result


def pad_adjoint(call: Call, R) -> Contribution:
    """``constant_pad_nd(x, pad, value)`` / ``pad(x, pad, "constant", value)``: R cropped back
    to ``x`` (a negative pad's crop is padded back with zeros); the padding's relevance is
    absorbed. Reflect, replicate and circular padding copy elements: their VJP routes them."""
    if call.node.target.overloadpacket is aten.pad and call.arg(2, "mode", "constant") != (
            "constant"):
        return vjp_contribution(call, R)
    pad = [-int(p) for p in call.args[1]]
    rho = aten.constant_pad_nd(R, pad, 0.0)
    result = _first_input(call, rho)
    result.absorbed = total(R) - total(rho)
    return result


# Spatial dims of the pooling ops that return (values, indices into each input plane).
_POOL_DIMS = {
    "max_pool2d_with_indices": 2, "max_pool3d_with_indices": 3,
    "adaptive_max_pool1d": 1, "adaptive_max_pool2d": 2, "adaptive_max_pool3d": 3,
}


def max_pool(call: Call, R) -> Contribution:
    """Max-pooling: each output's relevance goes to its arg-max, read off the recorded indices.

    The indices the forward returned say where every maximum came from (a flat position in
    its input plane), so no pooling is re-run: one ``scatter_add`` routes the relevance
    (overlapping windows that pick the same element add up, as the op's adjoint does).
    """
    indices = call.out[1]
    if not isinstance(R, list):
        R = [R]
    if any(r is not None for r in R[1:]):
        raise RuleError("relevance reached the indices output of a max-pool")
    R_out = R[0]
    x = call.args[0]
    lead = x.dim() - _POOL_DIMS[call.node.target.overloadpacket.__name__]
    streams = R_out.shape[0]
    batch = tuple(x.shape[:lead])
    rho = R_out.new_zeros((streams, *batch, math.prod(x.shape[lead:])))
    index = indices.reshape(*batch, -1).expand(streams, *batch, -1)
    rho.scatter_add_(-1, index, R_out.reshape(streams, *batch, -1))
    return _first_input(call, rho.reshape(streams, *x.shape))


def embedding(call: Call, R) -> Contribution:
    """``embedding(weight, ids)``: one relevance value per token position, summed over d."""
    if call.is_data(0):
        raise RuleError("embedding with a data-dependent weight matrix is not supported")
    result = Contribution()
    result.add(call.arg_node(1), R.sum(dim=-1))
    return result


def where(call: Call, R) -> Contribution:
    """``where(cond, a, b)``: each element's relevance goes to the branch that was taken."""
    cond = call.args[0]
    result = Contribution()
    absorbed = torch.zeros((), dtype=torch.float64)
    for i, taken in ((1, cond), (2, ~cond)):
        share = R * taken
        value = call.args[i] if i < len(call.args) else None
        if call.is_data(i):
            result.add(call.arg_node(i), sum_to(share, value.shape))
        else:
            absorbed = absorbed + total(share)
    result.absorbed = absorbed
    return result


def masked_fill(call: Call, R) -> Contribution:
    """``masked_fill(x, mask, value)``: filled positions' relevance is absorbed."""
    mask = call.args[1]
    if call.is_data(2):
        raise RuleError("masked_fill with a data-dependent fill value is not supported")
    kept = R * ~mask
    result = _first_input(call, sum_to(kept, call.args[0].shape))
    result.absorbed = total(R * mask)
    return result


def clamp_like(call: Call, R) -> Contribution:
    """``minimum``/``maximum`` (and fmin/fmax): one rule with clamp and hardtanh (DESIGN.md 2.3).

    Against a constant bound the element keeps its relevance wherever its value comes from
    (identity; the producer's activation awareness sees the bound as a saturation range).
    Between two data tensors the winner takes all (the op's exact adjoint).
    """
    data = [i for i in (0, 1) if call.is_data(i)]
    if len(data) == 2:
        return vjp_contribution(call, R)
    (i,) = data
    result = Contribution()
    result.add(call.arg_node(i), sum_to(R, call.args[i].shape))
    return result


def copy(call: Call, R) -> Contribution:
    """``copy(self, src)``: the result holds ``src``'s values (broadcast) in ``self``'s shape;
    ``self`` is overwritten and gets nothing, a constant ``src`` absorbs its relevance."""
    result = Contribution()
    if call.is_data(1):
        result.add(call.arg_node(1), sum_to(R, call.args[1].shape))
    else:
        result.absorbed = total(R)
    return result
