"""Op contract: every op the registry treats as data movement or selection is an index map.

The movement and selection rules route relevance by the op's vector–Jacobian product, which is
only a conservative routing when the op is an index map: every output element is a copy of
exactly one input element (or a constant the op writes itself, like padding). An op that sums
or interpolates mixes several input elements into one output and needs an affine rule.

Each example call gets a tensor of distinct values (``randperm + 1``), so an output element's
source is identified by its value alone. Two checks per call:

- forward: every output element equals exactly one input element, or one of the constants the
  case declares as fills (never an input value);
- adjoint: the op's VJP against a random cotangent equals the scatter of that cotangent through
  the index map read off the values, so the relevance routing is the exact index-map adjoint
  (fills route nothing). This also catches a sum that happens to equal some input value.

A coverage test keeps the table honest: every registered movement/selection packet is either
in the table or in :data:`SKIPPED` with a reason, so a newly registered op cannot escape.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
import torch.utils._pytree as pytree

from dlbacktrace.engine.rules import movement, registry
from dlbacktrace.engine.rules.spec import Family

aten = torch.ops.aten


@dataclass(frozen=True)
class Case:
    """One example call: ``call(op, x)`` on a tensor ``x`` of ``shape`` with distinct values."""

    op: Any
    shape: tuple[int, ...]
    call: Callable[[Any, torch.Tensor], Any]
    label: str
    fills: tuple[float, ...] = ()  # constants the op itself writes (never an input value)
    vjp: bool = True  # autograd has no VJP (detach, copy): only the forward is checked
    defect: str | None = None  # a known contract violation (strict xfail)


def _idx(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


_MASK = torch.tensor([[True, False, True, False], [False, True, True, False], [True] * 4])


def _cases(op: Any, *specs: tuple) -> list[Case]:
    out = []
    for spec in specs:
        shape, call, label, *rest = spec
        extra = rest[0] if rest else {}
        out.append(Case(op, shape, call, label, **extra))
    return out


_ZERO = {"fills": (0.0,)}
_NO_VJP = {"vjp": False}

CASES: list[Case] = [
    # identity moves
    *_cases(aten.clone, ((5,), lambda op, x: op(x), "1d"),
            ((1, 2, 3, 2), lambda op, x: op(x, memory_format=torch.channels_last),
             "channels_last")),
    *_cases(aten.alias, ((2, 3), lambda op, x: op(x), "2d")),
    *_cases(aten.contiguous, ((3, 4), lambda op, x: op(x.t()), "transposed")),
    *_cases(aten._to_copy, ((2, 3), lambda op, x: op(x, dtype=torch.float64), "to_f64"),
            ((4,), lambda op, x: op(x), "same")),
    *_cases(aten.to, ((2, 3), lambda op, x: op(x, torch.float64), "dtype")),
    *_cases(aten.lift_fresh_copy, ((3, 2), lambda op, x: op(x), "2d")),
    *_cases(aten.detach, ((3, 2), lambda op, x: op(x), "2d", _NO_VJP)),
    # reshapes
    *_cases(aten.view, ((2, 6), lambda op, x: op(x, [3, 4]), "3x4"),
            ((2, 3, 2), lambda op, x: op(x, [-1]), "flat")),
    *_cases(aten._unsafe_view, ((2, 6), lambda op, x: op(x, [4, 3]), "4x3")),
    *_cases(aten.reshape, ((2, 3, 2), lambda op, x: op(x, [6, 2]), "6x2"),
            ((4, 3), lambda op, x: op(x.t(), [12]), "noncontig")),
    *_cases(aten.squeeze, ((1, 3, 1), lambda op, x: op(x), "all"),
            ((2, 1, 3), lambda op, x: op(x, 1), "dim")),
    *_cases(aten.unsqueeze, ((2, 3), lambda op, x: op(x, 1), "mid"),
            ((4,), lambda op, x: op(x, -1), "last")),
    *_cases(aten.flatten, ((2, 3, 2), lambda op, x: op(x, 1), "from1"),
            ((2, 2, 3), lambda op, x: op(x), "all")),
    *_cases(aten.unflatten, ((2, 6), lambda op, x: op(x, 1, [2, 3]), "split")),
    *_cases(aten.view_as, ((2, 6), lambda op, x: op(x, torch.empty(4, 3)), "4x3")),
    *_cases(aten._reshape_alias, ((2, 6), lambda op, x: op(x, [3, 4], [4, 1]), "3x4")),
    # permutations and broadcasting
    *_cases(aten.permute, ((2, 3, 4), lambda op, x: op(x, [2, 0, 1]), "201"),
            ((3, 2), lambda op, x: op(x, [1, 0]), "2d")),
    *_cases(aten.transpose, ((2, 3, 4), lambda op, x: op(x, 0, 2), "02"),
            ((3, 5), lambda op, x: op(x, -1, 0), "neg")),
    *_cases(aten.t, ((3, 4), lambda op, x: op(x), "2d"), ((5,), lambda op, x: op(x), "1d")),
    *_cases(aten.swapaxes, ((2, 3, 4), lambda op, x: op(x, 1, 2), "12")),
    *_cases(aten.expand, ((3, 1), lambda op, x: op(x, [3, 4]), "col"),
            ((4,), lambda op, x: op(x, [2, 3, 4]), "new_dims")),
    *_cases(aten.expand_as, ((1, 4), lambda op, x: op(x, torch.empty(3, 4)), "row")),
    *_cases(aten.broadcast_to, ((2, 1, 3), lambda op, x: op(x, [2, 4, 3]), "mid")),
    *_cases(aten.dropout, ((3, 4), lambda op, x: op(x, 0.5, False), "eval")),
    *_cases(aten.feature_dropout, ((2, 3, 4), lambda op, x: op(x, 0.5, False), "eval")),
    *_cases(aten.alpha_dropout, ((3, 4), lambda op, x: op(x, 0.5, False), "eval")),
    *_cases(aten.type_as, ((3, 2), lambda op, x: op(x, torch.empty(1, dtype=torch.float64)),
                           "to_f64")),
    # generic moves
    *_cases(aten.cat, ((4, 3), lambda op, x: op([x[:1], x[1:]], 0), "rows"),
            ((2, 6), lambda op, x: op([x[:, :2], x[:, 2:]], 1), "cols")),
    *_cases(aten.concat, ((3, 4), lambda op, x: op([x[:, 3:], x[:, :3]], -1), "swap")),
    *_cases(aten.stack, ((2, 6), lambda op, x: op([x[0], x[1]], 1), "dim1"),
            ((3, 2), lambda op, x: op(list(x.unbind(0)), 0), "dim0")),
    *_cases(aten.split, ((5, 2), lambda op, x: op(x, 2), "size2"),
            ((2, 6), lambda op, x: op(x, 4, 1), "dim1")),
    *_cases(aten.split_with_sizes, ((6, 2), lambda op, x: op(x, [1, 2, 3]), "123")),
    *_cases(aten.chunk, ((7, 2), lambda op, x: op(x, 3), "uneven"),
            ((2, 4), lambda op, x: op(x, 2, 1), "dim1")),
    *_cases(aten.unbind, ((3, 4), lambda op, x: op(x), "dim0"),
            ((2, 3), lambda op, x: op(x, 1), "dim1")),
    *_cases(aten.slice, ((6, 3), lambda op, x: op(x, 0, 1, 5, 2), "step"),
            ((3, 7), lambda op, x: op(x, 1, -3), "tail")),
    *_cases(aten.select, ((4, 3), lambda op, x: op(x, 0, 2), "row"),
            ((2, 3, 4), lambda op, x: op(x, 2, -1), "last")),
    *_cases(aten.index, ((5, 3), lambda op, x: op(x, [_idx(4, 0, 4)]), "repeat"),
            ((3, 5), lambda op, x: op(x, [None, _idx(1, 3)]), "cols"),
            ((3, 4), lambda op, x: op(x, [_MASK]), "bool")),
    *_cases(aten.index_select, ((4, 3), lambda op, x: op(x, 0, _idx(3, 1, 1)), "rows"),
            ((3, 4), lambda op, x: op(x, 1, _idx(2, 0)), "cols")),
    *_cases(aten.gather, ((3, 4), lambda op, x: op(x, 1, _idx(0, 3, 1, 1, 2, 0).view(3, 2)),
                          "dim1"),
            ((3, 2), lambda op, x: op(x, 0, _idx(2, 0, 1, 1).view(2, 2)), "dim0")),
    *_cases(aten.flip, ((3, 4), lambda op, x: op(x, [0, 1]), "both"),
            ((2, 3, 2), lambda op, x: op(x, [1]), "mid")),
    *_cases(aten.constant_pad_nd, ((2, 3), lambda op, x: op(x, [1, 2]), "zeros", _ZERO),
            ((2, 3, 3), lambda op, x: op(x, [1, 0, 0, 1], -0.5), "value", {"fills": (-0.5,)}),
            ((3, 4), lambda op, x: op(x, [-1, 1]), "crop", _ZERO)),
    *_cases(aten.pad, ((1, 2, 4), lambda op, x: op(x, [2, 1], "reflect"), "reflect"),
            ((1, 3, 3), lambda op, x: op(x, [1, 1, 1, 0], "replicate"), "replicate"),
            ((2, 3), lambda op, x: op(x, [1, 1], "constant", 0.25), "const",
             {"fills": (0.25,)}),
            ((1, 2, 3), lambda op, x: op(x, [2, 2], "circular"), "circular")),
    *_cases(aten.reflection_pad1d, ((2, 5), lambda op, x: op(x, [2, 3]), "2d"),
            ((1, 2, 4), lambda op, x: op(x, [1, 1]), "3d")),
    *_cases(aten.reflection_pad2d, ((1, 3, 4), lambda op, x: op(x, [1, 2, 2, 1]), "3d"),
            ((1, 1, 3, 3), lambda op, x: op(x, [1, 1, 1, 1]), "4d")),
    *_cases(aten.replication_pad1d, ((2, 3), lambda op, x: op(x, [2, 1]), "2d")),
    *_cases(aten.replication_pad2d, ((1, 2, 3), lambda op, x: op(x, [1, 0, 2, 1]), "3d"),
            ((1, 1, 2, 2), lambda op, x: op(x, [2, 2, 1, 1]), "4d")),
    *_cases(aten.narrow, ((5, 3), lambda op, x: op(x, 0, 1, 3), "rows"),
            ((2, 6), lambda op, x: op(x, 1, 4, 2), "cols")),
    *_cases(aten.roll, ((3, 4), lambda op, x: op(x, [1], [1]), "dim1"),
            ((2, 3), lambda op, x: op(x, [2]), "flat"),
            ((3, 4), lambda op, x: op(x, [-1, 2], [0, 1]), "both")),
    *_cases(aten.repeat, ((2, 3), lambda op, x: op(x, [2, 1]), "rows"),
            ((3,), lambda op, x: op(x, [2, 2]), "new_dim")),
    *_cases(aten.tile, ((2, 3), lambda op, x: op(x, [3]), "last"),
            ((2, 2), lambda op, x: op(x, [2, 1, 2]), "new_dim")),
    *_cases(aten.movedim, ((2, 3, 4), lambda op, x: op(x, 0, -1), "first_last"),
            ((2, 3, 4), lambda op, x: op(x, [0, 1], [2, 0]), "two")),
    *_cases(aten.diagonal, ((4, 4), lambda op, x: op(x), "main"),
            ((2, 3, 4), lambda op, x: op(x, 1, 1, 2), "offset")),
    *_cases(aten.take_along_dim, ((3, 4), lambda op, x: op(x, x.argsort(1)[:, :2], 1),
                                  "argsort"),
            ((2, 3), lambda op, x: op(x, _idx(5, 0, 3)), "flat")),
    *_cases(aten.repeat_interleave, ((2, 3), lambda op, x: op(x, 2, 0), "int"),
            ((2, 3), lambda op, x: op(x, _idx(1, 0, 3), 1), "tensor")),
    *_cases(aten.pixel_shuffle, ((1, 4, 2, 3), lambda op, x: op(x, 2), "r2"),
            ((2, 9, 1, 2), lambda op, x: op(x, 3), "r3")),
    *_cases(aten.pixel_unshuffle, ((1, 1, 4, 6), lambda op, x: op(x, 2), "r2"),
            ((2, 2, 2, 2), lambda op, x: op(x, 2), "batch")),
    *_cases(aten.channel_shuffle, ((1, 6, 2, 1), lambda op, x: op(x, 2), "g2"),
            ((2, 6, 1, 2), lambda op, x: op(x, 3), "g3")),
    *_cases(aten.upsample_nearest1d, ((1, 2, 3), lambda op, x: op(x, [7]), "size7"),
            ((2, 1, 4), lambda op, x: op(x, [2]), "down")),
    *_cases(aten.upsample_nearest2d, ((1, 2, 3, 4), lambda op, x: op(x, [5, 7]), "5x7"),
            ((1, 1, 2, 2), lambda op, x: op(x, None, [2.0, 3.0]), "scales")),
    *_cases(aten.upsample_nearest3d, ((1, 1, 2, 2, 3), lambda op, x: op(x, [3, 4, 2]), "3d")),
    *_cases(aten._upsample_nearest_exact1d, ((1, 2, 3), lambda op, x: op(x, [5]), "size5")),
    *_cases(aten._upsample_nearest_exact2d,
            ((1, 1, 3, 4), lambda op, x: op(x, [5, 6]), "5x6"),
            ((1, 2, 4, 4), lambda op, x: op(x, [2, 3]), "down")),
    *_cases(aten._upsample_nearest_exact3d,
            ((1, 1, 2, 3, 2), lambda op, x: op(x, [3, 4, 4]), "3d")),
    *_cases(aten.scatter,
            ((5, 3), lambda op, x: op(x[:3], 0, _idx(2, 0, 1, 1, 2, 0).view(2, 3), x[3:]),
             "src"),
            ((3, 4), lambda op, x: op(x, 1, _idx(0, 3, 2, 1, 1, 2).view(3, 2), 0.5), "value",
             {"fills": (0.5,)})),
    *_cases(aten.slice_scatter,
            ((5, 3), lambda op, x: op(x[:3], x[3:], 0, 1, 3), "rows"),
            ((3, 6), lambda op, x: op(x[:, :4], x[:, 4:], 1, 0, 4, 2), "step")),
    *_cases(aten.select_scatter, ((4, 3), lambda op, x: op(x[:3], x[3], 0, 1), "row"),
            ((3, 5), lambda op, x: op(x[:, :4], x[:, 4], 1, -1), "col")),
    *_cases(aten.unfold, ((7,), lambda op, x: op(x, 0, 3, 2), "overlap"),
            ((2, 6), lambda op, x: op(x, 1, 2, 2), "tiles")),
    *_cases(aten.im2col,
            ((1, 2, 3, 3), lambda op, x: op(x, [2, 2], [1, 1], [0, 0], [1, 1]), "valid"),
            ((1, 1, 3, 4), lambda op, x: op(x, [3, 3], [1, 1], [1, 1], [2, 2]), "padded",
             _ZERO)),
    *_cases(aten.as_strided, ((3, 4), lambda op, x: op(x, [3, 3], [4, 1], 1), "window"),
            ((8,), lambda op, x: op(x, [3, 3], [2, 1]), "overlap")),
    *_cases(aten.masked_scatter, ((6, 4), lambda op, x: op(x[:3], _MASK, x[3:]), "rows")),
    *_cases(aten.tril, ((4, 4), lambda op, x: op(x), "main", _ZERO),
            ((2, 3, 4), lambda op, x: op(x, 1), "batched", _ZERO)),
    *_cases(aten.triu, ((3, 5), lambda op, x: op(x, -1), "below", _ZERO),
            ((4, 4), lambda op, x: op(x), "main", _ZERO)),
    # aten.copy has no autograd formula (its rule, movement.copy, is written by hand)
    *_cases(aten.copy, ((4, 3), lambda op, x: op(x[:3], x[3:]), "broadcast", _NO_VJP),
            ((2, 6), lambda op, x: op(x[:, :3], x[:, 3:]), "same", _NO_VJP)),
    # selections
    *_cases(aten.max_pool1d, ((1, 2, 7), lambda op, x: op(x, [2], [2], [1]), "pad"),
            ((2, 1, 6), lambda op, x: op(x, [3], [1], [0], [2]), "dilated")),
    *_cases(aten.max_pool2d, ((1, 2, 4, 4), lambda op, x: op(x, [2, 2]), "2x2"),
            ((1, 1, 5, 5), lambda op, x: op(x, [3, 3], [2, 2], [1, 1], [1, 1], True), "ceil")),
    *_cases(aten.max_pool3d, ((1, 1, 4, 4, 4), lambda op, x: op(x, [2, 2, 2]), "2x2x2")),
    *_cases(aten.max_pool2d_with_indices,
            ((1, 2, 4, 5), lambda op, x: op(x, [2, 3], [1, 2]), "overlap")),
    *_cases(aten.max_pool3d_with_indices,
            ((1, 1, 3, 4, 4), lambda op, x: op(x, [2, 2, 2], [1, 2, 2], [1, 0, 0]), "pad")),
    *_cases(aten.adaptive_max_pool1d, ((1, 2, 7), lambda op, x: op(x, [3]), "3")),
    *_cases(aten.adaptive_max_pool2d, ((1, 2, 5, 4), lambda op, x: op(x, [2, 3]), "2x3")),
    *_cases(aten.adaptive_max_pool3d,
            ((1, 1, 4, 3, 5), lambda op, x: op(x, [2, 2, 2]), "2x2x2")),
    *_cases(aten.max, ((3, 4), lambda op, x: op(x), "all"),
            ((3, 4), lambda op, x: op(x, 1), "dim"),
            ((2, 6), lambda op, x: op(x[:, :3], x[:, 3:]), "other")),
    *_cases(aten.min, ((3, 4), lambda op, x: op(x), "all"),
            ((3, 4), lambda op, x: op(x, 0, True), "dim"),
            ((2, 6), lambda op, x: op(x[:, :3], x[:, 3:]), "other")),
    *_cases(aten.amax, ((3, 4), lambda op, x: op(x, [1]), "dim1"),
            ((2, 3, 4), lambda op, x: op(x, [0, 2], True), "two")),
    *_cases(aten.amin, ((3, 4), lambda op, x: op(x, [0]), "dim0"),
            ((2, 3, 2), lambda op, x: op(x), "all")),
    *_cases(aten.topk, ((3, 5), lambda op, x: op(x, 2), "k2"),
            ((4, 3), lambda op, x: op(x, 3, 0, False), "smallest")),
    *_cases(aten.sort, ((3, 4), lambda op, x: op(x), "last"),
            ((4, 3), lambda op, x: op(x, 0, True), "desc")),
    *_cases(aten.maximum, ((2, 6), lambda op, x: op(x[:, :3], x[:, 3:]), "data"),
            ((3, 4), lambda op, x: op(x, torch.tensor(5.5, dtype=x.dtype)), "const",
             {"fills": (5.5,)})),
    *_cases(aten.minimum, ((2, 6), lambda op, x: op(x[:, :3], x[:, 3:]), "data"),
            ((4, 3), lambda op, x: op(x, torch.tensor(6.5, dtype=x.dtype)), "const",
             {"fills": (6.5,)})),
    *_cases(aten.fmax, ((2, 6), lambda op, x: op(x[:, :3], x[:, 3:]), "data"),
            ((3, 2), lambda op, x: op(x[:1], x[1:]), "broadcast")),
    *_cases(aten.fmin, ((2, 6), lambda op, x: op(x[:, :3], x[:, 3:]), "data")),
    *_cases(aten.kthvalue, ((3, 5), lambda op, x: op(x, 2), "k2"),
            ((4, 3), lambda op, x: op(x, 4, 0, True), "dim0")),
    *_cases(aten.median, ((3, 4), lambda op, x: op(x), "all_even"),
            ((3, 5), lambda op, x: op(x, 1), "dim")),
    *_cases(aten.cummax, ((3, 4), lambda op, x: op(x, 1), "dim1"),
            ((5,), lambda op, x: op(x, 0), "1d")),
    *_cases(aten.cummin, ((3, 4), lambda op, x: op(x, 0), "dim0")),
]

# Registered movement/selection packets without a standalone example call (and why).
SKIPPED: dict[Any, str] = {
    getattr(aten, name): reason
    for name, reason in {
        "zero_pad2d": "not an ATen op in this torch build (kept for older exports)",
    }.items()
    if hasattr(aten, name)
}

_MOVEMENT_RULES = (
    movement.adjoint, movement.permute, movement.transpose, movement.expand,
    movement.reshape_like,
)


def _registered() -> set:
    """Every packet declared as data movement or selection, or routed by a movement rule."""
    return {
        op for op, spec in registry.specs().items()
        if spec.family in (Family.MOVEMENT, Family.SELECTION) or spec.rule in _MOVEMENT_RULES
    }


def test_every_movement_op_is_covered_or_skipped_with_a_reason():
    """A newly registered movement/selection op must join the table (or SKIPPED)."""
    covered = {c.op for c in CASES}
    registered = _registered()
    missing = sorted(str(p) for p in registered - covered - set(SKIPPED))
    assert not missing, f"movement/selection ops without an index-map contract case: {missing}"
    assert not covered & set(SKIPPED), "an op is both covered and skipped"
    stale = sorted(str(p) for p in (covered | set(SKIPPED)) - registered)
    assert not stale, f"table entries for ops no longer registered as movement: {stale}"
    assert all(reason.strip() for reason in SKIPPED.values())


def _distinct(shape: tuple[int, ...], dtype: torch.dtype, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    return (torch.randperm(n, generator=g).to(dtype) + 1).reshape(shape)


def _float_outputs(out: Any) -> list[torch.Tensor]:
    return [o for o in pytree.tree_leaves(out)
            if isinstance(o, torch.Tensor) and o.is_floating_point()]


def _params():
    for case in CASES:
        for dtype in (torch.float32, torch.float64):
            marks = [
                pytest.mark.xfail(strict=True, raises=AssertionError, reason=case.defect)
            ] if case.defect else []
            name = f"{case.op}-{case.label}-{str(dtype).removeprefix('torch.')}"
            yield pytest.param(case, dtype, id=name, marks=marks)


@pytest.mark.parametrize(("case", "dtype"), list(_params()))
def test_movement_op_is_an_index_map(case: Case, dtype: torch.dtype):
    """Every output element is one input element (or a declared fill); the VJP is its adjoint."""
    if case.op not in _registered():
        pytest.skip(f"{case.op} is no longer registered as movement (the coverage test says so)")
    x = _distinct(case.shape, dtype, seed=len(case.label) + sum(case.shape))
    x.requires_grad_(case.vjp)
    outs = _float_outputs(case.call(case.op, x))
    assert outs, "the example call produced no floating-point output"
    inputs = x.detach().reshape(-1).to(torch.float64)
    fills = torch.tensor(case.fills, dtype=torch.float64)
    assert not torch.isin(fills, inputs).any(), "a declared fill collides with an input value"
    sources, cotangents = [], []
    for k, out in enumerate(outs):
        values = out.detach().reshape(-1).to(torch.float64)
        match = values[:, None] == inputs[None, :]
        count = match.sum(1)
        is_fill = torch.isin(values, fills)
        mixed = values[(count != 1) & ~is_fill]
        assert mixed.numel() == 0, (
            f"output {k}: {mixed.numel()} element(s) equal no single input element and no "
            f"declared fill (e.g. {mixed[:4].tolist()}): the op mixes input elements"
        )
        sources.append(torch.where(count == 1, match.to(torch.long).argmax(1), -1))
        cotangents.append(torch.randn(values.shape, generator=torch.Generator().manual_seed(k),
                                      dtype=torch.float64))
    if not case.vjp:
        return
    live = [(o, s, c) for o, s, c in zip(outs, sources, cotangents, strict=True)
            if o.requires_grad]
    assert live, "no output is differentiable with respect to the input"
    expected = torch.zeros_like(inputs)
    for _, src, cot in live:
        keep = src >= 0
        expected.index_add_(0, src[keep], cot[keep])
    (got,) = torch.autograd.grad(
        [o for o, _, _ in live],
        [x],
        [c.view(o.shape).to(o.dtype) for o, _, c in live],
        allow_unused=True,
    )
    got = torch.zeros_like(x) if got is None else got
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(got.reshape(-1).to(torch.float64), expected, rtol=tol, atol=tol)
