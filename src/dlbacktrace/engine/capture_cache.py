"""One capture per model and input signature, shared by every ``Backtrace`` of the model.

An export costs seconds (about 10 s for SmolLM2-135M), so captures are kept per model object
in a :class:`weakref.WeakKeyDictionary`: a second ``Backtrace(model)`` finds the first one's
graphs, and deleting the model frees them. A captured graph holds no weights of its own that
an explanation reads (parameters and buffers are read from the live model at record time,
:func:`dlbacktrace.engine.record.state_value`), so sharing it never serves stale weights.

Graphs exported with dynamic batch and sequence dimensions are found by their *dynamic
signature*: the input structure, each tensor's dtype, device and rank, the non-tensor
arguments, and the dtypes, devices and shapes of the model's parameters and buffers; the
sizes of a tensor's dimensions are then checked against the graph (static dims equal, symbolic
dims consistent and within the ranges export derived).
"""

from __future__ import annotations

import weakref
from typing import Any

import sympy
import torch
import torch.utils._pytree as pytree

from dlbacktrace.engine.capture import CapturedGraph

__all__ = ["bind_sizes", "captures_of", "clear_captures", "concrete_sizes", "find", "remember",
           "signature", "size_ones", "user_leaves"]

class _Entry:
    """A shared capture and the size-1 patterns it was checked to compute correctly."""

    def __init__(self, graph: CapturedGraph) -> None:
        self.graph = graph
        self.ones: set[frozenset[sympy.Symbol]] = {frozenset()}


_SHARED: weakref.WeakKeyDictionary[torch.nn.Module, dict[tuple, list[_Entry]]] = (
    weakref.WeakKeyDictionary()
)


def _state_signature(model: torch.nn.Module) -> tuple:
    """What of the model's state a graph depends on: the dtype, device and shape of each
    parameter and buffer (``model.double()`` or ``model.to(device)`` needs a new capture)."""
    named = list(model.named_parameters()) + list(model.named_buffers())
    return tuple((name, t.dtype, str(t.device), tuple(t.shape)) for name, t in named)


def signature(model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: bool) -> tuple:
    """The dynamic signature of a call: everything but the sizes of the input tensors.

    Parameters
    ----------
    model
        The module called.
    args
        Its positional inputs.
    kwargs
        Its keyword inputs.
    dynamic
        Whether captures for this call may have symbolic dimensions (an option that changes
        the graph).
    """
    leaves, spec = pytree.tree_flatten((args, kwargs))
    parts = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            parts.append(("tensor", leaf.dtype, str(leaf.device), leaf.dim()))
        else:
            parts.append(("const", repr(leaf)))
    return (str(spec), tuple(parts), dynamic, _state_signature(model))


def user_leaves(g: CapturedGraph, args: tuple, kwargs: dict) -> list[Any] | None:
    """The call's inputs in the order of the graph's user inputs, or None if they do not fit
    (export drops the non-tensor arguments it specialised on)."""
    leaves = pytree.tree_leaves((args, kwargs))
    if len(leaves) != len(g.user_inputs):
        leaves = [x for x in leaves if isinstance(x, torch.Tensor)]
    return leaves if len(leaves) == len(g.user_inputs) else None


def _example(node: Any) -> Any:
    return node.meta.get("val")


def bind_sizes(g: CapturedGraph, flat: list[Any]) -> dict[sympy.Symbol, int] | None:
    """The value of each symbolic size of ``g`` for these inputs, or None if ``g`` cannot take
    them (a static dim differs, a symbol gets two values, a size is outside export's range).

    Parameters
    ----------
    g
        A captured graph.
    flat
        The inputs in the order of ``g.user_inputs``.
    """
    bindings: dict[sympy.Symbol, int] = {}
    derived: list[tuple[sympy.Expr, int]] = []
    for node, value in zip(g.user_inputs, flat, strict=True):
        example = _example(node)
        if not isinstance(example, torch.Tensor):
            continue  # non-tensor arguments are part of the signature
        if not isinstance(value, torch.Tensor) or value.dim() != example.dim():
            return None
        for want, have in zip(example.shape, value.shape, strict=True):
            if isinstance(want, int):
                if want != have:
                    return None
                continue
            expr = want.node.expr
            if isinstance(expr, sympy.Symbol):
                if bindings.setdefault(expr, int(have)) != have:
                    return None
            else:
                derived.append((expr, int(have)))
    for symbol, have in bindings.items():
        bounds = g.program.range_constraints.get(symbol)
        if bounds is None or bool(bounds.lower <= have) and bool(have <= bounds.upper):
            continue
        if not (have == 1 and bool(bounds.lower == 2) and bool(have < bounds.upper)):
            return None  # size 1 below export's assumed minimum of 2: see size_ones
    values = {s: sympy.Integer(v) for s, v in bindings.items()}
    for expr, have in derived:
        got = expr.xreplace(values)
        if got.free_symbols or int(got) != have:
            return None
    return bindings


def size_ones(g: CapturedGraph, bindings: dict[sympy.Symbol, int]) -> frozenset[sympy.Symbol]:
    """The symbols bound to 1 that export assumed to be at least 2 (it specialises sizes 0 and
    1): whether the graph computes the model there must be checked (a model may branch on it).

    Parameters
    ----------
    g
        A captured graph.
    bindings
        Its sizes for a call, from :func:`bind_sizes`.
    """
    ranges = g.program.range_constraints
    return frozenset(s for s, v in bindings.items()
                     if v == 1 and s in ranges and bool(ranges[s].lower > 1))


def concrete_sizes(sizes: Any, bindings: dict[sympy.Symbol, int]) -> tuple[int, ...] | None:
    """Symbolic sizes or strides of an example value evaluated for bound sizes (None if some
    symbol is unbound).

    Parameters
    ----------
    sizes
        A shape or stride tuple, of ints and ``SymInt``.
    bindings
        Values of the symbols, from :func:`bind_sizes`.
    """
    values = {s: sympy.Integer(v) for s, v in bindings.items()}
    out = []
    for size in sizes:
        if isinstance(size, int):
            out.append(size)
            continue
        got = sympy.sympify(size.node.expr).xreplace(values)
        if got.free_symbols:
            return None
        out.append(int(got))
    return tuple(out)


def find(
    model: torch.nn.Module, key: tuple, args: tuple, kwargs: dict
) -> tuple[CapturedGraph | None, frozenset[sympy.Symbol]]:
    """A capture of ``model`` under dynamic signature ``key`` that takes these inputs, and the
    sizes of 1 it has not been checked at yet (empty when it can be used as it is).

    Parameters
    ----------
    model
        The captured module.
    key
        The call's :func:`signature`.
    args
        Its positional inputs.
    kwargs
        Its keyword inputs.
    """
    unchecked: tuple[CapturedGraph | None, frozenset[sympy.Symbol]] = (None, frozenset())
    for entry in _SHARED.get(model, {}).get(key, ()):
        flat = user_leaves(entry.graph, args, kwargs)
        bindings = None if flat is None else bind_sizes(entry.graph, flat)
        if bindings is None:
            continue
        ones = size_ones(entry.graph, bindings)
        if ones in entry.ones:
            return entry.graph, frozenset()
        if unchecked[0] is None:
            unchecked = (entry.graph, ones)
    return unchecked


def remember(
    model: torch.nn.Module, key: tuple, g: CapturedGraph,
    ones: frozenset[sympy.Symbol] = frozenset(),
) -> None:
    """Keep a capture of ``model`` for every ``Backtrace`` of it (or record that it was checked
    to compute the model with the sizes ``ones`` equal to 1).

    Parameters
    ----------
    model
        The captured module.
    key
        The dynamic signature it was captured for.
    g
        The capture.
    ones
        Symbols checked at size 1 (see :func:`size_ones`).
    """
    entries = _SHARED.setdefault(model, {}).setdefault(key, [])
    entry = next((e for e in entries if e.graph is g), None)
    if entry is None:
        entry = _Entry(g)
        entries.append(entry)
    entry.ones.add(ones)


def clear_captures(model: torch.nn.Module | None = None) -> None:
    """Forget the shared captures of ``model`` (None: of every model), e.g. after changing its
    structure or ``forward`` in place; weight updates need no new capture.

    Parameters
    ----------
    model
        The module whose captures to forget; None forgets all.
    """
    if model is None:
        _SHARED.clear()
    else:
        _SHARED.pop(model, None)


def captures_of(model: torch.nn.Module) -> list[CapturedGraph]:
    """Every shared capture of ``model`` (for inspection and tests).

    Parameters
    ----------
    model
        The captured module.
    """
    return [e.graph for entries in _SHARED.get(model, {}).values() for e in entries]
