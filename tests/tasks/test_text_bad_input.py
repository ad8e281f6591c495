"""Bad input to dlbacktrace.tasks.text: each case is a specific InputError, never a wrong
explanation."""

from __future__ import annotations

import pytest
import torch

from dlbacktrace.engine.errors import InputError
from dlbacktrace.tasks.text import (
    ContextLengthError,
    EmptyInputError,
    NotALanguageModelError,
    PaddingError,
    TokenizerMismatchError,
    explain_continuation,
    explain_generation,
    explain_text,
)


@pytest.mark.parametrize("prompt", ["", "   \n", [], [{"role": "user", "content": " "}]])
def test_empty_prompt(tiny_causal_lm, prompt) -> None:
    model, tok = tiny_causal_lm
    with pytest.raises(EmptyInputError, match="empty"):
        explain_generation(model, tok, prompt, max_new_tokens=2)


def test_empty_text_and_continuation(tiny_text_classifier, tiny_causal_lm) -> None:
    model, tok = tiny_text_classifier
    for bad in ("", [], ["fine", "  "]):
        with pytest.raises(EmptyInputError):
            explain_text(model, tok, bad)
    lm, lm_tok = tiny_causal_lm
    with pytest.raises(EmptyInputError, match="continuation"):
        explain_continuation(lm, lm_tok, "Hello", "")


def test_prompt_longer_than_context(tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm  # context: 256 positions
    long_prompt = "word " * 300
    with pytest.raises(ContextLengthError, match="256"):
        explain_generation(model, tok, long_prompt, max_new_tokens=1)
    fits = "word " * 250
    with pytest.raises(ContextLengthError, match="new tokens"):
        explain_generation(model, tok, fits, max_new_tokens=20)
    assert issubclass(ContextLengthError, InputError)


def test_text_longer_than_context(tiny_text_classifier) -> None:
    model, tok = tiny_text_classifier  # context: 128 positions
    with pytest.raises(ContextLengthError, match="128"):
        explain_text(model, tok, "word " * 200)


def test_tokenizer_of_another_model(tiny_causal_lm, tiny_text_classifier) -> None:
    lm, lm_tok = tiny_causal_lm
    clf, clf_tok = tiny_text_classifier
    with pytest.raises(TokenizerMismatchError, match="do not belong together|vocabulary"):
        explain_generation(lm, clf_tok, "The capital of France is", max_new_tokens=1)
    with pytest.raises(TokenizerMismatchError, match="embedding has"):
        explain_text(clf, lm_tok, "a fine day")


def test_token_ids_out_of_range(tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm
    ids = torch.tensor([[1, 2, model.config.vocab_size + 5]])
    with pytest.raises(TokenizerMismatchError, match="out|span"):
        explain_generation(model, tok, ids, max_new_tokens=1)


def test_model_without_lm_head(tiny_text_classifier, tiny_causal_lm) -> None:
    clf, clf_tok = tiny_text_classifier
    with pytest.raises(NotALanguageModelError, match="language-modelling head"):
        explain_generation(clf, clf_tok, "hello", max_new_tokens=1)
    lm, lm_tok = tiny_causal_lm
    with pytest.raises(NotALanguageModelError):
        explain_continuation(lm.model, lm_tok, "hello", " world")  # the bare LlamaModel


def test_right_padding_refused(tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm
    ids = torch.tensor([[504, 3575, 282, tok.pad_token_id]])
    with pytest.raises(PaddingError, match="right-padded"):
        explain_generation(model, tok, {"input_ids": ids, "attention_mask": torch.tensor(
            [[1, 1, 1, 0]])}, max_new_tokens=1)
    with pytest.raises(PaddingError, match="gaps"):
        explain_generation(model, tok, {"input_ids": ids, "attention_mask": torch.tensor(
            [[1, 0, 1, 1]])}, max_new_tokens=1)
    with pytest.raises(InputError, match="2 prompts need a list of 2 continuations"):
        explain_continuation(model, tok, ["a b", "c d"], [" e"])
    with pytest.raises(EmptyInputError):
        explain_generation(model, tok, ["fine prompt", "  "], max_new_tokens=1)


def test_bad_options(tiny_causal_lm, tiny_text_classifier) -> None:
    model, tok = tiny_causal_lm
    with pytest.raises(InputError, match="max_new_tokens"):
        explain_generation(model, tok, "hi", max_new_tokens=0)
    with pytest.raises(ValueError, match="mode"):
        explain_continuation(model, tok, "hi", " there", mode="signed")
    with pytest.raises(InputError, match="prompt must be"):
        explain_generation(model, tok, 42, max_new_tokens=1)
    clf, clf_tok = tiny_text_classifier
    with pytest.raises(Exception, match="unknown class name"):
        explain_text(clf, clf_tok, "a day", target="neutral")
