"""Baselines: DLBacktrace and the attribution methods it is compared with, behind one call.

``explain(model, inputs, method="integrated-gradients")`` returns a
:class:`dlbacktrace.Explanation` for every method in :data:`METHODS`. Needs the ``baselines``
extra (Captum, scikit-image, scikit-learn) for everything but ``dlb``/``dlb-contrast``.
"""

from ._model import MethodError
from .api import METHODS, SAMPLING, SIGNED, applicable, explain
from .masks import column_mask, default_mask, patch_mask, slic_mask, token_mask
from .rollout import rollout_matrix

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
