"""One evaluation task: a model, the instances it explains and how metrics perturb them.

:func:`~dlbacktrace.evaluation.evaluate.evaluate` builds one from a user's model and data, the
benchmark builds its bundled ones (:mod:`dlbacktrace.evaluation.benchmark.tasks`); both run
through the same :class:`~dlbacktrace.evaluation.runner.TaskRunner`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from dlbacktrace.evaluation.baselines.prepared import logits_of
from dlbacktrace.evaluation.metrics.metric import Category


@dataclass
class Task:
    """One evaluation task: a model, its explained instances and how metrics perturb them.

    Parameters
    ----------
    methods
        Names of the methods to run (None: every registered method, in registry order).
    skip_methods, skip_metrics
        ``{name: reason}`` of registered methods / metrics this task leaves out.
    categories
        Only metrics of these categories (None: all).
    """

    name: str
    description: str
    model: nn.Module
    inputs: torch.Tensor | dict[str, torch.Tensor]
    target: torch.Tensor
    methods: tuple[str, ...] | None = None
    skip_methods: dict[str, str] = field(default_factory=dict)
    categories: tuple[Category, ...] | None = None
    skip_metrics: dict[str, str] = field(default_factory=dict)
    removal: Any = "zero"
    removal_note: str = "zero"
    feature_mask: torch.Tensor | None = None
    valid_elements: torch.Tensor | None = None
    steps: int = 20
    fractions: tuple[float, ...] | None = None  # token tasks: a short grid, ERASER read off it
    eraser_bins: tuple[float, ...] | None = None
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    limits: dict[str, int] = field(default_factory=dict)  # fewer instances for costly methods
    chunk: int = 64
    randomise_layers: list[str] | None = None  # cascade units (default: every parameter owner)
    info: dict[str, Any] = field(default_factory=dict)
    feature_names: list[str] | None = None  # one per element of a map (tables: the columns)
    # Token tasks: a second removal that deletes tokens through the attention mask (the
    # token's mask entry set to 0, its id replaced by ``removal``); its metrics carry the
    # suffix ``_mask``.
    mask_deletion: bool = False

    @property
    def tokens(self) -> bool:
        return isinstance(self.inputs, dict)

    @property
    def n(self) -> int:
        return int(self.target.shape[0])

    def subset(self, count: int) -> tuple[Any, torch.Tensor]:
        if self.tokens:
            return {k: v[:count] for k, v in self.inputs.items()}, self.target[:count]
        return self.inputs[:count], self.target[:count]

    @property
    def perturb_x(self) -> torch.Tensor:
        """What the metrics perturb: the float input, or the token ids."""
        return self.inputs["input_ids"] if self.tokens else self.inputs

    @property
    def extra(self) -> tuple[torch.Tensor, ...]:
        return (self.inputs["attention_mask"],) if self.tokens else ()

    def forward(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """The model as the metrics see it: ``[N, C]`` scores."""
        if self.tokens:
            kwargs = (
                {"use_cache": False, "logits_to_keep": 1}
                if hasattr(self.model, "generation_config") else {}
            )
            return logits_of(self.model(input_ids=x, attention_mask=extra[0], **kwargs))
        return logits_of(self.model(x))

    def forward_masked(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        """As :meth:`forward`, with tokens marked :data:`MASK_DELETED` removed from attention."""
        deleted = x == MASK_DELETED
        ids = torch.where(deleted, torch.full_like(x, int(self.removal)), x)
        mask = extra[0] * (~deleted).to(extra[0].dtype)
        return self.forward(ids, mask)


# The id the metrics write for a token deleted through the attention mask (never a real id).
MASK_DELETED = -1


def predicted(model: nn.Module, inputs: Any, batch: int = 64) -> torch.Tensor:
    outs = []
    with torch.no_grad():
        if isinstance(inputs, dict):
            n = inputs["input_ids"].shape[0]
            extra = {"use_cache": False} if hasattr(model, "generation_config") else {}
            for s in range(0, n, batch):
                part = {k: v[s : s + batch] for k, v in inputs.items()}
                outs.append(logits_of(model(**part, **extra)).argmax(-1))
        else:
            for s in range(0, inputs.shape[0], batch):
                outs.append(logits_of(model(inputs[s : s + batch])).argmax(-1))
    return torch.cat(outs)


__all__ = ["MASK_DELETED", "Task", "predicted"]
