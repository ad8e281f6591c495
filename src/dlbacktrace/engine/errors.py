"""Specific exception classes: each says what went wrong and what to do about it."""

from __future__ import annotations


class DLBacktraceError(Exception):
    """Base class of every error raised by dlbacktrace."""


class CaptureError(DLBacktraceError):
    """The model could not be captured with ``torch.export``."""


class UnsupportedOperationError(DLBacktraceError):
    """An operation on the relevance path has no relevance rule (never passed through silently)."""


class InputError(DLBacktraceError, ValueError):
    """Bad input: wrong shape or dtype, NaN/Inf, or inputs the model rejects."""


class TargetError(DLBacktraceError, IndexError):
    """Bad target or seed: out of range, wrong shape or not applicable to the model's output."""


class RuleError(DLBacktraceError):
    """A relevance rule met a case it cannot handle correctly (for example dropout in training)."""


class ConservationError(DLBacktraceError, ArithmeticError):
    """The relevance ledger of an explanation does not balance (DESIGN.md 2.4), for example
    after a float overflow; such an explanation is never returned."""
