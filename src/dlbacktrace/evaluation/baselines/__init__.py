"""Baselines: DLBacktrace and the attribution methods it is compared with, behind one call.

``explain(model, inputs, method="integrated-gradients")`` returns a
:class:`dlbacktrace.Explanation` for every method in :data:`METHODS`, a registry of
self-describing :class:`Method` objects (``signed``, ``sampling``, ``has_ledger``,
``applies_to``). Needs the ``baselines`` extra (Captum, scikit-image, scikit-learn) for
everything but ``dlb``/``dlb-contrast``.
"""

from dlbacktrace.evaluation.baselines.api import explain, get_method
from dlbacktrace.evaluation.baselines.backtrace_method import BacktraceMethod
from dlbacktrace.evaluation.baselines.catalogue import METHODS
from dlbacktrace.evaluation.baselines.masks import (
    column_mask,
    default_mask,
    patch_mask,
    slic_mask,
    token_mask,
)
from dlbacktrace.evaluation.baselines.method import MapMethod, Method, as_explanation
from dlbacktrace.evaluation.baselines.prepared import MethodError, Prepared
from dlbacktrace.evaluation.baselines.rollout import rollout_matrix

__all__ = [
    "METHODS",
    "BacktraceMethod",
    "MapMethod",
    "Method",
    "MethodError",
    "Prepared",
    "as_explanation",
    "column_mask",
    "default_mask",
    "explain",
    "get_method",
    "patch_mask",
    "rollout_matrix",
    "slic_mask",
    "token_mask",
]
