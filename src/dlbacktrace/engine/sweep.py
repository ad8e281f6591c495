"""The reverse-topological relevance sweep: rules per node, fan-in summed, ledger kept.

The sweep knows nothing about specific ops; it asks the registry for each node's rule, hands
it the recorded values and the relevance of the node's output, and accumulates what comes
back. Values are freed as soon as no remaining rule needs them.

Nothing inside the sweep waits for the device: the ledger is kept as device tensors and read
back once at the end, and which affine nodes need their saturated form is settled before it
starts (capture rules out the sides that never carry relevance; one batched check of the
recorded outputs settles the rest).
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx

from dlbacktrace.engine.capture import CapturedGraph
from dlbacktrace.engine.errors import RuleError
from dlbacktrace.engine.rules import registry
from dlbacktrace.engine.rules.base import (
    AbsCache,
    Call,
    RuleOptions,
    SaturatedSites,
    ledger_rows,
)


@dataclass
class SweepResult:
    inputs: dict[fx.Node, torch.Tensor]  # relevance [S, *shape] per user input reached
    absorbed: dict[str, float]  # node name -> absorbed relevance (all streams and rows)
    layers: dict[fx.Node, torch.Tensor] = field(default_factory=dict)
    # Absorbed relevance per stream and batch row (stream-major), plus a last slot for amounts
    # that could not be attributed to one row (``rules.base.total``); None when the output has
    # no batch dim.
    absorbed_rows: torch.Tensor | None = None


@dataclass
class _Ledger:
    """Absorbed relevance per node, kept on the device until the sweep ends."""

    device: torch.device
    amounts: dict[str, torch.Tensor] = field(default_factory=dict)


def _free_plan(
    relevant: list[fx.Node], bias_add: dict[fx.Node, fx.Node]
) -> dict[fx.Node, list[fx.Node]]:
    """After processing node X (in reverse order), which values can be dropped."""
    position = {n: i for i, n in enumerate(relevant)}
    readers: dict[fx.Node, list[fx.Node]] = {}
    for node in relevant:
        readers.setdefault(node, []).append(node)
        for inp in node.all_input_nodes:
            readers.setdefault(inp, []).append(node)
        fused = bias_add.get(node)
        if fused is not None:  # the fused affine rule reads its add's output and bias
            readers.setdefault(fused, []).append(node)
            for inp in fused.all_input_nodes:
                readers.setdefault(inp, []).append(node)
    plan: dict[fx.Node, list[fx.Node]] = {}
    for value, users in readers.items():
        last = min(users, key=lambda u: position[u])  # processed last in the reverse sweep
        plan.setdefault(last, []).append(value)
    return plan


def _accumulate(store: dict, node: fx.Node, rho: torch.Tensor, slot: int | None = None) -> None:
    if slot is None:
        current = store.get(node)
        store[node] = rho if current is None else current + rho
        return
    slots = store.setdefault(node, [])
    if not isinstance(slots, list):
        raise RuleError(f"internal: node '{node.name}' has both tuple and tensor relevance")
    while len(slots) <= slot:
        slots.append(None)
    slots[slot] = rho if slots[slot] is None else slots[slot] + rho


def sweep(
    g: CapturedGraph,
    env: dict[fx.Node, Any],
    relevant: list[fx.Node],
    output: fx.Node,
    seed: torch.Tensor,
    options: RuleOptions,
    layer_nodes: set[fx.Node] | None = None,
    abs_cache: AbsCache | None = None,
) -> SweepResult:
    """Propagate ``seed`` ([S, *output.shape]: one stream per seed) from ``output`` back to the
    user inputs; every stream shares the record in ``env``."""
    store: dict[fx.Node, Any] = {output: seed}
    dtype = seed.dtype
    absorbed: dict[str, float] = {}
    streams = seed.shape[0]
    rows = seed.shape[1] if seed.dim() > 1 else None
    result = SweepResult(inputs={}, absorbed=absorbed)
    if rows is not None:
        result.absorbed_rows = torch.zeros(streams * rows + 1, dtype=torch.float64,
                                           device=seed.device)
    plan = _free_plan(relevant, g.bias_add)
    wanted_layers = layer_nodes or set()
    ledger = _Ledger(device=seed.device)
    # rules enable autograd only locally, for their transposed ops
    with torch.no_grad(), ledger_rows(rows, streams):
        saturation = saturated_nodes(g, env, relevant)  # (bounds, sites) per node
        _run_sweep(g, env, relevant, store, result, plan, wanted_layers, options, dtype,
                   abs_cache, saturation, ledger)
    if ledger.amounts:  # one read-back for the whole ledger
        names = list(ledger.amounts)
        values = torch.stack([ledger.amounts[n] for n in names]).tolist()
        absorbed.update((n, v) for n, v in zip(names, values, strict=True) if v != 0.0)
    return result


# A node whose saturated outputs are at most this fraction of all of them gets them as sites
# (``SaturatedSites``) when its rule can take them: a few GELU outputs below −6 then cost a
# correction at those outputs instead of the saturated form's two extra full-size products.
SITE_FRACTION = 1 / 64


def saturated_nodes(
    g: CapturedGraph, env: dict[fx.Node, Any], relevant: list[fx.Node]
) -> tuple[dict[fx.Node, tuple[float | None, float | None]], dict[fx.Node, SaturatedSites]]:
    """The saturation bounds of the affine nodes that have a saturated output, and the sites
    of those whose few saturated outputs their rule can correct one by one.

    Only the sides capture left live are checked, all nodes in one batch with a single
    read-back (plus one index read-back per node given sites). A node without saturated
    outputs gets the unsaturated form of its rule, which gives the same values (its saturated
    shares would all equal the unsaturated ones).
    """
    checked: list[tuple[fx.Node, tuple[float | None, float | None], torch.Tensor]] = []
    counts: list[torch.Tensor] = []
    wanted = set(relevant)
    for node, (low, high) in g.live_saturation.items():
        if node not in wanted:
            continue
        fused = g.bias_add.get(node)
        y = env.get(node if fused is None else fused)
        if isinstance(y, (tuple, list)):
            y = y[0]
        if not isinstance(y, torch.Tensor):
            continue
        parts = [y < low] if low is not None else []
        if high is not None:
            parts.append(y > high)
        flag = parts[0] if len(parts) == 1 else parts[0] | parts[1]
        checked.append((node, (low, high), flag))
        counts.append(flag.count_nonzero())
    if not counts:
        return {}, {}
    found = torch.stack([c.to(counts[0].device) for c in counts]).tolist()
    bounds: dict[fx.Node, tuple[float | None, float | None]] = {}
    sites: dict[fx.Node, SaturatedSites] = {}
    for (node, side, flag), count in zip(checked, found, strict=True):
        if not count:
            continue
        bounds[node] = side
        if (registry.spec_of(node.target).saturated_sites and flag.dim() > 0
                and count <= SITE_FRACTION * flag.numel()):
            flat = flag.reshape(-1).nonzero().squeeze(1)
            rows, per_row = torch.unique_consecutive(flat // flag.shape[-1], return_counts=True)
            sites[node] = SaturatedSites(flat=flat, rows=rows, counts=per_row)
    return bounds, sites


def _run_sweep(
    g, env, relevant, store, result, plan, wanted_layers, options, dtype, abs_cache, saturation,
    ledger,
) -> None:
    for node in reversed(relevant):
        R = store.pop(node, None)
        if R is not None and node in wanted_layers:
            result.layers[node] = R[0] if isinstance(R, list) else R
        if node.op == "placeholder":
            if R is not None:
                result.inputs[node] = R
        elif R is not None and node.target is operator.getitem:
            parent, index = node.args
            _accumulate(store, parent, R, slot=index)
        elif R is not None:
            _apply_rule(g, env, node, R, options, store, result, dtype, abs_cache, saturation,
                        ledger)
        for value in plan.get(node, ()):
            if value.op != "placeholder":
                env.pop(value, None)


def _bias_value(g, env, add: fx.Node, affine: fx.Node) -> torch.Tensor:
    """The constant that ``add`` adds to ``affine``'s output (negated for ``affine - c``)."""
    a, b = add.args[:2]
    const = b if a is affine else a
    value = env[const] if isinstance(const, fx.Node) else const
    out = env[add]
    value = torch.as_tensor(value, dtype=out.dtype, device=out.device)
    return -value if registry.spec_of(add.target).bias_sign < 0 else value


def _apply_rule(
    g, env, node, R, options, store, result, dtype, abs_cache, saturation, ledger
) -> None:
    bounds, sites = saturation
    source = g.bias_source.get(node)
    if source is not None:  # a fused bias add: its affine op's rule handles the bias
        _accumulate(store, source, R)
        return
    rule = registry.lookup(node.target)
    if rule is None:  # check_rules() runs first; this guards direct use of the sweep
        from dlbacktrace.engine.capture import describe_unsupported
        from dlbacktrace.engine.errors import UnsupportedOperationError

        raise UnsupportedOperationError(describe_unsupported(node))
    args, kwargs = fx.node.map_arg((node.args, node.kwargs), env.__getitem__)
    fused = g.bias_add.get(node)
    call = Call(
        node=node,
        args=tuple(args),
        kwargs=dict(kwargs),
        out=env[node] if fused is None else env[fused],
        bias_add=None if fused is None else _bias_value(g, env, fused, node),
        data=g.data,
        gates=g.gates,
        saturation=bounds.get(node),
        options=options,
        abs_cache=abs_cache,
        attention_probs=g.attention_probs,
        saturated_sites=sites.get(node),
    )
    contribution = rule(call, R)
    for inp, rho in contribution.inputs:
        if inp not in g.data:
            raise RuleError(f"internal: rule for '{node.name}' sent relevance to non-data '{inp}'")
        _accumulate(store, inp, rho.to(dtype))
    amount = contribution.absorbed
    if isinstance(amount, torch.Tensor):
        amount = amount.to(device=ledger.device, dtype=torch.float64)
        if result.absorbed_rows is not None:
            result.absorbed_rows += _as_rows(amount, result.absorbed_rows)
        value = amount.sum()
    else:
        if amount == 0.0:
            return
        value = torch.tensor(float(amount), dtype=torch.float64, device=ledger.device)
        if result.absorbed_rows is not None:
            result.absorbed_rows[-1] += value  # a plain number: not attributable to a row
    current = ledger.amounts.get(node.name)
    ledger.amounts[node.name] = value if current is None else current + value


def _as_rows(amount: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """A rule's ledger amount as per-row slots (a scalar is not attributable to a row)."""
    if amount.shape == rows.shape:
        return amount.to(rows.device)
    out = torch.zeros_like(rows)
    out[-1] = amount.sum()
    return out
