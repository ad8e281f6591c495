"""The one shape of a bridge: a torch module, an input adapter and the input names.

A model from another framework (Keras, ONNX, scikit-learn) is explained by the same engine as
any PyTorch model once it is a ``torch.nn.Module``. What differs per framework is only how it
becomes one, how the user's inputs (NumPy arrays, DataFrames, dicts by input name, channels-last
images) become the tensors the module takes, and what the inputs are called. A :class:`Bridge`
holds exactly that; :class:`BridgedBacktrace` does the rest (capture once per input signature,
explain, name the relevance after the framework's inputs) the same way for every framework.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import Any

import torch

from dlbacktrace.engine.backtrace import Backtrace
from dlbacktrace.engine.errors import UnsupportedOperationError
from dlbacktrace.engine.explanation import Explanation

__all__ = ["Bridge", "BridgedBacktrace"]


class Bridge(abc.ABC):
    """A foreign model as a torch ``module``, an input adapter and ``input_names``.

    ``input_names`` of ``None`` keeps the engine's own names (the module's argument names).
    """

    module: torch.nn.Module
    input_names: list[str] | None = None

    @abc.abstractmethod
    def adapt(self, inputs: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
        """The module's positional tensors for the user's ``inputs``; raises ``InputError``.

        Parameters
        ----------
        inputs
            What the user passed to ``explain``/``predict``, positionally.
        """

    def translate(self, exc: UnsupportedOperationError) -> Exception:
        """An unsupported-op error in the framework's own terms (default: unchanged).

        Parameters
        ----------
        exc
            The engine's error for an operation without a relevance rule.

        Returns
        -------
        The error to raise instead (``exc`` itself to re-raise it unchanged).
        """
        return exc


class BridgedBacktrace:
    """Explain a bridged model: inputs adapted, captured once per signature, names restored.

    Parameters
    ----------
    bridge
        The framework's :class:`Bridge`.
    mode
        ``"default"`` or ``"contrast"`` (see :class:`~dlbacktrace.Backtrace`).
    **backtrace_kwargs
        Further :class:`~dlbacktrace.Backtrace` options (``attention``, ``epsilon``, ...).
    """

    def __init__(self, bridge: Bridge, mode: str = "default", **backtrace_kwargs: Any) -> None:
        self.bridge = bridge
        self.module = bridge.module
        self.backtrace = Backtrace(bridge.module, mode=mode, **backtrace_kwargs)

    @property
    def input_names(self) -> list[str] | None:
        """The framework's input names (``None``: the module's own)."""
        return self.bridge.input_names

    def predict(self, *inputs: Any) -> Any:
        """The torch module's output for ``inputs`` (for checking against the framework).

        Parameters
        ----------
        *inputs
            The inputs in the framework's terms (see the bridge).
        """
        with torch.no_grad():
            return self.module(*self.bridge.adapt(inputs))

    def explain(self, *inputs: Any, **kwargs: Any) -> Explanation:
        """Explain the model for ``inputs``.

        Parameters
        ----------
        *inputs
            The inputs in the framework's terms (see the bridge).
        **kwargs
            Keywords of :meth:`~dlbacktrace.Backtrace.explain` (``target``, ``mode``, ...).
        """
        tensors = self.bridge.adapt(inputs)
        try:
            exp = self.backtrace.explain(*tensors, **kwargs)
        except UnsupportedOperationError as exc:
            translated = self.bridge.translate(exc)
            if translated is exc:
                raise
            raise translated from exc
        return _renamed(exp, self.bridge.input_names)


def _renamed(exp: Explanation, names: list[str] | None) -> Explanation:
    """``exp`` with its inputs called ``names`` (unchanged if the counts differ)."""
    if names is None or len(exp.input_names) != len(names):
        return exp
    rename = dict(zip(exp.input_names, names, strict=True))
    return dataclasses.replace(
        exp,
        input_names=list(names),
        total_by_name={rename[k]: v for k, v in exp.total_by_name.items()},
        net_by_name=None if exp.net_by_name is None else {
            rename[k]: v for k, v in exp.net_by_name.items()},
    )
