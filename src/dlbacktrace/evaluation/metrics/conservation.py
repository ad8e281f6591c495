"""Conservation: does the map account for the explained output?

DLBacktrace keeps a ledger (relevance reaching the inputs + relevance absorbed by biases and
constants = seed): ``conservation_error`` reads it. For other methods the comparable property
is completeness, ``Σ a = f(x) − f(reference)`` (IG and DeepLift satisfy it by construction):
``completeness_error`` measures the relative gap. Lower is better for both.
"""

from __future__ import annotations

import torch

from dlbacktrace.engine.explanation import Explanation


def conservation_error(explanation: Explanation) -> float:
    """Relative ledger error of a DLBacktrace explanation (whole batch). Other methods'
    Explanations carry no ledger, so for them this is not meaningful: use completeness."""
    return explanation.conservation_error


def completeness_error(
    attributions: torch.Tensor, output: torch.Tensor, reference_output: torch.Tensor
) -> torch.Tensor:
    """``|Σ a − (f(x) − f(x₀))| / |f(x) − f(x₀)|`` per input (``[B]``; target scores given)."""
    delta = (output - reference_output).to(torch.float64)
    gap = attributions.flatten(1).to(torch.float64).sum(1) - delta
    return gap.abs() / delta.abs().clamp_min(1e-12)
