"""Texts: strings, ``.txt`` (one text) and ``.jsonl`` (one per line); need the model's
tokenizer. Reports show per-token relevance."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch

from dlbacktrace.io.batch import InputBatch, InputFileError
from dlbacktrace.io.kinds.base import (
    InputKind,
    ReadOptions,
    RequestField,
    RequestLimits,
    RowInputs,
)

__all__ = ["TextKind", "decode_text", "text_batch", "texts_from_file"]


def decode_text(raw: bytes, name: str = "text") -> str:
    """Strict UTF-8 decoding: invalid bytes are an error, never silently replaced.

    Parameters
    ----------
    raw
        The bytes to decode.
    name
        What error messages call the text.
    """
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{name} is not valid UTF-8 text (byte {exc.start})") from exc


def texts_from_file(path: str | Path, field_name: str = "text") -> list[str]:
    """``.txt``: the whole file is one text; ``.jsonl``: one text per line (``field_name``).

    Parameters
    ----------
    path
        A ``.txt`` or ``.jsonl`` file.
    field_name
        The string field of each JSON line that holds the text.
    """
    path = Path(path)
    content = decode_text(path.read_bytes(), path.name)
    if path.suffix.lower() != ".jsonl":
        text = content.strip()
        if not text:
            raise InputFileError(f"{path.name} is empty")
        return [text]
    texts = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{path.name} line {number}: not JSON ({exc.msg})") from exc
        value = record.get(field_name) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise InputFileError(f"{path.name} line {number}: no string field {field_name!r}")
        texts.append(value)
    if not texts:
        raise InputFileError(f"{path.name} has no records")
    return texts


def text_batch(texts: list[str], tokenizer: Any, *, max_length: int = 512) -> InputBatch:
    """Tokenize ``texts`` (padded together) into ``input_ids``/``attention_mask`` keywords.

    Parameters
    ----------
    texts
        Non-empty strings.
    tokenizer
        A Hugging Face tokenizer (the loaded model's).
    max_length
        Longer texts are truncated to this many tokens.
    """
    if tokenizer is None:
        raise InputFileError(
            "text input needs a tokenizer: load a Hugging Face model folder with --task"
        )
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise InputFileError("text inputs must be non-empty strings")
    encoded = tokenizer(
        texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length
    )
    kwargs = {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}
    ids = kwargs["input_ids"]
    mask = kwargs.get("attention_mask", torch.ones_like(ids))
    tokens = [
        tokenizer.convert_ids_to_tokens(row[m.bool()].tolist())
        for row, m in zip(ids, mask, strict=True)
    ]
    names = [t if len(t) <= 40 else t[:37] + "..." for t in texts]
    return InputBatch("text", (), kwargs, names, None, None, tokens, list(texts))


class TextKind(InputKind):
    """Texts for a model with a tokenizer; files and ``--text`` values are batched together."""

    name = "text"
    suffixes = (".txt", ".jsonl")
    request_fields: ClassVar[dict[str, RequestField]] = {
        "text": RequestField(str | list[str] | None, "Text, or up to 64 texts (kind=text)."),
    }

    def from_file(self, path: Path, loaded: Any = None,
                  options: ReadOptions | None = None) -> InputBatch:
        options = options or ReadOptions()
        return text_batch(texts_from_file(path), getattr(loaded, "tokenizer", None),
                          max_length=options.max_length)

    def from_files(self, paths: Sequence[Path], loaded: Any = None,
                   options: ReadOptions | None = None, *, batch_size: int = 32,
                   inline: Sequence[str] = ()) -> list[InputBatch]:
        options = options or ReadOptions()
        texts = list(inline)
        for path in paths:
            texts += texts_from_file(path)
        tokenizer = getattr(loaded, "tokenizer", None)
        return [text_batch(texts[i : i + batch_size], tokenizer, max_length=options.max_length)
                for i in range(0, len(texts), batch_size)]

    def from_upload(self, raw: bytes, name: str, loaded: Any = None) -> InputBatch:
        batch = text_batch([decode_text(raw, name)], getattr(loaded, "tokenizer", None))
        batch.names = [name]
        return batch

    def from_request(self, request: Any, loaded: Any = None,
                     limits: RequestLimits | None = None) -> InputBatch:
        limits = limits or RequestLimits()
        text = request.text
        texts = [text] if isinstance(text, str) else list(text or [])
        if (not texts or len(texts) > limits.max_rows
                or any(len(t) > limits.max_text_chars for t in texts)):
            raise InputFileError(f"kind=text needs 1 to {limits.max_rows} texts of at most "
                                 f"{limits.max_text_chars} characters")
        return text_batch(texts, getattr(loaded, "tokenizer", None))

    def relevance_input(self, input_names: Sequence[str]) -> str:
        """The token ids' relevance (one value per token) when the model takes ``input_ids``."""
        return "input_ids" if "input_ids" in input_names else input_names[0]

    def report_row(self, maps: dict[str, torch.Tensor], i: int, inputs: RowInputs, *,
                   top_k: int = 10, figures: bool = True) -> dict[str, Any]:
        """Per-token relevance with highlight colours (the generic row without tokens)."""
        if inputs.tokens is None:
            return super().report_row(maps, i, inputs, top_k=top_k, figures=figures)
        from dlbacktrace.report.figures import token_color

        mask = inputs.kwargs.get("attention_mask")
        keep = mask[i].bool() if mask is not None else torch.ones_like(maps["relevance"][i]).bool()
        values = {key: m[i][keep].tolist() for key, m in maps.items()}
        rel = values["relevance"]
        scale = max((abs(v) for v in rel), default=0.0)
        items = []
        for j, token in enumerate(inputs.tokens[i][: len(rel)]):
            item = {"token": token, "relevance": rel[j], "color": token_color(rel[j], scale)}
            if "positive" in values:
                item["positive"] = values["positive"][j]
                item["negative"] = values["negative"][j]
            items.append(item)
        ranked = sorted(range(len(items)), key=lambda j: -abs(items[j]["relevance"]))[:top_k]
        return {
            "tokens": items,
            "top_features": [
                {"feature": f"{items[j]['token']} @{j}", "relevance": items[j]["relevance"]}
                for j in ranked
            ],
        }
