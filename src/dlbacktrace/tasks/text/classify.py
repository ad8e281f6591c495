"""``explain_text``: per-token relevance for sequence classifiers and encoders with a head.

The texts are tokenized without padding, right-padded to the longest (or to a multiple of
``bucket`` tokens; ``attention_mask`` 0) and explained in chunks of ``batch_size``; the engine's
capture has dynamic batch and sequence sizes, so every call reuses one capture. Works with any
model called as ``model(input_ids=..., attention_mask=...)`` that
returns ``[batch, classes]`` logits (a Hugging Face ``...ForSequenceClassification`` or an
encoder with a pooling head such as :class:`dlbacktrace.examples.zoo.SentenceClassifier`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from dlbacktrace.engine.backtrace import MODES, Backtrace
from dlbacktrace.engine.errors import InputError, TargetError
from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.tasks.hf import class_names as config_class_names
from dlbacktrace.tasks.hf import export_options, forward_accepts
from dlbacktrace.tasks.text.checks import (
    EmptyInputError,
    check_context,
    check_tokenizer,
    context_length,
)
from dlbacktrace.tasks.text.runner import backtrace_for, batch_sizes, bucket_length
from dlbacktrace.tasks.text.tokens import token_tables
from dlbacktrace.tasks.text.views import TextExplanation, first_tokens

__all__ = ["TextExplanation", "explain_text"]


def _targets(target: Any, n: int, names: list[str] | None) -> Any:
    if isinstance(target, str):
        if names and target in names:
            return names.index(target)
        if target not in ("positive", "negative"):  # single-logit keywords of the engine
            raise TargetError(f"unknown class name {target!r}; known: {names}")
        return target
    if isinstance(target, (list, tuple)) and len(target) != n:
        raise TargetError(f"give one target per text ({n}), got {len(target)}")
    if isinstance(target, (list, tuple)):
        return [names.index(t) if isinstance(t, str) and names and t in names else t
                for t in target]
    return target


def explain_text(
    model: torch.nn.Module,
    tokenizer: Any,
    text_or_texts: str | Sequence[str],
    target: int | str | Sequence[int | str] | None = None,
    mode: str = "default",
    *,
    attention: str | None = None,
    bucket: int = 1,
    batch_size: int = 8,
    truncation: bool = False,
    max_length: int | None = None,
    class_names: Sequence[str] | None = None,
    backtrace: Backtrace | None = None,
    check_vocabulary: bool = True,
) -> TextExplanation:
    """Explain a classifier's output for one text or a list of texts, token by token.

    Texts longer than the model's context raise :class:`ContextLengthError` unless
    ``truncation=True``.

    Parameters
    ----------
    model
        A classifier called as ``model(input_ids=..., attention_mask=...)`` returning
        ``[batch, classes]`` logits.
    tokenizer
        Its tokenizer.
    text_or_texts
        One text or a list of texts.
    target
        Class index or name (one, or one per text); None explains the predicted class.
    mode
        ``"default"`` or ``"contrast"``.
    attention
        The attention rule; None uses the mode's default.
    bucket
        Texts are padded to a multiple of this many tokens (1: to the longest text). Captures
        serve any length already; a bucket only limits the captures of a model that cannot be
        exported with dynamic sizes.
    batch_size
        Texts per engine call.
    truncation
        Cut texts longer than ``max_length`` (default: the model's context) instead of raising.
    max_length
        The truncation length.
    class_names
        Names of the classes; None reads them from the model's config (``id2label``).
    backtrace
        A :class:`Backtrace` of the model to reuse; None uses a cached one.
    check_vocabulary
        Check that the tokenizer belongs to the model.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    texts = [text_or_texts] if isinstance(text_or_texts, str) else list(text_or_texts)
    if not texts:
        raise EmptyInputError("no texts to explain")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise EmptyInputError(f"text {i} is empty; there are no tokens to explain")
    limit = context_length(model)
    cut = max_length if max_length is not None else limit
    fast = bool(getattr(tokenizer, "is_fast", False))
    enc = tokenizer(
        texts,
        padding=False,
        truncation=truncation,
        max_length=cut if truncation else None,
        return_offsets_mapping=fast,
    )
    lengths = [len(ids) for ids in enc["input_ids"]]
    check_context(model, max(lengths), what=f"text {int(np.argmax(lengths))}")
    n, longest = len(texts), max(lengths)
    width = bucket_length(longest, bucket, limit)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    use_types = "token_type_ids" in enc and forward_accepts(model, "token_type_ids")
    types = torch.zeros((n, width), dtype=torch.long) if use_types else None
    offsets = np.zeros((n, longest, 2), dtype=np.int64) if fast else None
    for i, row in enumerate(enc["input_ids"]):  # ragged lists -> one padded tensor
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
        if types is not None:
            types[i, : len(row)] = torch.tensor(enc["token_type_ids"][i])
        if offsets is not None:
            offsets[i, : len(row)] = np.asarray(enc["offset_mapping"][i], dtype=np.int64)
    if check_vocabulary:
        check_tokenizer(model, tokenizer, ids)

    names = list(class_names) if class_names is not None else config_class_names(model)
    target = _targets(target, n, names)
    bt = backtrace_for(model, backtrace)
    options = export_options(model)
    device = next(iter(model.parameters()), torch.empty(0)).device
    parts = []
    start = 0
    for size in batch_sizes(n, batch_size):
        rows = torch.arange(start, start + size).clamp(max=n - 1)  # pad with the last row
        real = min(size, n - start)
        inputs = {"input_ids": ids[rows].to(device), "attention_mask": mask[rows].to(device)}
        if types is not None:
            inputs["token_type_ids"] = types[rows].to(device)
        chunk_target = target
        if isinstance(target, (list, tuple)):
            chunk_target = [target[int(r)] for r in rows]
        elif isinstance(target, torch.Tensor) and target.dim() == 1:
            chunk_target = target[rows.to(target.device)]
        exp = bt.explain(
            target=chunk_target, mode=mode, attention=attention, **inputs, **options
        )
        if exp.output.dim() > 2:
            raise InputError(
                f"explain_text needs a classifier with [batch, classes] logits; this model "
                f"returns {tuple(exp.output.shape)} (for a causal LM use explain_generation)"
            )
        parts.append(exp[:real].to("cpu"))
        start += size

    tables = token_tables(
        tokenizer, ids[:, :longest], mask[:, :longest],
        encoding=enc if fast else None, offsets=offsets, sources=texts,
    )  # fmt: skip
    every = first_tokens(Explanation.concat(parts), longest)
    every = dataclasses.replace(every, tokens=[list(t.texts) for t in tables],
                                token_input="input_ids", output_names=names)
    return TextExplanation(
        explanation=every,
        texts=texts,
        tables=tables,
        attention=bt.attention_for(mode, attention),
    )
