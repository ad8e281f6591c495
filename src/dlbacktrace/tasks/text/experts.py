"""Per-expert relevance for mixture-of-experts layers (Mixtral, Qwen2-MoE, OLMoE style).

The engine routes relevance through a MoE layer like through any other ops: the routing
weights are gates (softmax, top-k, renormalised), so each token's relevance reaches the experts
it was routed to in proportion to their weighted outputs, and nothing flows into the router.
This helper reads that flow back per expert: the relevance at each routed expert's weighted
output (one row per token and top-k slot), grouped by the expert the token was routed to.

Hugging Face MoE kernels: the default on CPU (``grouped_mm``) runs in float32/bfloat16 only and
its sort-based dispatch does not export; :func:`exportable_experts` switches to the family's
exportable kernel (``batched_mm``: same routing, any dtype). What an experts module looks like
is declared per family in :mod:`dlbacktrace.tasks.hf` (``ExpertLayout``), not here and never in
the engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

from dlbacktrace.engine.backtrace import Backtrace
from dlbacktrace.engine.errors import UnsupportedOperationError
from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.tasks.hf import GENERIC, ExpertLayout, family_of

__all__ = ["ExpertRelevance", "explain_experts", "exportable_experts", "find_expert_modules"]


def _layout(model: nn.Module) -> ExpertLayout:
    layout = family_of(model).experts
    return layout if layout is not None else GENERIC.experts


@contextmanager
def exportable_experts(model: nn.Module) -> Iterator[nn.Module]:
    """Run a Hugging Face MoE model with its family's exportable experts kernel.

    The model's own setting is restored on exit. Models without experts pass through.

    Parameters
    ----------
    model
        The model.
    """
    getter = getattr(model, "get_experts_implementation", None)
    if getter is None or not find_expert_modules(model):
        yield model
        return
    kernel = _layout(model).kernel
    before = getter()
    if all(v == kernel for v in before.values() if v is not None):
        yield model
        return
    model.set_experts_implementation(kernel)
    try:
        yield model
    finally:
        model.set_experts_implementation(before)


@dataclass
class ExpertRelevance:
    """Relevance that flowed through one MoE layer.

    ``routed[b, t, e]``: relevance that token ``t`` of row ``b`` passed through expert ``e``
    (zero for experts the token was not routed to). ``shared[b, t]``: through the always-on
    shared expert (Qwen2-MoE), or None.
    """

    layer: str
    routed: torch.Tensor
    shared: torch.Tensor | None

    @property
    def per_expert(self) -> torch.Tensor:
        """Total relevance per expert over the batch and positions, ``[E]``."""
        return self.routed.sum(dim=(0, 1))

    @property
    def total(self) -> torch.Tensor:
        """Relevance through the layer's experts per row and position, ``[B, T]``."""
        total = self.routed.sum(dim=-1)
        return total + self.shared if self.shared is not None else total


def _is_experts(module: nn.Module, layout: ExpertLayout) -> bool:
    """Batched experts as the layout declares them: 3-D weight stacks and an expert count."""
    stacks = [getattr(module, n, None) for n in layout.weights]
    return hasattr(module, layout.count) and any(
        isinstance(p, nn.Parameter) and p.dim() == 3 for p in stacks
    )


def find_expert_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Named experts modules of a Hugging Face MoE model (empty for dense models).

    Parameters
    ----------
    model
        The model.
    """
    layout = _layout(model)
    return {name: m for name, m in model.named_modules() if name and _is_experts(m, layout)}


def _shared_expert(model: nn.Module, experts_name: str) -> str | None:
    shared = _layout(model).shared
    if shared is None:
        return None
    parent = experts_name.rsplit(".", 1)[0]
    name = f"{parent}.{shared}"
    return name if name in dict(model.named_modules()) else None


def _routing_indices(model: nn.Module, experts: dict[str, nn.Module], kwargs: dict) -> dict:
    """Each experts module's ``top_k_index`` argument, from one plain forward with hooks."""
    seen: dict[str, torch.Tensor] = {}
    handles = []
    for name, module in experts.items():

        def hook(_mod: nn.Module, args: tuple, kw: dict, name: str = name) -> None:
            index = args[1] if len(args) > 1 else kw.get("top_k_index")
            seen[name] = index.detach().clone()

        handles.append(module.register_forward_pre_hook(hook, with_kwargs=True))
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(**kwargs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return seen


def _weighted_output_node(graph: Any, path: str) -> fx.Node:
    """The experts' output rows times their routing weights: a ``mul`` by a gate in scope."""
    candidates = []
    for node in graph.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        if path not in {p for p, _ in stack.values()} or node not in graph.data:
            continue
        if node.op == "call_function" and "mul" in str(node.target):
            operands = [a for a in node.args if isinstance(a, fx.Node)]
            if any(a in graph.gates for a in operands) and any(
                a not in graph.gates for a in operands
            ):
                candidates.append(node)
    if len(candidates) != 1:
        raise UnsupportedOperationError(
            f"cannot find the routed expert outputs of MoE layer '{path}' "
            f"({len(candidates)} candidate nodes); load the model with "
            'experts_implementation="batched_mm"'
        )
    return candidates[0]


def explain_experts(
    model: nn.Module,
    *,
    backtrace: Backtrace | None = None,
    target: Any = None,
    mode: str = "default",
    **inputs: Any,
) -> tuple[Explanation, list[ExpertRelevance]]:
    """Explain a MoE model and report the relevance that passed through each expert.

    ``inputs`` are the model's keyword inputs (``input_ids``, ``attention_mask``,
    ``use_cache=False``, ...). Returns the explanation and one :class:`ExpertRelevance` per MoE
    layer, in model order. Runs under :func:`exportable_experts`. Raises
    :class:`UnsupportedOperationError` for a model without experts modules.

    Parameters
    ----------
    model
        A Hugging Face MoE model.
    backtrace
        A :class:`Backtrace` of ``model`` to reuse (its captures); None makes one.
    target
        As in :meth:`Backtrace.explain`.
    mode
        ``"default"`` or ``"contrast"``.
    **inputs
        The model's keyword inputs.
    """
    experts = find_expert_modules(model)
    if not experts:
        raise UnsupportedOperationError(
            f"{type(model).__name__} has no mixture-of-experts layers (no experts modules found)"
        )
    with exportable_experts(model):
        return _explain_experts(model, experts, backtrace, target, mode, inputs)


def _explain_experts(model, experts, backtrace, target, mode, inputs):
    bt = backtrace if backtrace is not None else Backtrace(model)
    graph = bt.capture(**inputs)
    weighted = {name: _weighted_output_node(graph, name) for name in experts}
    shared = {name: _shared_expert(model, name) for name in experts}
    layers = [n.name for n in weighted.values()] + [s for s in shared.values() if s]
    exp = bt.explain(target=target, mode=mode, layers=layers, **inputs)
    indices = _routing_indices(model, experts, inputs)
    batch, length = _token_grid(inputs)
    reports = []
    for name, module in experts.items():
        index = indices[name]  # [B*T, k]
        rows = exp.layers[weighted[name].name].sum(dim=-1).reshape(index.shape)
        count = getattr(module, _layout(model).count)
        one_hot = torch.nn.functional.one_hot(index, count).to(rows.dtype)
        routed = torch.einsum("nk,nke->ne", rows, one_hot).reshape(batch, length, -1)
        shared_rel = None
        if shared[name]:
            shared_rel = exp.layers[shared[name]].sum(dim=-1).reshape(batch, length)
        reports.append(ExpertRelevance(name, routed, shared_rel))
    return exp, reports


def _token_grid(inputs: dict) -> tuple[int, int]:
    for key in ("input_ids", "inputs_embeds"):
        value = inputs.get(key)
        if isinstance(value, torch.Tensor):
            return int(value.shape[0]), int(value.shape[1])
    raise ValueError("explain_experts needs input_ids or inputs_embeds")
