"""Baselines: DLBacktrace and the attribution methods it is compared with, behind one call.

``explain(model, inputs, method="integrated-gradients")`` returns a
:class:`dlbacktrace.Explanation` for every method in :data:`METHODS`. Needs the ``baselines``
extra (Captum, scikit-image, scikit-learn) for everything but ``dlb``/``dlb-contrast``.
"""

from dlbacktrace.evaluation.baselines._model import MethodError
from dlbacktrace.evaluation.baselines.api import METHODS, SAMPLING, SIGNED, applicable, explain
from dlbacktrace.evaluation.baselines.masks import (
    column_mask,
    default_mask,
    patch_mask,
    slic_mask,
    token_mask,
)
from dlbacktrace.evaluation.baselines.rollout import rollout_matrix

__all__ = [
    "METHODS",
    "SAMPLING",
    "SIGNED",
    "MethodError",
    "applicable",
    "column_mask",
    "default_mask",
    "explain",
    "patch_mask",
    "rollout_matrix",
    "slic_mask",
    "token_mask",
]
