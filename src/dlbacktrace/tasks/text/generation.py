"""``explain_generation`` / ``explain_continuation``: every generated (or given) token explained.

The text is generated once (or the answer is given); then the full sequence (prompt +
answer) is explained in one batched pass (:mod:`dlbacktrace.tasks.text.sequences`). Prompts
are read by :mod:`dlbacktrace.tasks.text.prompts`, results are
:class:`~dlbacktrace.tasks.text.views.GenerationExplanation` views. Both entry points take the
same explanation options, :class:`~dlbacktrace.tasks.text.sequences.SequenceOptions`, as
keywords (``mode``, ``attention``, ``top_k``, ``batch_size``, ``bucket``, ``backtrace``,
``check_vocabulary``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from dlbacktrace.engine.errors import InputError
from dlbacktrace.engine.state import inference_state, seeded
from dlbacktrace.tasks.hf import output_embedding
from dlbacktrace.tasks.text.checks import check_tokenizer
from dlbacktrace.tasks.text.prompts import (
    Prompt,
    check_prompt,
    continuation_ids,
    encode_prompt,
    split_prompts,
)
from dlbacktrace.tasks.text.sequences import SequenceOptions, explain_sequences
from dlbacktrace.tasks.text.views import GenerationExplanation

__all__ = ["GenerationExplanation", "SequenceOptions", "explain_continuation",
           "explain_generation"]

# (prompt ids [P], the prompt's own answer) -> the answer's ids
Answer = Callable[[torch.Tensor, Any], torch.Tensor]


def _explain(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: Any,
    answers: Any,
    answer: Answer,
    options: SequenceOptions,
    check: Callable[[torch.Tensor], None] | None = None,
) -> GenerationExplanation | list[GenerationExplanation]:
    """One prompt or several: encode each (``check`` them all first), get each one's answer,
    explain all answers together."""
    prompts = split_prompts(prompt)
    pairs = [(prompt, answers)]
    if prompts is not None:
        if answers is not None and (not isinstance(answers, (list, tuple))
                                    or len(answers) != len(prompts)):
            raise InputError(
                f"{len(prompts)} prompts need a list of {len(prompts)} continuations"
            )
        pairs = list(zip(prompts, answers if answers is not None else [None] * len(prompts),
                         strict=True))
    encoded = [(encode_prompt(tokenizer, p), a) for p, a in pairs]
    for (ids, _), _ in encoded:
        if check is not None:
            check(ids)
    sequences = []
    for (ids, text), given in encoded:
        tail = answer(ids, given)
        sequences.append((torch.cat([ids, tail]), ids.numel(), text))
    result = explain_sequences(model, tokenizer, sequences, options)
    return result if prompts is not None else result[0]


def explain_generation(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: Prompt | Sequence[Prompt],
    max_new_tokens: int = 32,
    do_sample: bool = False,
    seed: int = 0,
    **keywords: Any,
) -> GenerationExplanation | list[GenerationExplanation]:
    """Generate from ``prompt`` (greedy, or sampling seeded by ``seed``) and explain every
    generated token with respect to all tokens before it.

    Several prompts (a list of strings or of conversations, or a left-padded batch) give a
    list: each prompt is generated as if alone (same ``seed``), and all their tokens are
    explained together in shared batches.

    Parameters
    ----------
    model
        A causal language model (``AutoModelForCausalLM``).
    tokenizer
        Its tokenizer.
    prompt
        A string, chat messages (``[{"role": "user", "content": ...}]``, formatted with the
        tokenizer's chat template and a generation prompt), token ids or an encoding; or
        several of them.
    max_new_tokens
        How many tokens to generate.
    do_sample
        Sample instead of greedy decoding.
    seed
        The sampling seed (the caller's random streams are restored).
    **keywords
        :class:`SequenceOptions` fields (``mode``, ``attention``, ``top_k``, ``batch_size``,
        ``bucket``, ``backtrace``, ``check_vocabulary``); the others go to
        ``model.generate`` (e.g. ``temperature``, ``top_p``).
    """
    options, generate_kwargs = SequenceOptions.split(keywords)
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def generate(ids: torch.Tensor, _: Any) -> torch.Tensor:
        # generation is sequential per token anyway; one prompt at a time, streams restored
        device = output_embedding(model).weight.device
        with inference_state(model), torch.no_grad(), seeded(seed, device):
            out = model.generate(
                input_ids=ids[None].to(device),
                attention_mask=torch.ones(1, ids.numel(), dtype=torch.long, device=device),
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                pad_token_id=pad,
                **generate_kwargs,
            )
        return out[0, ids.numel():].cpu()

    def check(ids: torch.Tensor) -> None:  # every prompt, before generating for any
        check_prompt(model, tokenizer, ids, max_new_tokens, options.check_vocabulary)

    return _explain(model, tokenizer, prompt, None, generate, options, check)


def explain_continuation(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: Prompt | Sequence[Prompt],
    continuation: str | torch.Tensor | Sequence[str | torch.Tensor],
    **options: Any,
) -> GenerationExplanation | list[GenerationExplanation]:
    """Explain a given answer to ``prompt`` (teacher forcing), without generating.

    Parameters
    ----------
    model
        A causal language model.
    tokenizer
        Its tokenizer.
    prompt
        As in :func:`explain_generation`; several prompts give a list.
    continuation
        The answer: a string (tokenized on its own, no special tokens, appended to the
        prompt's tokens) or token ids (to control the split exactly); one per prompt.
    **options
        :class:`SequenceOptions` fields.
    """
    settings = SequenceOptions(**options)

    def given(ids: torch.Tensor, answer: Any) -> torch.Tensor:
        cont_ids = continuation_ids(tokenizer, answer)
        check_prompt(model, tokenizer, ids, cont_ids.numel(), settings.check_vocabulary)
        if settings.check_vocabulary:
            check_tokenizer(model, tokenizer, cont_ids, causal=True)
        return cont_ids

    return _explain(model, tokenizer, prompt, continuation, given, settings)
