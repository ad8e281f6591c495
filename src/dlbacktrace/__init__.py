"""dlbacktrace: deterministic relevance backtracing (DLBacktrace) for PyTorch models."""

from .backtrace import Backtrace, explain
from .errors import (
    CaptureError,
    ConservationError,
    DLBacktraceError,
    InputError,
    RuleError,
    TargetError,
    UnsupportedOperationError,
)
from .explanation import Explanation
from .rules.registry import register_rule

__version__ = "0.1.0"

__all__ = [
    "Backtrace",
    "CaptureError",
    "ConservationError",
    "DLBacktraceError",
    "Explanation",
    "InputError",
    "RuleError",
    "TargetError",
    "UnsupportedOperationError",
    "explain",
    "register_rule",
]
