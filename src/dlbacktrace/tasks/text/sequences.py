"""Explaining given token sequences, one batch row per explained token (teacher forcing).

Each sequence (prompt + tokens to explain) is replicated along the batch dimension and row
``k`` is seeded with a one-hot at (position of token ``k`` − 1, its token id): no export or
forward per token. For models whose ``forward`` limits the logits to some positions (the
family's ``keep_logits`` keyword, :mod:`dlbacktrace.tasks.hf`), only the logits at the explained
positions are computed. Sequences are right-padded to the longest (or a multiple of ``bucket``
tokens; ``attention_mask`` 0): in a causal model later positions cannot change earlier ones, so
the padding leaves the explanation unchanged; the engine's capture serves any length.

Memory: every row of a batch records its own copy of the forward activations, so the default
``batch_size=2`` keeps peak memory within about 1.5x a forward + gradient pass (SmolLM2-135M,
144 tokens); larger batches trade memory for speed on parallel hardware.
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
    explained tokens per engine call; ``bucket``: sequences are padded to a multiple of this
    many tokens (1: to the longest; captures serve any length, a bucket only limits the captures
    of a model that cannot be exported with dynamic sizes); ``backtrace``: a :class:`Backtrace`
    of the model to reuse (None: a cached one);
    ``check_vocabulary``: check that the tokenizer belongs to the model.
    """

    mode: str = "default"
    attention: str | None = None
    top_k: int = 5
    batch_size: int = 2
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


def _token_rows(exp: Explanation, real: int, out_rows: torch.Tensor,
                tokens: torch.Tensor) -> Explanation:
    """A batch's explanation with one row per explained token: the first ``real`` rows, the
    logits (and seed) of the position predicting the token, the token as target; on the CPU."""
    here = torch.arange(real, device=exp.output.device)
    rows = exp[:real]
    return dataclasses.replace(
        rows, output=exp.output[here, out_rows], seed=exp.seed[here, out_rows], target=tokens,
    ).to("cpu")


def explain_sequences(
    model: torch.nn.Module,
    tokenizer: Any,
    sequences: Sequence[tuple[torch.Tensor, int, str]],
    options: SequenceOptions | None = None,
) -> list[GenerationExplanation]:
    """Explain ``(ids [L], prompt_length, prompt_text)`` sequences together.

    One row per explained token; rows of different sequences share batches (each row
    right-padded to the longest sequence), so several prompts cost no extra engine call.

    Parameters
    ----------
    model
        The causal language model whose next-token logits are explained.
    tokenizer
        Decodes the token tables and texts of the results; its pad id fills the padding.
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
    head = output_embedding(model).weight
    device, vocab = head.device, head.shape[0]
    lengths = [ids.numel() for ids, _, _ in sequences]
    width = bucket_length(max(lengths), options.bucket, context_length(model))
    pad = tokenizer.pad_token_id or 0
    padded = [
        pad_right(ids[None].to(device), torch.ones(1, n, dtype=torch.long, device=device), width,
                  pad)
        for (ids, _, _), n in zip(sequences, lengths, strict=True)
    ]  # fmt: skip
    table_ids = torch.cat([i for i, _ in padded])
    table_mask = torch.cat([m for _, m in padded])
    # one row per explained token: its sequence, the position predicting it, the token
    row_seq = torch.cat([torch.full((n - p,), k) for k, ((_, p, _), n) in
                         enumerate(zip(sequences, lengths, strict=True))]).to(device)  # fmt: skip
    row_pos = torch.cat([torch.arange(p - 1, n - 1) for (_, p, _), n in
                         zip(sequences, lengths, strict=True)]).to(device)  # fmt: skip
    row_tok = torch.cat([ids[p:] for ids, p, _ in sequences]).to(device)
    rows = row_seq.numel()
    kwargs: dict[str, Any] = export_options(model)
    keep = logits_keyword(model)
    if keep is not None:
        needed = torch.unique(row_pos)  # sorted; the same for every batch
        kept = needed.numel()
        kwargs[keep] = needed
        row_out = torch.searchsorted(needed, row_pos)  # logits row of each explained token
    else:
        kept, row_out = width, row_pos
    bt = backtrace_for(model, options.backtrace)
    parts = []
    start = 0
    for size in batch_sizes(rows, options.batch_size):
        real = min(size, rows - start)
        part = slice(start, start + real)
        batch_rows = torch.arange(start, start + size, device=device).clamp_max(rows - 1)
        seed = torch.zeros(size, kept, vocab, device=device)
        seed[torch.arange(real, device=device), row_out[part], row_tok[part]] = 1.0  # pads: 0
        which = row_seq[batch_rows]
        exp = bt.explain(
            input_ids=table_ids[which], attention_mask=table_mask[which], seed=seed,
            mode=options.mode, attention=options.attention, **kwargs,
        )  # fmt: skip
        parts.append(_token_rows(exp, real, row_out[part], row_tok[part]))
        start += size
    every = Explanation.concat(parts)
    row_seq = row_seq.cpu()
    attention = bt.attention_for(options.mode, options.attention)
    out = []
    for k, ((ids, prompt_length, text), n) in enumerate(zip(sequences, lengths, strict=True)):
        ids_cpu = ids.cpu()
        table = token_tables(tokenizer, ids_cpu[None])[0]
        mine = first_tokens(every[row_seq == k], n)
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
