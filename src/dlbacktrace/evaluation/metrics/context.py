"""One evaluation context: everything a metric may need about one method's maps on a task.

Quantus hands every metric the same call arguments (``model, x_batch, y_batch, a_batch,
explain_func, ...``) and lets each pick what it needs; :class:`EvaluationContext` is that
bundle, with optional parts left ``None`` when a task cannot provide them. A metric names the
parts it needs (:data:`NEEDS`), so whether it applies is a question the context answers.
Intermediate results several metrics share (the deletion curves behind four scores) are
computed once per context (:meth:`EvaluationContext.shared`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch
from torch import nn

from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.evaluation.metrics._perturb import Forward, MetricError
from dlbacktrace.evaluation.metrics.cost import Cost

R = TypeVar("R")


@dataclass
class EvaluationContext:
    """What the metrics may use to score one attribution method's maps.

    Parameters
    ----------
    model
        The explained model.
    inputs
        ``[B, ...]`` what perturbation metrics perturb: the float inputs, or the token ids.
    targets
        ``[B]`` the explained class per row.
    attributions
        ``[B, ...]`` the maps, shaped like ``inputs``.
    method
        The :class:`~dlbacktrace.evaluation.baselines.Method` that made the maps (its traits
        decide e.g. whether a ledger or a seed exists).
    forward
        The model as ``forward(x, *additional_forward_args) -> [N, C]`` scores.
    additional_forward_args
        Tensors aligned with the batch passed to ``forward`` (e.g. an attention mask).
    valid_elements
        Elements that count as features (text: real tokens), or None for all.
    feature_mask
        Elements → feature index for the perturbation metrics (None: their default).
    removal
        What a removed feature becomes (see :func:`~._perturb.removal_value`).
    masked_forward, masked_removal
        A second removal (text: deleting tokens through the attention mask); metrics named
        ``*_mask`` use it.
    model_inputs
        The inputs as the method takes them (a dict of token tensors for text).
    explain_instances
        ``explain_instances(count, **options) -> maps`` of the first ``count`` instances,
        computed as ``attributions`` were (same batching), for reruns.
    explain_inputs
        ``explain_inputs(inputs, targets, model=None) -> maps`` of other inputs (perturbed
        copies) or another model (a randomised copy).
    explanations
        The :class:`~dlbacktrace.Explanation` objects behind ``attributions`` (ledgers).
    cost
        Time and peak memory of computing ``attributions``.
    reexplain_count
        Instances the metrics that explain again use (None: all).
    quick
        Fewer samples in the sampled metrics.
    seed
        Seed of the metrics' own random draws.
    steps, fractions, eraser_bins, randomise_layers, batch_size
        Settings of the curves, ERASER, the randomisation cascade and batched scoring.
    """

    model: nn.Module
    inputs: torch.Tensor
    targets: torch.Tensor
    attributions: torch.Tensor
    method: Any = None
    forward: Forward | None = None
    additional_forward_args: tuple[torch.Tensor, ...] = ()
    valid_elements: torch.Tensor | None = None
    feature_mask: torch.Tensor | None = None
    removal: Any = "zero"
    masked_forward: Forward | None = None
    masked_removal: Any = None
    model_inputs: torch.Tensor | Mapping[str, torch.Tensor] | None = None
    explain_instances: Callable[..., torch.Tensor] | None = None
    explain_inputs: Callable[..., torch.Tensor] | None = None
    explanations: Sequence[Explanation] = ()
    cost: Cost | None = None
    reexplain_count: int | None = None
    quick: bool = False
    seed: int = 0
    steps: int = 20
    fractions: tuple[float, ...] | None = None
    eraser_bins: tuple[float, ...] | None = None
    randomise_layers: list[str] | None = None
    batch_size: int = 256
    details: dict[str, Any] = field(default_factory=dict)
    _shared: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        """Number of explained instances."""
        return int(self.targets.shape[0])

    @property
    def tokens(self) -> bool:
        """The perturbed inputs are discrete (token ids)."""
        return not self.inputs.is_floating_point()

    @property
    def few(self) -> int:
        """Instances for the metrics that explain again (:attr:`reexplain_count`, at most n)."""
        return self.n if self.reexplain_count is None else min(self.n, self.reexplain_count)

    def first(self, count: int) -> tuple[Any, torch.Tensor]:
        """The first ``count`` model inputs and targets.

        Parameters
        ----------
        count
            How many instances.
        """
        inputs = self.inputs if self.model_inputs is None else self.model_inputs
        if isinstance(inputs, Mapping):
            return {k: v[:count] for k, v in inputs.items()}, self.targets[:count]
        return inputs[:count], self.targets[:count]

    def perturbation_options(self) -> dict[str, Any]:
        """The keyword arguments every perturbation metric takes from the context."""
        return {
            "removal": self.removal,
            "additional_forward_args": self.additional_forward_args,
            "valid_elements": self.valid_elements,
            "feature_mask": self.feature_mask,
            "batch_size": self.batch_size,
        }

    def shared(self, key: str, compute: Callable[[], R]) -> R:
        """``compute()`` once per context under ``key`` (results several metrics read).

        Parameters
        ----------
        key
            Name of the shared result.
        compute
            Computes it on first use.
        """
        if key not in self._shared:
            self._shared[key] = compute()
        return self._shared[key]

    def has(self, need: str) -> bool:
        """Whether the context provides ``need`` (a key of :data:`NEEDS`).

        Parameters
        ----------
        need
            The name of what a metric needs.
        """
        if need not in NEEDS:
            raise MetricError(f"unknown need {need!r}; known: {', '.join(NEEDS)}")
        return bool(NEEDS[need](self))


def _trait(name: str) -> Callable[[EvaluationContext], bool]:
    return lambda ctx: ctx.method is not None and bool(getattr(ctx.method, name, False))


# What a metric can need, and how a context shows that it has it.
NEEDS: dict[str, Callable[[EvaluationContext], bool]] = {
    "forward": lambda ctx: ctx.forward is not None,
    "masked_forward": lambda ctx: ctx.masked_forward is not None,
    "continuous_inputs": lambda ctx: ctx.inputs.is_floating_point(),
    "explain_instances": lambda ctx: ctx.explain_instances is not None,
    "explain_inputs": lambda ctx: ctx.explain_inputs is not None,
    "signed": _trait("signed"),
    "sampling": _trait("sampling"),
    "ledger": lambda ctx: _trait("has_ledger")(ctx) and len(ctx.explanations) > 0,
    # a method without a ledger: its map is meant to add up to the output itself
    "no_ledger": lambda ctx: ctx.method is not None and not _trait("has_ledger")(ctx),
    "cost": lambda ctx: ctx.cost is not None,
}


__all__ = ["NEEDS", "EvaluationContext"]
