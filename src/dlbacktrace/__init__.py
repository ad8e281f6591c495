"""dlbacktrace: deterministic relevance backtracing (DLBacktrace) for PyTorch models."""

from dlbacktrace.engine.backtrace import Backtrace, explain
from dlbacktrace.engine.errors import (
    CaptureError,
    ConservationError,
    DLBacktraceError,
    InputError,
    RuleError,
    TargetError,
    UnsupportedOperationError,
)
from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.engine.rules.registry import register_rule

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
