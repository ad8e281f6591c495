"""DLBacktrace itself as a :class:`~dlbacktrace.evaluation.baselines.method.Method`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from dlbacktrace.engine.backtrace import Backtrace
from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.evaluation.baselines.method import Inputs, Method
from dlbacktrace.evaluation.baselines.prepared import MethodError


@dataclass(frozen=True, kw_only=True)
class BacktraceMethod(Method):
    """DLBacktrace in one mode: ``"default"`` (unsigned) or ``"contrast"`` (signed net map).

    It keeps a conservation ledger and captures the model once per input signature; pass
    ``backtrace=`` (from :meth:`setup`) to reuse a capture across calls.

    Parameters
    ----------
    mode
        The :meth:`Backtrace.explain` mode.
    """

    mode: str = "default"
    has_ledger: bool = True
    captures_graph: bool = True

    def setup(self, model: nn.Module) -> dict[str, Any]:
        """One :class:`Backtrace` for ``model``, shared by both modes."""
        return {"backtrace": Backtrace(model)}

    def attribute(
        self, model: nn.Module, inputs: Inputs, target: Any = None, **options: Any
    ) -> Explanation:
        bt = options.pop("backtrace", None) or Backtrace(model)
        if bt.model is not model:
            raise MethodError("backtrace= must wrap the same model")
        if isinstance(inputs, Mapping):
            kwargs = dict(inputs)
            if getattr(getattr(model, "config", None), "use_cache", False) and hasattr(
                model, "generation_config"
            ):
                kwargs.setdefault("use_cache", False)
            return bt.explain(target=target, mode=self.mode, **kwargs, **options)
        return bt.explain(inputs, target=target, mode=self.mode, **options)


__all__ = ["BacktraceMethod"]
