"""Run the captured graph once, keeping exactly the values the relevance rules will need."""

from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch.export.graph_signature import InputKind

from dlbacktrace.engine.capture import CapturedGraph


def state_value(g: CapturedGraph, model: torch.nn.Module, node: fx.Node) -> Any:
    """Parameters and buffers are read from the live model on every call (by their dotted
    path, so weight updates and replaced submodules are seen)."""
    kind, target = g.state_targets[node]
    if kind in (InputKind.PARAMETER, InputKind.BUFFER):
        value: Any = model
        for part in target.split("."):  # what get_parameter does, without its checks
            value = getattr(value, part)
        return value
    if kind == InputKind.TOKEN:
        return torch.tensor([])
    return g.program.constants[target]


# Per graph: the index of the last node that reads each value (the graph never changes).
_LAST_USE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _last_use(g: CapturedGraph) -> dict[fx.Node, int]:
    found = _LAST_USE.get(g.graph)
    if found is None:
        found = {}
        for i, node in enumerate(g.nodes):
            for inp in node.all_input_nodes:
                found[inp] = i
        _LAST_USE[g.graph] = found
    return found


# Half-precision models are explained with float32 arithmetic (DESIGN.md 4): the graph is re-run
# with every half/bfloat16 tensor and dtype argument in float32.
HALF = (torch.float16, torch.bfloat16)


def _upcast(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in HALF:
        return value.float()
    if isinstance(value, torch.dtype) and value in HALF:
        return torch.float32
    return value


def needs_upcast(g: CapturedGraph, model: torch.nn.Module, flat_inputs: list[Any]) -> bool:
    """Whether any input, parameter or buffer of the graph is float16/bfloat16."""
    values = list(flat_inputs) + [state_value(g, model, n) for n in g.state_targets]
    return any(isinstance(v, torch.Tensor) and v.dtype in HALF for v in values)


def needed_values(relevant: list[fx.Node]) -> set[fx.Node]:
    """Values the sweep reads: relevant nodes' outputs and all their inputs."""
    keep: set[fx.Node] = set(relevant)
    for node in relevant:
        keep.update(node.all_input_nodes)
    return keep


def record(
    g: CapturedGraph,
    model: torch.nn.Module,
    flat_inputs: list[Any],
    keep: set[fx.Node],
    upcast: bool = False,
) -> tuple[dict[fx.Node, Any], list[Any]]:
    """Execute the graph node by node; returns (kept values, flat outputs).

    ``upcast``: run every float16/bfloat16 value and dtype argument in float32.
    """
    env: dict[fx.Node, Any] = {}
    nodes = g.nodes
    last_use = _last_use(g)
    user_index = {n: i for i, n in enumerate(g.user_inputs)}
    outputs: list[Any] = []
    with torch.no_grad():
        for i, node in enumerate(nodes):
            if node.op == "placeholder":
                if node in user_index:
                    env[node] = flat_inputs[user_index[node]]
                else:
                    env[node] = state_value(g, model, node)
                if upcast:
                    env[node] = _upcast(env[node])
            elif node.op == "call_function":
                args, kwargs = fx.node.map_arg((node.args, node.kwargs), env.__getitem__)
                if upcast:
                    args, kwargs = pytree.tree_map(_upcast, (args, kwargs))
                env[node] = node.target(*args, **kwargs)
            elif node.op == "output":
                every = node.args[0]
                outputs = [
                    env[a] if isinstance(a, fx.Node) else a
                    for a in (every[p] for p in g.output_positions)
                ]
            elif node.op == "get_attr":
                env[node] = getattr(g.program.graph_module, node.target)
            for inp in node.all_input_nodes:
                if last_use.get(inp) == i and inp not in keep:
                    env.pop(inp, None)
    return env, outputs
