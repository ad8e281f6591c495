"""``explain_generation`` / ``explain_continuation``: every generated token explained.

The text is generated once; then the full sequence (prompt + generation) is explained in one
batched pass: the sequence is replicated along the batch dimension and row ``k`` is seeded with
a one-hot at (position of generated token ``k`` − 1, its token id). No export or forward per
generated token. For models whose ``forward`` takes ``logits_to_keep`` (Hugging Face causal
LMs), only the logits at the explained positions are computed. Sequences are right-padded to a
multiple of ``bucket`` tokens (``attention_mask`` 0): in a causal model later positions cannot
change earlier ones, so the padding leaves the explanation unchanged and captures are reused.

Memory: every row of a batch records its own copy of the forward activations, so the default
``batch_size=2`` keeps peak memory within about 1.5x a forward + gradient pass (SmolLM2-135M,
144 tokens); larger batches trade memory for speed on parallel hardware.

Padding in a given prompt: left padding is removed (the explanation is that of the unpadded
prompt); right padding raises :class:`PaddingError`, because a model generating after pad tokens
does not continue the prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dlbacktrace.engine.backtrace import MODES, Backtrace
from dlbacktrace.engine.errors import InputError
from dlbacktrace.engine.state import inference_state, seeded
from dlbacktrace.tasks.text.checks import (
    EmptyInputError,
    PaddingError,
    check_context,
    check_language_model,
    check_tokenizer,
    context_length,
)
from dlbacktrace.tasks.text.runner import (
    backtrace_for,
    batch_sizes,
    bucket_length,
    forward_accepts,
    pad_right,
)
from dlbacktrace.tasks.text.tokens import TokenRelevance, TokenTable, token_tables

__all__ = [
    "GenerationExplanation",
    "explain_continuation",
    "explain_generation",
    "explain_sequences",
]

Prompt = str | Sequence[Mapping[str, str]] | Mapping[str, Any] | torch.Tensor


@dataclass
class GenerationExplanation:
    """Relevance of every earlier token for each generated token.

    ``matrix[k, j]``: relevance of token ``j`` (prompt or earlier generated token) for generated
    token ``k`` (sequence position ``prompt_length + k``); columns ``j ≥ prompt_length + k`` are
    exactly 0. Unsigned in default mode; the signed map (positive − negative) in contrast
    mode, where ``total`` is ``|matrix|``. ``probabilities[k]``: the model's probability of
    generated token ``k`` (plain softmax of the same logits, temperature 1).
    """

    ids: torch.Tensor  # [L] prompt + generated token ids
    prompt_length: int
    table: TokenTable
    matrix: torch.Tensor  # [G, L]
    total: torch.Tensor  # [G, L]
    positive: torch.Tensor | None
    negative: torch.Tensor | None
    probabilities: torch.Tensor  # [G]
    generated_text: str
    prompt_text: str
    mode: str
    attention: str
    conservation_error: float
    top_k: int = 5

    @property
    def generated_ids(self) -> torch.Tensor:
        return self.ids[self.prompt_length :]

    @property
    def steps(self) -> int:
        return int(self.matrix.shape[0])

    @property
    def tokens(self) -> list[str]:
        """Decoded text of every token of the sequence."""
        return list(self.table.texts)

    @property
    def generated_tokens(self) -> list[str]:
        return self.table.texts[self.prompt_length :]

    def context(self, step: int) -> list[TokenRelevance]:
        """The tokens before generated token ``step``, with their relevance for it."""
        stop = self.prompt_length + step
        return self.table.slice(stop).rows(self.matrix[step, :stop].numpy())

    def prompt_relevance(self, step: int = 0) -> torch.Tensor:
        """Relevance of the prompt tokens for generated token ``step``."""
        return self.matrix[step, : self.prompt_length]

    def top_contributors(self, step: int, k: int | None = None) -> list[TokenRelevance]:
        """The ``k`` most relevant earlier tokens for generated token ``step`` (special tokens
        such as chat markers included; they are flagged)."""
        rows = self.context(step)
        return sorted(rows, key=lambda r: -r.relevance)[: k or self.top_k]

    @property
    def top_tokens(self) -> list[list[TokenRelevance]]:
        """``top_contributors`` of every step."""
        return [self.top_contributors(s) for s in range(self.steps)]

    # ---- display (dlbacktrace.tasks.text.display) ----------------------------------------
    def to_html(self, full_page: bool = False) -> str:
        from dlbacktrace.tasks.text.display import generation_html

        return generation_html(self, full_page=full_page)

    def _repr_html_(self) -> str:
        return self.to_html()

    def save_html(self, path: str | Path) -> Path:
        from dlbacktrace.tasks.text.display import save_html

        return save_html(self.to_html(full_page=True), path)

    def plot(self, ax: Any = None, max_columns: int | None = None) -> Any:
        """A matplotlib figure of the relevance matrix (generated × earlier tokens)."""
        from dlbacktrace.tasks.text.display import plot_generation_matrix

        return plot_generation_matrix(self, ax=ax, max_columns=max_columns)

    def __rich__(self) -> Any:
        from dlbacktrace.tasks.text.display import generation_rich

        return generation_rich(self)


# ---- prompts ----------------------------------------------------------------------------------
def _encode_prompt(tokenizer: Any, prompt: Prompt) -> tuple[torch.Tensor, str]:
    """Token ids ``[P]`` of the prompt and its text."""
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


def _check(model: torch.nn.Module, tokenizer: Any, ids: torch.Tensor, n_new: int,
           check_vocabulary: bool) -> None:
    check_language_model(model)
    if ids.numel() == 0:
        raise EmptyInputError("the prompt has no tokens")
    if check_vocabulary:
        check_tokenizer(model, tokenizer, ids, causal=True)
    check_context(model, ids.numel(), what="the prompt")
    check_context(model, ids.numel() + n_new, what=f"the prompt plus {n_new} new tokens")


# ---- the batched explanation of a whole sequence ----------------------------------------------
def explain_sequence(
    model: torch.nn.Module,
    tokenizer: Any,
    ids: torch.Tensor,
    prompt_length: int,
    *,
    prompt_text: str = "",
    **options: Any,
) -> GenerationExplanation:
    """Explain tokens ``prompt_length..L-1`` of the sequence ``ids`` ``[L]`` (teacher forcing).
    ``options``: ``mode``, ``attention``, ``batch_size``, ``bucket``, ``top_k``, ``backtrace``."""
    return explain_sequences(model, tokenizer, [(ids, prompt_length, prompt_text)], **options)[0]


def explain_sequences(
    model: torch.nn.Module,
    tokenizer: Any,
    sequences: Sequence[tuple[torch.Tensor, int, str]],
    *,
    mode: str = "default",
    attention: str | None = None,
    batch_size: int = 2,
    bucket: int = 32,
    top_k: int = 5,
    backtrace: Backtrace | None = None,
) -> list[GenerationExplanation]:
    """Explain ``(ids [L], prompt_length, prompt_text)`` sequences together: one row per
    explained token, rows of different sequences share batches (each row right-padded to the
    longest sequence's bucket), so several prompts cost no extra capture."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if not sequences:
        raise EmptyInputError("no sequences to explain")
    for ids, prompt_length, _ in sequences:
        if prompt_length < 1 or ids.numel() - prompt_length < 1:
            raise EmptyInputError("need at least one prompt token and one token to explain")
    device = model.get_output_embeddings().weight.device
    vocab = model.get_output_embeddings().weight.shape[0]
    lengths = [ids.numel() for ids, _, _ in sequences]
    width = bucket_length(max(lengths), bucket, context_length(model))
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
    kwargs: dict[str, Any] = {"use_cache": False} if forward_accepts(model, "use_cache") else {}
    if forward_accepts(model, "logits_to_keep"):
        needed = torch.unique(row_pos)  # sorted; the same for every batch: one capture
        kept = bucket_length(needed.numel(), 8, width)
        kwargs["logits_to_keep"] = torch.cat([needed, needed[-1:].expand(kept - needed.numel())])
        row_out = torch.searchsorted(needed, row_pos)  # logits row of each explained token
    else:
        kept, row_out = width, row_pos
    bt = backtrace_for(model, backtrace)
    totals, nets, probs = [], [], []
    errors = torch.zeros(len(sequences), dtype=torch.float64)
    start = 0
    for size in batch_sizes(rows, batch_size):
        real = min(size, rows - start)
        part = slice(start, start + real)
        batch_rows = torch.arange(start, start + size, device=device).clamp_max(rows - 1)
        seed = torch.zeros(size, kept, vocab, device=device)
        here = torch.arange(real, device=device)
        seed[here, row_out[part], row_tok[part]] = 1.0  # padding rows (beyond real) stay 0
        which = row_seq[batch_rows]
        exp = bt.explain(
            input_ids=table_ids[which], attention_mask=table_mask[which], seed=seed, mode=mode,
            attention=attention, **kwargs,
        )  # fmt: skip
        logits = exp.output[here, row_out[part]].float()
        probs.append(torch.softmax(logits, -1).gather(1, row_tok[part, None])[:, 0])
        totals.append(exp.total_by_name["input_ids"][:real])
        nets.append(exp.relevance_by_name["input_ids"][:real])
        for k in torch.unique(row_seq[part]).tolist():
            errors[k] = max(float(errors[k]), exp.conservation_error)
        start += size
    total, net = torch.cat(totals).float().cpu(), torch.cat(nets).float().cpu()
    prob = torch.cat(probs).cpu()
    row_seq = row_seq.cpu()
    out = []
    for k, ((ids, prompt_length, text), n) in enumerate(zip(sequences, lengths, strict=True)):
        mine = row_seq == k
        t, r = total[mine, :n], net[mine, :n]
        positive = negative = None
        if mode == "contrast":
            positive, negative = r.clamp_min(0), (-r).clamp_min(0)
        ids_cpu = ids.cpu()
        out.append(GenerationExplanation(
            ids=ids_cpu,
            prompt_length=prompt_length,
            table=token_tables(tokenizer, ids_cpu[None])[0],
            matrix=r if mode == "contrast" else t,
            total=t,
            positive=positive,
            negative=negative,
            probabilities=prob[mine],
            generated_text=tokenizer.decode(ids_cpu[prompt_length:], skip_special_tokens=True),
            prompt_text=text or tokenizer.decode(ids_cpu[:prompt_length]),
            mode=mode,
            attention=bt.attention_for(mode, attention),
            conservation_error=float(errors[k]),
            top_k=top_k,
        ))  # fmt: skip
    return out


def _several(prompt: Any) -> list[Any] | None:
    """The prompts of a multi-prompt call, or None for one prompt: a list of strings or of id
    tensors, a list of chat conversations, or a 2-D batch of ids / an encoding with more than
    one row."""
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


def explain_generation(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: Prompt | Sequence[Prompt],
    max_new_tokens: int = 32,
    do_sample: bool = False,
    seed: int = 0,
    *,
    mode: str = "default",
    attention: str | None = None,
    top_k: int = 5,
    batch_size: int = 2,
    bucket: int = 32,
    backtrace: Backtrace | None = None,
    check_vocabulary: bool = True,
    **generate_kwargs: Any,
) -> GenerationExplanation | list[GenerationExplanation]:
    """Generate from ``prompt`` (greedy, or sampling seeded by ``seed``) and explain every
    generated token with respect to all tokens before it.

    ``prompt``: a string, chat messages (``[{"role": "user", "content": ...}]``, formatted with
    the tokenizer's chat template and a generation prompt), token ids or an encoding.
    Several prompts (a list of strings or of conversations, or a left-padded batch) give a
    list: each prompt is generated as if alone (same ``seed``), and all their tokens are
    explained together in shared batches.
    ``generate_kwargs`` go to ``model.generate`` (e.g. ``temperature``, ``top_p``).
    """
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be at least 1, got {max_new_tokens}")
    prompts = _several(prompt)
    encoded = [_encode_prompt(tokenizer, p) for p in (prompts or [prompt])]
    for ids, _ in encoded:
        _check(model, tokenizer, ids, max_new_tokens, check_vocabulary)
    device = model.get_output_embeddings().weight.device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sequences = []
    for ids, text in encoded:  # generation is sequential per token anyway; one prompt at a time
        with inference_state(model), torch.no_grad(), seeded(seed, device):  # streams restored
            out = model.generate(
                input_ids=ids[None].to(device),
                attention_mask=torch.ones(1, ids.numel(), dtype=torch.long, device=device),
                max_new_tokens=max_new_tokens,
                do_sample=do_sample,
                pad_token_id=pad,
                **generate_kwargs,
            )
        sequences.append((out[0].cpu(), ids.numel(), text))
    result = explain_sequences(
        model, tokenizer, sequences, mode=mode, attention=attention, batch_size=batch_size,
        bucket=bucket, top_k=top_k, backtrace=backtrace,
    )  # fmt: skip
    return result if prompts is not None else result[0]


def explain_continuation(
    model: torch.nn.Module,
    tokenizer: Any,
    prompt: Prompt | Sequence[Prompt],
    continuation: str | torch.Tensor | Sequence[str | torch.Tensor],
    *,
    mode: str = "default",
    attention: str | None = None,
    top_k: int = 5,
    batch_size: int = 2,
    bucket: int = 32,
    backtrace: Backtrace | None = None,
    check_vocabulary: bool = True,
) -> GenerationExplanation | list[GenerationExplanation]:
    """Explain a given answer to ``prompt`` (teacher forcing), without generating.

    A string ``continuation`` is tokenized on its own (no special tokens) and appended to the
    prompt's tokens; pass token ids to control the split exactly. Several prompts take a list
    of continuations of the same length and give a list.
    """
    prompts = _several(prompt)
    pairs = [(prompt, continuation)]
    if prompts is not None:
        if not isinstance(continuation, (list, tuple)) or len(continuation) != len(prompts):
            raise InputError(
                f"{len(prompts)} prompts need a list of {len(prompts)} continuations"
            )
        pairs = list(zip(prompts, continuation, strict=True))
    sequences = []
    for one_prompt, one_continuation in pairs:
        ids, text = _encode_prompt(tokenizer, one_prompt)
        cont_ids = _continuation_ids(tokenizer, one_continuation)
        _check(model, tokenizer, ids, cont_ids.numel(), check_vocabulary)
        if check_vocabulary:
            check_tokenizer(model, tokenizer, cont_ids, causal=True)
        sequences.append((torch.cat([ids, cont_ids]), ids.numel(), text))
    result = explain_sequences(
        model, tokenizer, sequences, mode=mode, attention=attention, batch_size=batch_size,
        bucket=bucket, top_k=top_k, backtrace=backtrace,
    )  # fmt: skip
    return result if prompts is not None else result[0]


def _continuation_ids(tokenizer: Any, continuation: str | torch.Tensor) -> torch.Tensor:
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
