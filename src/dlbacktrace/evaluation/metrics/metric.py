"""A metric that describes itself, after Quantus's metric classes.

Quantus metrics carry their ``score_direction``, ``evaluation_category`` and what data they
apply to; a :class:`Metric` carries the same (``higher_is_better``, ``category``, ``needs``)
around one of our batched torch implementations, which it reads its arguments for from an
:class:`~.context.EvaluationContext`. A benchmark then loops over the registered metrics that
apply instead of branching per metric.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dlbacktrace.evaluation.metrics._perturb import MetricError
from dlbacktrace.evaluation.metrics.context import NEEDS, EvaluationContext


class Category(str, enum.Enum):
    """What property of a map a metric measures."""

    FAITHFULNESS = "faithfulness"
    ROBUSTNESS = "robustness"
    STABILITY = "stability"
    RANDOMISATION = "randomisation"
    COMPLEXITY = "complexity"
    CONSERVATION = "conservation"
    COST = "cost"


@dataclass(frozen=True, kw_only=True)
class Metric:
    """One score of attribution maps and what it takes to compute it.

    Parameters
    ----------
    name
        Registry key and the result's name.
    higher_is_better
        Direction of the score (Quantus's ``score_direction``).
    category
        The property measured.
    score
        ``score(context) -> [B]`` per-instance values (a ``[1]`` tensor for a value of the
        whole run, such as peak memory). Float64 CPU tensors: ``.numpy()`` gives an array.
    needs
        Names in :data:`~.context.NEEDS` the context must provide for the metric to apply.
    label
        Short column header for result tables (default: the name).
    """

    name: str
    higher_is_better: bool
    category: Category
    score: Callable[[EvaluationContext], torch.Tensor]
    needs: tuple[str, ...] = ()
    label: str | None = None

    def __post_init__(self) -> None:
        unknown = [n for n in self.needs if n not in NEEDS]
        if unknown:
            raise MetricError(
                f"metric {self.name!r} needs unknown {unknown}; known: {', '.join(NEEDS)}"
            )

    @property
    def header(self) -> str:
        """The column header of result tables."""
        return self.label or self.name

    def missing(self, context: EvaluationContext) -> list[str]:
        """What the metric needs and ``context`` does not provide (empty: it applies).

        Parameters
        ----------
        context
            The evaluation context.
        """
        return [n for n in self.needs if not context.has(n)]

    def applies_to(self, context: EvaluationContext) -> bool:
        """Whether ``context`` has everything the metric needs.

        Parameters
        ----------
        context
            The evaluation context.
        """
        return not self.missing(context)

    def __call__(self, context: EvaluationContext) -> torch.Tensor:
        """The metric's values on ``context`` (an error naming what is missing otherwise).

        Parameters
        ----------
        context
            The evaluation context.
        """
        missing = self.missing(context)
        if missing:
            raise MetricError(f"metric {self.name!r} needs {', '.join(missing)}")
        return self.score(context)


__all__ = ["Category", "Metric"]
