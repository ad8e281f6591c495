"""Text and language models: classification and generation explained token by token.

- :func:`explain_text`: per-token (and per-word) relevance for classifiers over text;
- :func:`explain_generation`: generate, then explain every generated token with respect to all
  tokens before it (one batched pass over the whole sequence);
- :func:`explain_continuation`: the same for a given answer (teacher forcing).

Needs ``transformers``-style tokenizers (``pip install dlbacktrace[text]``).
"""

from .checks import (
    ContextLengthError,
    EmptyInputError,
    NotALanguageModelError,
    PaddingError,
    TokenizerMismatchError,
)
from .classify import TextExplanation, explain_text
from .generation import GenerationExplanation, explain_continuation, explain_generation
from .runner import clear_cache
from .tokens import TokenRelevance, TokenTable, WordRelevance

__all__ = [
    "ContextLengthError",
    "EmptyInputError",
    "GenerationExplanation",
    "NotALanguageModelError",
    "PaddingError",
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
