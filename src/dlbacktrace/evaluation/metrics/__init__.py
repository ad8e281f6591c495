"""Metrics for attribution maps: faithfulness, robustness, stability, randomisation,
complexity, conservation and cost. Batched; each declares in :data:`HIGHER_IS_BETTER`
whether higher or lower values are better.
"""

from dlbacktrace.evaluation.metrics import (
    complexity,
    conservation,
    cost,
    faithfulness,
    randomisation,
    robustness,
    stability,
)
from dlbacktrace.evaluation.metrics._perturb import (
    MetricError,
    default_feature_mask,
    gaussian_blur,
    removal_value,
)
from dlbacktrace.evaluation.metrics.complexity import entropy, sparseness
from dlbacktrace.evaluation.metrics.conservation import completeness_error, conservation_error
from dlbacktrace.evaluation.metrics.cost import Cost, measure
from dlbacktrace.evaluation.metrics.faithfulness import (
    Curves,
    curves,
    eraser,
    faithfulness_correlation,
    infidelity,
)
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

HIGHER_IS_BETTER: dict[str, bool] = {
    **faithfulness.HIGHER_IS_BETTER,
    **robustness.HIGHER_IS_BETTER,
    **stability.HIGHER_IS_BETTER,
    **randomisation.HIGHER_IS_BETTER,
    **complexity.HIGHER_IS_BETTER,
    **conservation.HIGHER_IS_BETTER,
    **cost.HIGHER_IS_BETTER,
}

__all__ = [
    "HIGHER_IS_BETTER",
    "Cost",
    "Curves",
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
    "faithfulness_correlation",
    "gaussian_blur",
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
