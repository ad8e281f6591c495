"""Explaining given token sequences, one relevance stream per explained token (teacher forcing).

Each sequence (prompt + tokens to explain) is recorded once; stream ``k`` is seeded with a
one-hot at (position of token ``k`` − 1, its token id), so the forward record and the shares
are shared by every token and only the transposed ops run per token (``Backtrace.explain``
with ``seeds=``). For models whose ``forward`` limits the logits to some positions (the family's
``keep_logits`` keyword, :mod:`dlbacktrace.tasks.hf`), only the logits at the explained
positions are computed. A sequence is right-padded only to a multiple of ``bucket`` tokens
when asked (``attention_mask`` 0; in a causal model later positions cannot change earlier ones).

Memory: one record per sequence; each stream adds the relevance of the values in flight during
the sweep, so ``batch_size`` tokens per call trades memory for fewer sweeps.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from dlbacktrace.engine.backtrace import MODES, Backtrace
from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.tasks.hf import export_options, logits_keyword, output_embedding
from dlbacktrace.tasks.text.checks import EmptyInputError, context_length
from dlbacktrace.tasks.text.runner import backtrace_for, batch_sizes, bucket_length, pad_right
from dlbacktrace.tasks.text.tokens import token_tables
from dlbacktrace.tasks.text.views import TOKENS, GenerationExplanation, first_tokens

__all__ = ["SequenceOptions", "explain_sequences"]


@dataclass(frozen=True)
class SequenceOptions:
    """How the generation helpers explain: the options of ``explain_generation`` and
    ``explain_continuation`` (given to them as keywords).

    ``mode``: ``"default"`` or ``"contrast"``; ``attention``: the attention rule (None: the
    mode's default); ``top_k``: how many contributors ``top_tokens`` lists; ``batch_size``:
    explained tokens per engine call (streams on one record); ``bucket``: a sequence is padded
    to a multiple of this many tokens (1: not padded; captures serve any length, a bucket only
    limits the captures of a model that cannot be exported with dynamic sizes); ``backtrace``:
    a :class:`Backtrace` of the model to reuse (None: a cached one);
    ``check_vocabulary``: check that the tokenizer belongs to the model.
    """

    mode: str = "default"
    attention: str | None = None
    top_k: int = 5
    batch_size: int = 16
    bucket: int = 1
    backtrace: Backtrace | None = None
    check_vocabulary: bool = True

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {self.batch_size}")

    @classmethod
    def split(cls, keywords: dict[str, Any]) -> tuple[SequenceOptions, dict[str, Any]]:
        """The options among ``keywords``, and the keywords that are not options.

        Parameters
        ----------
        keywords
            Keyword arguments of a helper call.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        mine = {k: v for k, v in keywords.items() if k in names}
        return cls(**mine), {k: v for k, v in keywords.items() if k not in names}


def _token_rows(exp: Explanation, out_rows: torch.Tensor, tokens: torch.Tensor) -> Explanation:
    """A call's explanation with one row per explained token: the logits (and seed) of the
    position predicting the token, the token as target; on the CPU."""
    here = torch.arange(len(exp), device=exp.output.device)
    return dataclasses.replace(
        exp, output=exp.output[here, out_rows], seed=exp.seed[here, out_rows], target=tokens,
    ).to("cpu")


def _explain_one(bt: Backtrace, model: torch.nn.Module, ids: torch.Tensor, prompt_length: int,
                 options: SequenceOptions, pad: int) -> Explanation:
    """Every token after the prompt of one sequence: one record, ``batch_size`` streams per
    call; rows in token order, maps cut to the sequence's own length."""
    head = output_embedding(model).weight
    device, vocab = head.device, head.shape[0]
    n = ids.numel()
    width = bucket_length(n, options.bucket, context_length(model))
    table_ids, table_mask = pad_right(ids[None].to(device),
                                      torch.ones(1, n, dtype=torch.long, device=device), width, pad)
    positions = torch.arange(prompt_length - 1, n - 1, device=device)  # predicting each token
    tokens = ids[prompt_length:].to(device)
    kwargs: dict[str, Any] = export_options(model)
    keep = logits_keyword(model)
    if keep is not None:
        kwargs[keep] = positions
        row_out = torch.arange(positions.numel(), device=device)  # logits row of each token
        kept = positions.numel()
    else:
        row_out, kept = positions, width
    parts = []
    start = 0
    for size in batch_sizes(tokens.numel(), options.batch_size):
        part = slice(start, start + size)
        seeds = torch.zeros(size, 1, kept, vocab, device=device)
        seeds[torch.arange(size, device=device), 0, row_out[part], tokens[part]] = 1.0
        exp = bt.explain(input_ids=table_ids, attention_mask=table_mask, seeds=seeds,
                         mode=options.mode, attention=options.attention, **kwargs)
        parts.append(_token_rows(exp, row_out[part], tokens[part]))
        start += size
    return first_tokens(Explanation.concat(parts), n)


def explain_sequences(
    model: torch.nn.Module,
    tokenizer: Any,
    sequences: Sequence[tuple[torch.Tensor, int, str]],
    options: SequenceOptions | None = None,
) -> list[GenerationExplanation]:
    """Explain ``(ids [L], prompt_length, prompt_text)`` sequences.

    One row per explained token; each sequence is recorded once and its tokens are explained
    as streams on that record, ``batch_size`` per engine call.

    Parameters
    ----------
    model
        The causal language model whose next-token logits are explained.
    tokenizer
        Decodes the token tables and texts of the results; its pad id fills any padding.
    sequences
        The sequences, each with its prompt length and prompt text ("" to decode it).
    options
        How to explain (None: the defaults).
    """
    options = options or SequenceOptions()
    if not sequences:
        raise EmptyInputError("no sequences to explain")
    for ids, prompt_length, _ in sequences:
        if prompt_length < 1 or ids.numel() - prompt_length < 1:
            raise EmptyInputError("need at least one prompt token and one token to explain")
    bt = backtrace_for(model, options.backtrace)
    pad = tokenizer.pad_token_id or 0
    attention = bt.attention_for(options.mode, options.attention)
    out = []
    for ids, prompt_length, text in sequences:
        ids_cpu = ids.cpu()
        mine = _explain_one(bt, model, ids_cpu, prompt_length, options, pad)
        table = token_tables(tokenizer, ids_cpu[None])[0]
        mine = dataclasses.replace(mine, tokens=[list(table.texts)] * len(mine),
                                   token_input=TOKENS)
        out.append(GenerationExplanation(
            explanation=mine,
            prompt_length=prompt_length,
            table=table,
            generated_text=tokenizer.decode(ids_cpu[prompt_length:], skip_special_tokens=True),
            prompt_text=text or tokenizer.decode(ids_cpu[:prompt_length]),
            attention=attention,
            top_k=options.top_k,
        ))  # fmt: skip
    return out
