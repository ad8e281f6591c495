"""``explain_text``: per-token relevance for sequence classifiers and encoders with a head.

The texts are tokenized without padding, right-padded to a multiple of ``bucket`` tokens
(``attention_mask`` 0), and explained in chunks of a fixed batch size, so repeated calls reuse
one capture. Works with any model called as ``model(input_ids=..., attention_mask=...)`` that
returns ``[batch, classes]`` logits (a Hugging Face ``...ForSequenceClassification`` or an
encoder with a pooling head such as :class:`dlbacktrace.examples.zoo.SentenceClassifier`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlbacktrace.engine.backtrace import MODES, Backtrace
from dlbacktrace.engine.errors import InputError, TargetError
from dlbacktrace.tasks.text.checks import (
    EmptyInputError,
    check_context,
    check_tokenizer,
    context_length,
)
from dlbacktrace.tasks.text.runner import (
    backtrace_for,
    batch_sizes,
    bucket_length,
    forward_accepts,
    model_options,
)
from dlbacktrace.tasks.text.tokens import TokenRelevance, TokenTable, WordRelevance, token_tables

__all__ = ["TextExplanation", "explain_text"]


@dataclass
class TextExplanation:
    """Per-token relevance for a batch of texts (rows padded to the longest text).

    ``relevance`` is the unsigned map in default mode and the signed map (positive −
    negative; it adds up with the absorbed amounts to the explained logit) in contrast mode;
    ``total`` is the unsigned map (contrast: ``|relevance|``).
    """

    texts: list[str]
    input_ids: torch.Tensor  # [N, T]
    attention_mask: torch.Tensor  # [N, T]
    relevance: torch.Tensor  # [N, T]
    total: torch.Tensor  # [N, T]
    positive: torch.Tensor | None
    negative: torch.Tensor | None
    logits: torch.Tensor  # [N, C] (or [N] for a single logit)
    target: torch.Tensor  # [N]
    class_names: list[str] | None
    mode: str
    attention: str
    tables: list[TokenTable]
    conservation_error: float

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def probabilities(self) -> torch.Tensor:
        """Softmax over classes (sigmoid for a single logit)."""
        logits = self.logits
        if logits.dim() == 1 or logits.shape[-1] == 1:
            return torch.sigmoid(logits.reshape(len(self)))
        return torch.softmax(logits, dim=-1)

    def label(self, i: int = 0) -> str:
        """Name of the explained class of row ``i``."""
        t = int(self.target[i])
        return self.class_names[t] if self.class_names and t < len(self.class_names) else str(t)

    def tokens(self, i: int = 0) -> list[TokenRelevance]:
        """Every token of text ``i`` with its relevance (padding flagged)."""
        return self.tables[i].rows(self.relevance[i].numpy())

    def words(self, i: int = 0) -> list[WordRelevance]:
        """Relevance summed per word of text ``i`` (special and padding tokens left out)."""
        return self.tables[i].word_relevance(self.relevance[i].numpy())

    def top_tokens(self, i: int = 0, k: int = 5) -> list[TokenRelevance]:
        """The ``k`` most relevant content tokens of text ``i`` (by signed relevance in
        contrast mode, i.e. strongest evidence for the target first)."""
        rows = [r for r in self.tokens(i) if not (r.special or r.padding)]
        return sorted(rows, key=lambda r: -r.relevance)[:k]

    def top_words(self, i: int = 0, k: int = 5) -> list[WordRelevance]:
        """The ``k`` most relevant words of text ``i``."""
        return sorted(self.words(i), key=lambda w: -w.relevance)[:k]

    # ---- display (dlbacktrace.tasks.text.display) ----------------------------------------
    def to_html(self, full_page: bool = False) -> str:
        from dlbacktrace.tasks.text.display import text_html

        return text_html(self, full_page=full_page)

    def _repr_html_(self) -> str:
        return self.to_html()

    def save_html(self, path: str | Path) -> Path:
        """A standalone HTML page with the token heat maps."""
        from dlbacktrace.tasks.text.display import save_html

        return save_html(self.to_html(full_page=True), path)

    def __rich__(self) -> Any:
        from dlbacktrace.tasks.text.display import text_rich

        return text_rich(self)


def _class_names(model: torch.nn.Module, given: Sequence[str] | None) -> list[str] | None:
    if given is not None:
        return list(given)
    id2label = getattr(getattr(model, "config", None), "id2label", None)
    if isinstance(id2label, dict) and id2label:
        return [str(id2label[i]) for i in sorted(id2label)]
    return None


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
    bucket: int = 16,
    batch_size: int = 8,
    truncation: bool = False,
    max_length: int | None = None,
    class_names: Sequence[str] | None = None,
    backtrace: Backtrace | None = None,
    check_vocabulary: bool = True,
) -> TextExplanation:
    """Explain a classifier's output for one text or a list of texts, token by token.

    ``target``: class index or name (one, or one per text); None explains the predicted class.
    Texts longer than the model's context raise :class:`ContextLengthError` unless
    ``truncation=True`` (then they are cut to ``max_length`` tokens).
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

    names = _class_names(model, class_names)
    target = _targets(target, n, names)
    bt = backtrace_for(model, backtrace)
    options = model_options(model)
    device = next(iter(model.parameters()), torch.empty(0)).device
    totals, nets, logits, targets, errors = [], [], [], [], []
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
        maps = exp.relevance_by_name
        totals.append(exp.total_by_name["input_ids"][:real].cpu())
        nets.append(maps["input_ids"][:real].cpu())
        logits.append(exp.output[:real].cpu())
        targets.append(exp.target[:real].cpu())
        errors.append(exp.conservation_error)
        start += size

    total = torch.cat(totals)[:, :longest].float()
    net = torch.cat(nets)[:, :longest].float()
    positive = negative = None
    if mode == "contrast":
        positive, negative = net.clamp_min(0), (-net).clamp_min(0)
    tables = token_tables(
        tokenizer, ids[:, :longest], mask[:, :longest],
        encoding=enc if fast else None, offsets=offsets, sources=texts,
    )  # fmt: skip
    return TextExplanation(
        texts=texts,
        input_ids=ids[:, :longest],
        attention_mask=mask[:, :longest],
        relevance=net if mode == "contrast" else total,
        total=total,
        positive=positive,
        negative=negative,
        logits=torch.cat(logits),
        target=torch.cat(targets),
        class_names=names,
        mode=mode,
        attention=bt.attention_for(mode, attention),
        tables=tables,
        conservation_error=max(errors),
    )
