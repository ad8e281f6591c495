"""An attribution method that describes itself, after Captum's ``Attribution``.

Captum's attribution classes carry their traits (``multiplies_by_inputs``,
``has_convergence_delta``, ``get_name``); ours carry what the benchmark and the metrics need
to know without running them: whether the map is signed, whether it samples (and so takes a
``seed=``), whether it keeps a conservation ledger, and whether it applies to a model and
input at all. :class:`MapMethod` turns a function computing a map into a Method returning an
:class:`~dlbacktrace.Explanation` shaped like DLBacktrace's.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.engine.state import inference_state
from dlbacktrace.evaluation.baselines.prepared import (
    TOKEN_KEY,
    Prepared,
    prepare,
    resolve_target,
)

Inputs = torch.Tensor | Mapping[str, torch.Tensor]
# (prepared model, target per row, **options) -> attributions shaped like ``prepared.x``
MapFunction = Callable[..., torch.Tensor]
Applicability = Callable[[nn.Module, Inputs], bool]


@dataclass(frozen=True, kw_only=True)
class Method(abc.ABC):
    """An attribution method and its traits.

    Parameters
    ----------
    name
        Registry key and the name in result tables.
    signed
        The map has a sign (evidence for and against the target): explanations are in
        contrast mode (``relevance`` signed, ``positive``/``negative`` its parts).
    sampling
        The map is drawn at random: the method takes ``seed=`` and is reproducible only for a
        fixed seed. Non-sampling methods return bit-identical maps for identical calls.
    has_ledger
        Explanations carry a conservation ledger (relevance reaching the inputs plus
        relevance absorbed equals the seed), so ``conservation_error`` is meaningful.
    captures_graph
        The method captures the model once per input signature (DLBacktrace's
        ``torch.export``): callers should keep one batch shape, and the first call is slow.
    requires
        What the method needs, in words, for when :meth:`applies_to` says no.
    map_description
        How result tables describe the map (default: ``"signed"`` or ``"unsigned"``).
    """

    name: str
    signed: bool
    sampling: bool = False
    has_ledger: bool = False
    captures_graph: bool = False
    requires: str = ""
    map_description: str | None = None

    @property
    def map_kind(self) -> str:
        """The map as result tables describe it."""
        return self.map_description or ("signed" if self.signed else "unsigned")

    def applies_to(self, model: nn.Module, inputs: Inputs) -> bool:
        """Whether the method applies to this model and kind of input, without running it.

        Parameters
        ----------
        model
            The model to explain.
        inputs
            A float tensor or a dict of token tensors, as for :meth:`attribute`.
        """
        return True

    def setup(self, model: nn.Module) -> dict[str, Any]:
        """Options worth building once per model and passing to every :meth:`attribute` call
        (DLBacktrace: the captured :class:`~dlbacktrace.Backtrace`). Methods of one class may
        share the result for the same model.

        Parameters
        ----------
        model
            The model that will be explained.
        """
        return {}

    @abc.abstractmethod
    def attribute(
        self, model: nn.Module, inputs: Inputs, target: Any = None, **options: Any
    ) -> Explanation:
        """Explain ``model`` on ``inputs``.

        Parameters
        ----------
        model
            The model to explain (left in the train/eval state it was in).
        inputs
            A float tensor (tables ``[B, F]``, images ``[B, C, H, W]``) or a dict of token
            tensors (``input_ids``, ``attention_mask``, ...) for text models.
        target
            Class per row (None: the predicted class).
        **options
            Method options (``seed=`` for sampling methods).
        """


def always(model: nn.Module, inputs: Inputs) -> bool:
    """The applicability of a method that runs on every model and input."""
    return True


@dataclass(frozen=True, kw_only=True)
class MapMethod(Method):
    """A Method from a function that computes the map on a :class:`Prepared` model.

    Parameters
    ----------
    map_fn
        ``map_fn(prepared, target, **options)`` returning attributions shaped like
        ``prepared.x`` (for text: the word embeddings, summed over the hidden dimension
        afterwards; a trailing dimension of 1 gives one value per token).
    applies
        ``applies(model, inputs)``: the test behind :meth:`applies_to` (default: always).
    """

    map_fn: MapFunction
    applies: Applicability = always

    def applies_to(self, model: nn.Module, inputs: Inputs) -> bool:
        return bool(self.applies(model, inputs))

    def attribute(
        self, model: nn.Module, inputs: Inputs, target: Any = None, **options: Any
    ) -> Explanation:
        model_kwargs = options.pop("model_kwargs", {}) or {}
        with inference_state(model):
            prep = prepare(model, inputs, **model_kwargs)
            tgt = resolve_target(prep, target)
            attr = self.map_fn(prep, tgt, **options)
            return as_explanation(prep, attr, self.signed, tgt)


def as_explanation(
    prep: Prepared, attr: torch.Tensor, signed: bool, target: torch.Tensor
) -> Explanation:
    """A map as an Explanation shaped like DLBacktrace's: default mode for unsigned maps,
    contrast mode (``relevance`` signed, ``total`` its absolute value) for signed ones.

    Parameters
    ----------
    prep
        The prepared model and inputs the map was computed on.
    attr
        Attributions shaped like ``prep.x``.
    signed
        Whether the map is signed.
    target
        The explained class per row.
    """
    rel = prep.reduce(attr).to(prep.x.dtype)
    if prep.kind == "tokens":
        by_name = {
            name: (rel if name == TOKEN_KEY else torch.zeros(t.shape, dtype=rel.dtype))
            for name, t in prep.token_kwargs.items()
        }
    else:
        by_name = {"x": rel}
    out = prep.outputs()
    seed = torch.zeros_like(out)
    seed[torch.arange(out.shape[0]), target] = 1.0
    return Explanation(
        mode="contrast" if signed else "default",
        input_names=list(by_name),
        total_by_name={n: t.abs() for n, t in by_name.items()} if signed else by_name,
        net_by_name=by_name if signed else None,
        absorbed={},
        seed=seed,
        target=target,
        output=out,
        single_input=len(by_name) == 1,
    )


__all__ = ["Inputs", "MapFunction", "MapMethod", "Method", "always", "as_explanation"]
