"""Input checks for the text helpers: each failure is a specific :class:`InputError` subclass.

A wrong explanation is worse than none, so mismatches a user can easily make (a tokenizer from
another model, a prompt longer than the context, a model without a language-modelling head,
padding on the wrong side of a causal prompt) stop here with a message saying what to do.
"""

from __future__ import annotations

from typing import Any

import torch

from dlbacktrace.engine.errors import InputError
from dlbacktrace.tasks.hf import context_length, embedding_rows, output_embedding

__all__ = [
    "ContextLengthError",
    "EmptyInputError",
    "NotALanguageModelError",
    "PaddingError",
    "TokenizerMismatchError",
    "check_context",
    "check_language_model",
    "check_tokenizer",
]


class EmptyInputError(InputError):
    """The text or prompt has no tokens to explain."""


class ContextLengthError(InputError):
    """The sequence is longer than the model's context (``max_position_embeddings``)."""


class TokenizerMismatchError(InputError):
    """The tokenizer's vocabulary does not belong to the model."""


class NotALanguageModelError(InputError):
    """``explain_generation`` was given a model without a language-modelling head."""


class PaddingError(InputError):
    """Padding a causal language model cannot handle correctly (right padding in a prompt)."""


def check_context(model: torch.nn.Module, n_tokens: int, what: str = "the text") -> None:
    """Raise :class:`ContextLengthError` when ``n_tokens`` exceed the model's context."""
    limit = context_length(model)
    if limit is not None and n_tokens > limit:
        raise ContextLengthError(
            f"{what} needs {n_tokens} tokens but the model's context is {limit} tokens "
            "(config.max_position_embeddings); shorten it"
        )


def _special_id(obj: Any, name: str) -> set[int]:
    value = getattr(obj, name, None)
    if value is None:
        return set()
    if isinstance(value, (list, tuple)):
        return {int(v) for v in value}
    return {int(value)}


def check_tokenizer(
    model: torch.nn.Module, tokenizer: Any, ids: torch.Tensor | None = None, *, causal: bool = False
) -> None:
    """Raise :class:`TokenizerMismatchError` when ``tokenizer`` cannot belong to ``model``.

    Checks, cheapest first: the tokenizer is larger than the embedding table; token ids out of
    range; the tokenizer covers less than 90% of the vocabulary (model vocabularies are padded
    by a few percent at most); for causal LMs, the tokenizer's end-of-sequence token differs
    from the model's. Pass ``check_tokenizer=False`` to the helpers to skip this.
    """
    rows = embedding_rows(model)
    if rows is None:
        return
    size = len(tokenizer)
    hint = "use the tokenizer saved with the model (AutoTokenizer.from_pretrained on its folder)"
    if size > rows:
        raise TokenizerMismatchError(
            f"the tokenizer has {size} tokens but the model's embedding has {rows} rows; {hint}"
        )
    if ids is not None and ids.numel():
        low, high = int(ids.min()), int(ids.max())
        if low < 0 or high >= rows:
            raise TokenizerMismatchError(
                f"token ids span {low}..{high} but the model's vocabulary is 0..{rows - 1}; {hint}"
            )
    if size < 0.9 * rows:
        raise TokenizerMismatchError(
            f"the tokenizer has {size} tokens but the model's vocabulary has {rows}; they do not "
            f"belong together ({hint}), or pass check_tokenizer=False"
        )
    if causal:
        expected = _special_id(getattr(model, "generation_config", None), "eos_token_id")
        expected |= _special_id(getattr(model, "config", None), "eos_token_id")
        got = _special_id(tokenizer, "eos_token_id")
        if expected and got and not got & expected:
            raise TokenizerMismatchError(
                f"the tokenizer's end-of-sequence id {sorted(got)} is not the model's "
                f"{sorted(expected)}; {hint}, or pass check_tokenizer=False"
            )


def check_language_model(model: torch.nn.Module) -> None:
    """Raise :class:`NotALanguageModelError` unless ``model`` generates tokens from an LM head."""
    head = output_embedding(model)
    if head is None or not callable(getattr(model, "generate", None)):
        raise NotALanguageModelError(
            f"{type(model).__name__} has no language-modelling head (get_output_embeddings() is "
            "None or it cannot generate); load it with AutoModelForCausalLM, or use "
            "explain_text for classifiers"
        )
