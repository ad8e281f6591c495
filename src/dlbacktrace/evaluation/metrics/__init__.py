"""Metrics for attribution maps: faithfulness, robustness, stability, randomisation,
complexity, conservation and cost.

The functions are batched torch implementations; per-instance scores are ``[B]`` float64
tensors (``.numpy()`` gives an array; :meth:`Curves.numpy` converts the curves). Each score is
also registered in :data:`METRICS` as a self-describing :class:`Metric` (``higher_is_better``,
``category``, ``needs``) that reads its arguments from an :class:`EvaluationContext`;
:func:`evaluate` computes every metric that applies to a context.
"""

from dlbacktrace.evaluation.metrics._perturb import (
    MetricError,
    default_feature_mask,
    gaussian_blur,
    removal_value,
)
from dlbacktrace.evaluation.metrics.catalogue import METRICS, evaluate, higher_is_better
from dlbacktrace.evaluation.metrics.complexity import entropy, sparseness
from dlbacktrace.evaluation.metrics.conservation import completeness_error, conservation_error
from dlbacktrace.evaluation.metrics.context import NEEDS, EvaluationContext
from dlbacktrace.evaluation.metrics.cost import Cost, measure
from dlbacktrace.evaluation.metrics.faithfulness import (
    Curves,
    curves,
    eraser,
    faithfulness_correlation,
    infidelity,
)
from dlbacktrace.evaluation.metrics.metric import Category, Metric
from dlbacktrace.evaluation.metrics.randomisation import (
    cascading_randomisation,
    randomisation_score,
    spearman,
)
from dlbacktrace.evaluation.metrics.robustness import (
    avg_sensitivity,
    max_sensitivity,
    sensitivities,
)
from dlbacktrace.evaluation.metrics.stability import determinism, run_variance

__all__ = [
    "METRICS",
    "NEEDS",
    "Category",
    "Cost",
    "Curves",
    "EvaluationContext",
    "Metric",
    "MetricError",
    "avg_sensitivity",
    "cascading_randomisation",
    "completeness_error",
    "conservation_error",
    "curves",
    "default_feature_mask",
    "determinism",
    "entropy",
    "eraser",
    "evaluate",
    "faithfulness_correlation",
    "gaussian_blur",
    "higher_is_better",
    "infidelity",
    "max_sensitivity",
    "measure",
    "randomisation_score",
    "removal_value",
    "run_variance",
    "sensitivities",
    "sparseness",
    "spearman",
]
