"""Audit records of generations: prompt and generated token ids, the options that decide the
bits, and the relevance of every earlier token for each generated one.

A generation is verified by teacher forcing: the recorded tokens are explained again as a
given continuation (:func:`dlbacktrace.tasks.text.explain_continuation`), not generated again.
Re-generating would test the decoder (sampling, KV-cache arithmetic), while the record's claim
is about the explanation of the tokens that were actually produced.
"""

from __future__ import annotations

from typing import Any

import torch

from dlbacktrace.audit.codec import (
    StoredInputs,
    encode_explanation,
    encode_inputs,
    relevance_digest,
)
from dlbacktrace.io.digests import tensor_digest

__all__ = ["REPLAY_OPTIONS", "generation_parts", "replay_generation"]

# The SequenceOptions fields that change an explanation's bits (batch shapes, padding, rules).
REPLAY_OPTIONS = ("mode", "attention", "batch_size", "bucket")


def _jsonable(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)


def generation_parts(gen: Any, options: dict[str, Any] | None = None
                     ) -> tuple[dict[str, Any], bytes, bytes]:
    """The kind-specific content and the two blobs of a generation record.

    Parameters
    ----------
    gen
        A :class:`~dlbacktrace.tasks.text.GenerationExplanation`.
    options
        How it was made: :class:`~dlbacktrace.tasks.text.SequenceOptions` fields (the ones
        not given are the defaults) and the generation settings (``max_new_tokens``,
        ``do_sample``, ``seed``, ...), stored for the record.

    Returns
    -------
    ``(content, explanation_blob, inputs_blob)``.
    """
    from dlbacktrace.tasks.text import SequenceOptions

    defaults = SequenceOptions()
    given = {k: v for k, v in (options or {}).items() if k not in ("backtrace", "top_k")}
    stored_options = {k: _jsonable(v) for k, v in given.items()}
    for name in REPLAY_OPTIONS:
        stored_options.setdefault(name, getattr(defaults, name))
    stored_options["mode"] = gen.mode
    stored_options["attention"] = gen.attention
    ids = gen.ids.detach().cpu()
    prompt_ids, generated_ids = ids[: gen.prompt_length], ids[gen.prompt_length :]
    exp = gen.explanation
    tensors = {"prompt_ids": prompt_ids, "generated_ids": generated_ids}
    content = {
        "input": {
            "kind": "text",
            "digest": tensor_digest((), tensors),
            "shapes": [[k, list(v.shape)] for k, v in tensors.items()],
            "prompt_text": gen.prompt_text,
        },
        "generation": {
            "prompt_ids": prompt_ids.tolist(),
            "generated_ids": generated_ids.tolist(),
            "generated_tokens": list(gen.generated_tokens),
            "generated_text": gen.generated_text,
            "prompt_length": gen.prompt_length,
            # sequence positions of the explained tokens (each predicted from the one before)
            "positions": list(range(gen.prompt_length, ids.numel())),
        },
        "target": generated_ids.tolist(),
        "options": stored_options,
        "output": {
            "shape": list(exp.output.shape),
            "prediction": generated_ids.tolist(),
            "probabilities": [float(p) for p in gen.probabilities],
        },
        "relevance": {
            "digest": relevance_digest(exp),
            "input_names": list(exp.input_names),
            "dtype": str(next(iter(exp.total_by_name.values())).dtype),
            "conservation_error": float(exp.conservation_error),
            "absorbed_total": exp.total_absorbed,
        },
    }
    inputs = StoredInputs((), tensors)
    return content, encode_explanation(exp), encode_inputs(inputs)


def replay_generation(content: dict[str, Any], inputs: StoredInputs, model: torch.nn.Module,
                      tokenizer: Any, backtrace: Any = None) -> Any:
    """Explain the recorded tokens again by teacher forcing, with the recorded options.

    Parameters
    ----------
    content
        The record's content.
    inputs
        The record's stored inputs (``prompt_ids``, ``generated_ids``).
    model
        The causal language model.
    tokenizer
        Its tokenizer (its pad id fills the padding, as when the record was made).
    backtrace
        A :class:`~dlbacktrace.Backtrace` of ``model`` to reuse, or None.

    Returns
    -------
    The fresh :class:`~dlbacktrace.tasks.text.GenerationExplanation`.
    """
    from dlbacktrace.tasks.text import explain_continuation

    options = content.get("options") or {}
    replay = {k: options[k] for k in REPLAY_OPTIONS if k in options}
    return explain_continuation(
        model, tokenizer, inputs.kwargs["prompt_ids"], inputs.kwargs["generated_ids"],
        backtrace=backtrace, **replay,
    )
