"""What every rule sees (a recorded op call) and returns (relevance per data input + absorbed).

Relevance tensors carry a leading *stream* dimension: one stream per seed explained on the same
forward record (several targets of one input, every token of a generated text). Every rule is
linear in the relevance it receives and treats each stream alike, so the record, the ``|x|, |w|``
forwards and the shares are computed once and only the transposed ops run per stream.
Relevance is unsigned in default mode and signed in contrast mode (DESIGN.md 2.1);
``RuleOptions.signed`` tells the affine, product and softmax rules which rule set to apply.
"""

from __future__ import annotations

import contextlib
import contextvars
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
import torch.utils._pytree as pytree

# The LRP-ε stabiliser of contrast mode's signed shares ``z/(T + ε·sign(T))``, per relevance
# dtype: about 10x float32's machine epsilon, and correspondingly small in float64.
EPSILON = {torch.float64: 1e-12}
DEFAULT_EPSILON = 1e-6


def default_epsilon(dtype: torch.dtype) -> float:
    return EPSILON.get(dtype, DEFAULT_EPSILON)


@dataclass(frozen=True)
class RuleOptions:
    attention: str = "value"  # "value" or "split" (DESIGN.md 2.2)
    signed: bool = False  # contrast mode: signed shares (DESIGN.md 2.1)
    epsilon: float = DEFAULT_EPSILON  # stabiliser of the signed shares
    centring: bool = True  # layer/group norm: centring as an affine op (else identity)


def nonnegative_(t: torch.Tensor) -> torch.Tensor:
    """In place: 1 where ``t ≥ 0`` (either zero), 0 where ``t < 0``; four vectorised passes
    (a boolean mask, ``where`` or ``heaviside`` each cost several times that on a CPU)."""
    return t.sign_().add_(0.5).sign_().clamp_min_(0.0)


def positive_(t: torch.Tensor) -> torch.Tensor:
    """In place: 1 where ``t > 0``, 0 elsewhere (two vectorised passes, as
    :func:`nonnegative_`)."""
    return t.sign_().clamp_min_(0.0)


def stabilised(T: torch.Tensor, eps: float, out: torch.Tensor | None = None) -> torch.Tensor:
    """``T + ε·sign(T)`` with sign(±0) = +1: never zero, same sign as ``T``.

    Built in one buffer (``out``, when given, is overwritten instead of allocating one: the
    L×S attention tensors this is used on are ~100 MB at 512 tokens), in float arithmetic. ε
    enters as its float32 value, as it always has, so explanations stay bit-identical.
    """
    e = float(np.float32(eps))
    buf = T.sign() if out is None else torch.sign(T, out=out)
    return buf.add_(0.5).sign_().mul_(e).add_(T)  # sign(sign(T) + ½) = ±1, +1 at ±0


class AbsCache:
    """``|w|`` of parameters, reused across explanations until a parameter changes in place."""

    def __init__(self) -> None:
        self._store: dict[int, tuple[weakref.ref, int, torch.Tensor]] = {}

    def abs(self, t: torch.Tensor) -> torch.Tensor:
        if not isinstance(t, torch.nn.Parameter):
            return t.detach().abs()
        hit = self._store.get(id(t))
        if hit is not None and hit[0]() is t and hit[1] == t._version:
            return hit[2]
        if hit is not None:  # stale: freed before the new copy exists, never two at once
            del self._store[id(t)], hit
        value = t.detach().abs()
        self._store[id(t)] = (weakref.ref(t), t._version, value)
        return value


@dataclass(frozen=True)
class SaturatedSites:
    """The few saturated outputs of an affine node, found before the sweep (the sweep itself
    never reads device values back): their flat indices into the output, ascending, and the
    output rows (last dimension = features) that hold them, with how many sites each holds."""

    flat: torch.Tensor  # [m] int64, ascending
    rows: torch.Tensor  # [U] int64, the distinct rows of the sites, ascending
    counts: torch.Tensor  # [U] int64, sites per row (segment lengths of ``flat``)


@dataclass
class Call:
    """One recorded op call: its graph node, materialised arguments and output."""

    node: fx.Node
    args: tuple
    kwargs: dict
    out: Any
    data: set[fx.Node]
    gates: set[fx.Node]
    saturation: tuple[float | None, float | None] | None
    options: RuleOptions
    abs_cache: AbsCache | None = None
    # A constant bias applied by the following add (capture's ``bias_add``); ``out`` is then
    # that add's output, the pre-activation value of the fused affine op.
    bias_add: torch.Tensor | None = None
    # Attention probabilities: softmax outputs (and moves of them) that feed a product of two
    # data tensors; only these are split with the softmax rule (DESIGN.md 2.2).
    attention_probs: set[fx.Node] = field(default_factory=set)
    # With ``saturation``: its saturated outputs as sites, where they are few and the op's rule
    # declares ``saturated_sites`` (None: the rule uses its saturated form everywhere).
    saturated_sites: SaturatedSites | None = None

    def abs_of(self, t: torch.Tensor) -> torch.Tensor:
        return self.abs_cache.abs(t) if self.abs_cache is not None else t.detach().abs()

    def arg(self, i: int, name: str | None = None, default: Any = None) -> Any:
        if i < len(self.args):
            return self.args[i]
        if name is not None and name in self.kwargs:
            return self.kwargs[name]
        return default

    def arg_node(self, i: int) -> Any:
        return self.node.args[i] if i < len(self.node.args) else None

    def is_data(self, i: int) -> bool:
        a = self.arg_node(i)
        return isinstance(a, fx.Node) and a in self.data

    def is_gate(self, i: int) -> bool:
        a = self.arg_node(i)
        return isinstance(a, fx.Node) and a in self.gates

    def is_attention_probs(self, i: int) -> bool:
        a = self.arg_node(i)
        return isinstance(a, fx.Node) and a in self.attention_probs


@dataclass
class Contribution:
    """A rule's result: relevance for data inputs and the relevance it absorbed (a
    :func:`total` of streamed values)."""

    inputs: list[tuple[fx.Node, torch.Tensor]] = field(default_factory=list)
    absorbed: torch.Tensor | float = 0.0

    def add(self, node: fx.Node, rho: torch.Tensor) -> None:
        self.inputs.append((node, rho))


def sum_to(rho: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Sum a streamed relevance ``[S, *out]`` down to ``[S, *shape]`` (undo broadcasting)."""
    target = (rho.shape[0], *shape)
    if tuple(rho.shape) == target:
        return rho
    extra = rho.dim() - len(target)
    if extra > 0:
        rho = rho.sum(dim=tuple(range(1, 1 + extra)))
    return rho.sum_to_size(target)


def safe_reciprocal(d: torch.Tensor) -> torch.Tensor:
    """1/d where d != 0, else 0 (zero denominators mean the relevance is absorbed).

    In float arithmetic only, ``sign(d) / max(|d|, tiny)``: a boolean mask costs about five
    float passes on a CPU.
    """
    return d.sign().div_(d.abs().clamp_min_(torch.finfo(d.dtype).tiny))


# The (streams, batch rows) of the explanation being swept (set by the sweep for its duration):
# ledger sums are kept per stream and batch row. A ContextVar, so concurrent explanations never
# share it.
_ROWS: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar(
    "dlbacktrace_rows", default=None)


@contextlib.contextmanager
def ledger_rows(batch: int | None, streams: int = 1) -> Iterator[None]:
    """Within the block, :func:`total` returns ledger amounts per stream and batch row."""
    token = _ROWS.set(None if batch is None else (streams, batch))
    try:
        yield
    finally:
        _ROWS.reset(token)


def total(value: torch.Tensor) -> torch.Tensor:
    """Ledger sum of a streamed value ``[S, ...]``, in float64 (torch's pairwise sum keeps
    float32 rounding ~1e-7).

    Inside :func:`ledger_rows` the result is a vector of ``S·B + 1`` amounts: one per stream
    and batch row (stream-major) for values shaped ``[S, B, ...]``, and the last slot for any
    other value (amounts the sweep cannot attribute to one row). Vectors and scalars add up as
    usual.
    """
    layout = _ROWS.get()
    if layout is None:
        return value.sum().to(torch.float64)
    streams, rows = layout
    slots = streams * rows
    if rows == 0 or value.numel() == 0:
        return torch.zeros(slots + 1, dtype=torch.float64, device=value.device)
    if value.dim() > 1 and value.shape[0] == streams and value.shape[1] == rows:
        return F.pad(_summed(value.reshape(slots, -1), dim=1), (0, 1))
    return F.pad(_summed(value).reshape(1), (slots, 0))


def total_at(values: torch.Tensor, flat: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """:func:`total` of a streamed value of ``[S, *shape]`` that is zero but at the ascending
    flat positions ``flat``, where it is ``values [S, m]``. Row sums are segment sums in float64
    (deterministic on every device, unlike atomic scatters)."""
    layout = _ROWS.get()
    values = values.to(torch.float64)
    if layout is None:
        return values.sum()
    streams, rows = layout
    slots = streams * rows
    if rows == 0 or not (len(shape) > 0 and shape[0] == rows and values.shape[0] == streams):
        return F.pad(values.sum().reshape(1), (slots, 0))
    per_row = int(np.prod(shape[1:], dtype=np.int64))
    lengths = torch.bincount(flat // per_row, minlength=rows)
    sums = torch.segment_reduce(values, "sum", lengths=lengths.expand(streams, rows), axis=1)
    return F.pad(sums.reshape(slots), (0, 1))


# From this size on a float32 value is summed in float32 (torch's cascade sum, accurate to
# about 1e-7 of the summed magnitudes) and only the sums are cast: casting a whole 100 MB
# attention tensor to float64 cost more than the rule itself, and on a 1 MB activation the
# cast made the ledger sum 3-4x the cost of the float32 one.
_LARGE = 1 << 12


def _summed(value: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``value.sum(dim)`` as float64: exact float64 sums for small or float64 values, float32
    sums cast to float64 for large float32 ones."""
    if value.numel() < _LARGE or value.dtype == torch.float64:
        return value.sum(dim, dtype=torch.float64) if dim is not None else value.sum(
            dtype=torch.float64)
    return (value.sum(dim) if dim is not None else value.sum()).to(torch.float64)


def keep_rows(value: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """``value.sum_to_size([S, *shape])`` that keeps the stream and batch dimensions of a
    streamed ``value``."""
    target = [1] * (value.dim() - len(shape)) + list(shape)
    for dim in range(min(2, value.dim())):
        target[dim] = value.shape[dim]
    return value.sum_to_size(target)


def streamed_grad(
    outputs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor],
    grads: Sequence[torch.Tensor], retain_graph: bool = False,
) -> list[torch.Tensor]:
    """VJPs of ``outputs`` for streamed ``grads`` (``[S, *output]``): ``[S, *input]`` each.

    One stream is a plain backward; several run as one batched backward
    (``is_grads_batched``), never a loop over streams. Unused inputs get zeros.
    """
    streams = grads[0].shape[0]
    cast = [g.to(o.dtype) for o, g in zip(outputs, grads, strict=True)]
    with torch.enable_grad():
        if streams == 1:
            got = torch.autograd.grad(list(outputs), list(inputs), [g[0] for g in cast],
                                      retain_graph=retain_graph, allow_unused=True)
            got = [None if g is None else g.unsqueeze(0) for g in got]
        else:
            got = torch.autograd.grad(list(outputs), list(inputs), cast,
                                      retain_graph=retain_graph, allow_unused=True,
                                      is_grads_batched=True)
    return [
        torch.zeros((streams, *leaf.shape), dtype=leaf.dtype, device=leaf.device) if g is None
        else g
        for leaf, g in zip(inputs, got, strict=True)
    ]


def flat_args(call: Call) -> tuple[list[Any], list[Any], pytree.TreeSpec]:
    """Flattened (graph args, materialised args) of a call, plus the spec to rebuild them."""
    nodes, spec = pytree.tree_flatten((call.node.args, call.node.kwargs))
    values, _ = pytree.tree_flatten((call.args, call.kwargs))
    return nodes, values, spec


def vjp_contribution(call: Call, R: Any) -> Contribution:
    """Relevance by the op's vector–Jacobian product: the exact adjoint of an index map.

    Used for data movement (gather, flip, split, roll, …) and selection (max-pool, max,
    topk): the VJP sends each output element's relevance back to the element it came from.
    Whatever lands on no data input — elements that came from a constant operand or that the
    op itself created (padding, a masked triangle) — is absorbed.
    """
    nodes, values, spec = flat_args(call)
    dtype = _dtype(R)
    wrt: list[int] = []
    leaves = list(values)
    for i, (n, v) in enumerate(zip(nodes, values, strict=True)):
        if isinstance(v, torch.Tensor) and isinstance(n, fx.Node) and n in call.data:
            leaf = v.detach()
            if not leaf.is_floating_point():  # token ids on their way to an embedding
                leaf = leaf.to(dtype)
            leaves[i] = leaf.requires_grad_(True)
            wrt.append(i)
    with torch.enable_grad():
        args, kwargs = pytree.tree_unflatten(leaves, spec)
        out = call.node.target(*args, **kwargs)
    all_outs, all_grads = _pair_outputs(out, R)
    incoming = sum((total(g) for g in all_grads), torch.zeros((), dtype=torch.float64))
    pairs = [(o, g) for o, g in zip(all_outs, all_grads, strict=True) if o.requires_grad]
    outs, grads = [p[0] for p in pairs], [p[1] for p in pairs]
    result = Contribution()
    routed = torch.zeros((), dtype=torch.float64)
    if outs and wrt:
        got = streamed_grad(outs, [leaves[i] for i in wrt], grads)
        for i, rho in zip(wrt, got, strict=True):
            rho = rho.to(dtype)
            result.add(nodes[i], rho)
            routed = routed + total(rho)
    result.absorbed = incoming - routed
    return result


def _dtype(R: Any) -> torch.dtype:
    for r in R if isinstance(R, list) else [R]:
        if r is not None:
            return r.dtype
    return torch.float32


def _pair_outputs(out: Any, R: Any) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Match the op's (possibly tuple) outputs with the relevance that reached each of them."""
    if not isinstance(R, list):
        return [out], [R]
    outs = pytree.tree_leaves(out)
    pairs = [(o, r) for o, r in zip(outs, R, strict=False) if r is not None]
    return [p[0] for p in pairs], [p[1] for p in pairs]
