"""Global (dataset-level) explanations: aggregate relevance over a dataset, compare models.

``aggregate(model, data, ...)`` streams batches through ``Backtrace.explain`` and keeps exact
per-class statistics in constant memory (locally or on Ray, resumable from checkpoints);
``groups=``/``sensitive=`` add the bias lens (per-group statistics, sensitive-feature shares);
``compare(a, b)`` tells what changed between two models' global explanations.
"""

from dlbacktrace.aggregate.api import aggregate
from dlbacktrace.aggregate.bias import BiasLensError, GroupStats
from dlbacktrace.aggregate.compare import Comparison, compare
from dlbacktrace.aggregate.result import AggregateError, GlobalExplanation

__all__ = [
    "AggregateError",
    "BiasLensError",
    "Comparison",
    "GlobalExplanation",
    "GroupStats",
    "aggregate",
    "compare",
]
