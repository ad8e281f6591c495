"""Prompts for the generation helpers: strings, chat messages, token ids or encodings -> ids.

Padding in a given prompt: left padding is removed (the explanation is that of the unpadded
prompt); right padding raises :class:`PaddingError`, because a model generating after pad tokens
does not continue the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from dlbacktrace.engine.errors import InputError
from dlbacktrace.tasks.text.checks import (
    EmptyInputError,
    PaddingError,
    check_context,
    check_language_model,
    check_tokenizer,
)

__all__ = [
    "Prompt",
    "check_prompt",
    "continuation_ids",
    "encode_prompt",
    "split_prompts",
]

Prompt = str | Sequence[Mapping[str, str]] | Mapping[str, Any] | torch.Tensor


def encode_prompt(tokenizer: Any, prompt: Prompt) -> tuple[torch.Tensor, str]:
    """Token ids ``[P]`` of one prompt and its text ("" for given ids).

    Parameters
    ----------
    tokenizer
        A Hugging Face tokenizer (a chat template is needed for chat messages).
    prompt
        A string, chat messages (``[{"role": ..., "content": ...}]``, formatted with the chat
        template and a generation prompt), a tensor of token ids or a mapping with
        ``input_ids`` (and optionally ``attention_mask``).
    """
    if isinstance(prompt, str):
        if not prompt.strip():
            raise EmptyInputError("the prompt is empty; there is nothing to explain")
        ids = tokenizer(prompt, return_tensors="pt")["input_ids"][0]
        return ids, prompt
    if isinstance(prompt, torch.Tensor) or isinstance(prompt, Mapping):
        return _given_ids(prompt), ""
    if isinstance(prompt, Sequence) and all(isinstance(m, Mapping) for m in prompt):
        if not prompt or not any(str(m.get("content", "")).strip() for m in prompt):
            raise EmptyInputError("the chat messages are empty; there is nothing to explain")
        text = tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True,
                                             tokenize=False)
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
        return ids, text
    raise InputError(
        "prompt must be a string, a list of chat messages ({'role': ..., 'content': ...}), "
        f"a tensor of token ids or a mapping with input_ids; got {type(prompt).__name__}"
    )


def _given_ids(prompt: Mapping[str, Any] | torch.Tensor) -> torch.Tensor:
    """Ids from a tensor or an encoding; left padding removed, right padding refused."""
    if isinstance(prompt, torch.Tensor):
        ids, mask = prompt, None
    else:
        if "input_ids" not in prompt:
            raise InputError("a mapping prompt needs 'input_ids'")
        ids, mask = torch.as_tensor(prompt["input_ids"]), prompt.get("attention_mask")
    ids = ids.reshape(-1, ids.shape[-1]) if ids.dim() else ids.reshape(1, 1)
    if ids.shape[0] != 1:
        raise InputError(f"explain one prompt at a time; got a batch of {ids.shape[0]}")
    ids = ids[0].long()
    if mask is None:
        if ids.numel() == 0:
            raise EmptyInputError("the prompt has no tokens")
        return ids
    keep = torch.as_tensor(mask).reshape(-1) != 0
    if keep.shape != ids.shape:
        raise InputError(f"attention_mask {tuple(keep.shape)} does not match input_ids")
    if not bool(keep.any()):
        raise EmptyInputError("the prompt's attention_mask is all zeros")
    first = int(keep.nonzero()[0])
    last = int(keep.nonzero()[-1])
    if not bool(keep[first : last + 1].all()):
        raise PaddingError("the prompt's attention_mask has gaps; give one contiguous prompt")
    if last != keep.numel() - 1:
        raise PaddingError(
            "the prompt is right-padded: a causal LM would generate after the pad tokens. "
            "Pad on the left (tokenizer.padding_side = 'left') or pass the unpadded prompt"
        )
    return ids[first:]  # left padding: dropped, positions then match the unpadded prompt


def continuation_ids(tokenizer: Any, continuation: str | torch.Tensor) -> torch.Tensor:
    """Token ids of a given answer: a string is tokenized on its own, without special tokens.

    Parameters
    ----------
    tokenizer
        The model's tokenizer.
    continuation
        The answer's text, or its token ids (to control the split exactly).
    """
    if isinstance(continuation, str):
        if not continuation:
            raise EmptyInputError("the continuation is empty; there is nothing to explain")
        cont_ids = tokenizer(continuation, add_special_tokens=False, return_tensors="pt")
        cont_ids = cont_ids["input_ids"][0]
    else:
        cont_ids = torch.as_tensor(continuation).reshape(-1).long()
    if cont_ids.numel() == 0:
        raise EmptyInputError("the continuation has no tokens")
    return cont_ids


def check_prompt(model: torch.nn.Module, tokenizer: Any, ids: torch.Tensor, n_new: int,
                 check_vocabulary: bool) -> None:
    """The model is a language model, and the prompt plus ``n_new`` tokens fit its context.

    Parameters
    ----------
    model
        The causal language model.
    tokenizer
        Its tokenizer.
    ids
        The prompt's token ids ``[P]``.
    n_new
        How many tokens follow the prompt.
    check_vocabulary
        Also check that the tokenizer belongs to the model.
    """
    check_language_model(model)
    if ids.numel() == 0:
        raise EmptyInputError("the prompt has no tokens")
    if check_vocabulary:
        check_tokenizer(model, tokenizer, ids, causal=True)
    check_context(model, ids.numel(), what="the prompt")
    check_context(model, ids.numel() + n_new, what=f"the prompt plus {n_new} new tokens")


def split_prompts(prompt: Any) -> list[Any] | None:
    """The prompts of a multi-prompt call, or None for one prompt.

    Several prompts are a list of strings or of id tensors, a list of chat conversations, or a
    2-D batch of ids / an encoding with more than one row.

    Parameters
    ----------
    prompt
        What the caller passed as ``prompt``.
    """
    if isinstance(prompt, (list, tuple)) and prompt:
        if all(isinstance(p, (str, torch.Tensor)) for p in prompt):
            return list(prompt)
        if all(isinstance(p, Sequence) and not isinstance(p, str) and p
               and all(isinstance(m, Mapping) for m in p) for p in prompt):  # fmt: skip
            return list(prompt)
        return None
    ids = prompt.get("input_ids") if isinstance(prompt, Mapping) else prompt
    if isinstance(ids, torch.Tensor) and ids.dim() == 2 and ids.shape[0] > 1:
        if isinstance(prompt, torch.Tensor):
            return list(prompt)
        return [{k: torch.as_tensor(v)[i] for k, v in prompt.items()}
                for i in range(ids.shape[0])]  # fmt: skip
    return None
