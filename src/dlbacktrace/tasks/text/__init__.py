"""Text and language models: classification and generation explained token by token.

- :func:`explain_text`: per-token (and per-word) relevance for classifiers over text;
- :func:`explain_generation`: generate, then explain every generated token with respect to all
  tokens before it (one batched pass over the whole sequence);
- :func:`explain_continuation`: the same for a given answer (teacher forcing).

Results are views of one :class:`~dlbacktrace.Explanation` (``.explanation``); Hugging Face
family specifics come from :mod:`dlbacktrace.tasks.hf`.

Needs ``transformers``-style tokenizers (``pip install dlbacktrace[text]``).
"""

from dlbacktrace.tasks.text.checks import (
    ContextLengthError,
    EmptyInputError,
    NotALanguageModelError,
    PaddingError,
    TokenizerMismatchError,
)
from dlbacktrace.tasks.text.classify import explain_text
from dlbacktrace.tasks.text.generation import explain_continuation, explain_generation
from dlbacktrace.tasks.text.runner import clear_cache
from dlbacktrace.tasks.text.sequences import SequenceOptions
from dlbacktrace.tasks.text.tokens import TokenRelevance, TokenTable, WordRelevance
from dlbacktrace.tasks.text.views import GenerationExplanation, TextExplanation

__all__ = [
    "ContextLengthError",
    "EmptyInputError",
    "GenerationExplanation",
    "NotALanguageModelError",
    "PaddingError",
    "SequenceOptions",
    "TextExplanation",
    "TokenRelevance",
    "TokenTable",
    "TokenizerMismatchError",
    "WordRelevance",
    "clear_cache",
    "explain_continuation",
    "explain_generation",
    "explain_text",
]
