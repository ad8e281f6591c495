"""Token tables: relevance aligned with token strings, character offsets and special/padding flags.

A :class:`TokenTable` describes one tokenized sequence. Word grouping uses the fast tokenizer's
``word_ids`` when the encoding has them, and otherwise the vocabulary's word-start markers
(``Ġ``/``▁`` for byte-level BPE and SentencePiece, no ``##`` for WordPiece). A word's relevance
is the sum of its tokens' relevance (relevance is additive by construction).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = ["TokenRelevance", "TokenTable", "WordRelevance", "token_tables"]

_START_MARKS = ("Ġ", "▁")


@dataclass(frozen=True)
class TokenRelevance:
    """One token with its relevance."""

    index: int
    token: str  # the token as the tokenizer writes it (e.g. "Ġcapital", "##ing")
    text: str  # the token decoded to text (e.g. " capital", "ing")
    relevance: float
    start: int | None  # character offsets into the source text, when known
    end: int | None
    special: bool
    padding: bool


@dataclass(frozen=True)
class WordRelevance:
    """One word: the summed relevance of its tokens."""

    text: str
    relevance: float
    start: int | None
    end: int | None
    tokens: tuple[int, ...]  # token indices


@dataclass
class TokenTable:
    """One tokenized sequence: ids, token strings, offsets and flags (arrays of length T)."""

    ids: np.ndarray  # [T] int64
    tokens: list[str]
    texts: list[str]
    offsets: np.ndarray | None  # [T, 2] int64 character spans into ``source``, or None
    special: np.ndarray  # [T] bool
    padding: np.ndarray  # [T] bool
    word_ids: np.ndarray  # [T] int64, -1 for special and padding tokens
    source: str | None = None

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def content(self) -> np.ndarray:
        """Tokens that are neither special nor padding."""
        return ~(self.special | self.padding)

    def slice(self, stop: int) -> TokenTable:
        """The first ``stop`` tokens."""
        return TokenTable(
            self.ids[:stop], self.tokens[:stop], self.texts[:stop],
            None if self.offsets is None else self.offsets[:stop],
            self.special[:stop], self.padding[:stop], self.word_ids[:stop], self.source,
        )  # fmt: skip

    def rows(self, relevance: np.ndarray) -> list[TokenRelevance]:
        """Every token with its relevance."""
        rel = np.asarray(relevance, dtype=np.float64)
        out = []
        for i in range(len(self)):
            span = (None, None) if self.offsets is None else tuple(int(v) for v in self.offsets[i])
            out.append(TokenRelevance(
                i, self.tokens[i], self.texts[i], float(rel[i]), span[0], span[1],
                bool(self.special[i]), bool(self.padding[i]),
            ))  # fmt: skip
        return out

    def word_relevance(self, relevance: np.ndarray) -> list[WordRelevance]:
        """Relevance summed per word (special and padding tokens are left out)."""
        rel = np.asarray(relevance, dtype=np.float64)
        keep = self.word_ids >= 0
        if not keep.any():
            return []
        # Renumber the word ids 0..n-1 in order of appearance, then sum with one bincount.
        uniq, first, inverse = np.unique(
            self.word_ids[keep], return_index=True, return_inverse=True
        )
        order = np.argsort(first)
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        word_of = rank[inverse]
        sums = np.bincount(word_of, weights=rel[keep], minlength=len(uniq))
        token_index = np.flatnonzero(keep)
        words = []
        for w in range(len(uniq)):
            members = token_index[word_of == w]
            start = end = None
            if self.offsets is not None and self.source is not None:
                start, end = int(self.offsets[members[0], 0]), int(self.offsets[members[-1], 1])
                text = self.source[start:end]
            else:
                text = "".join(self.texts[i] for i in members).strip()
            words.append(WordRelevance(text, float(sums[w]), start, end, tuple(members.tolist())))
        return words


def _word_ids_from_markers(tokens: list[str], content: np.ndarray) -> np.ndarray:
    """Word numbers from vocabulary markers: a word starts at a marked token or after a gap."""
    wordpiece = any(t.startswith("##") for t in tokens)
    if wordpiece:
        marked = np.array([not t.startswith("##") for t in tokens], dtype=bool)
    else:
        marked = np.array([t[:1] in _START_MARKS or not t[:1].isalnum() for t in tokens], bool)
    prev_content = np.zeros_like(content)
    prev_content[1:] = content[:-1]
    start = content & (marked | ~prev_content)
    ids = np.cumsum(start) - 1
    return np.where(content, ids, -1).astype(np.int64)


def _texts_from_offsets(
    texts: list[str], spans: np.ndarray, content: np.ndarray, source: str
) -> list[str]:
    """Each content token's text from the source, with the whitespace before it (so that
    WordPiece tokens keep their spaces); special and padding tokens keep their own text."""
    out = list(texts)
    prev = 0
    for j in np.flatnonzero(content):
        start, end = int(spans[j, 0]), int(spans[j, 1])
        out[j] = source[min(prev, start) : end]
        prev = max(prev, end)
    return out


def token_tables(
    tokenizer: Any,
    ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    encoding: Any = None,
    offsets: np.ndarray | None = None,
    sources: list[str] | None = None,
) -> list[TokenTable]:
    """One :class:`TokenTable` per row of ``ids`` ``[B, T]``.

    ``encoding``: the fast tokenizer's ``BatchEncoding`` of these rows (unpadded; gives word
    ids); ``offsets``: ``[B, T, 2]`` character spans into ``sources``, the tokenized texts.
    """
    ids_np = ids.detach().cpu().numpy().astype(np.int64)
    mask = (
        np.ones_like(ids_np, dtype=bool)
        if attention_mask is None
        else attention_mask.detach().cpu().numpy() != 0
    )
    special_ids = np.array(sorted({int(i) for i in tokenizer.all_special_ids}), dtype=np.int64)
    tables = []
    for b in range(ids_np.shape[0]):
        row = ids_np[b]
        tokens = tokenizer.convert_ids_to_tokens(row.tolist())
        texts = tokenizer.batch_decode(row[:, None].tolist(), skip_special_tokens=False)
        padding = ~mask[b]
        special = np.isin(row, special_ids) & ~padding
        content = ~(special | padding)
        word_ids = None
        if encoding is not None and getattr(encoding, "is_fast", False):
            raw = encoding.word_ids(b)
            if raw is not None and len(raw) <= len(row):
                word_ids = np.full(len(row), -1, dtype=np.int64)
                word_ids[: len(raw)] = [-1 if w is None else w for w in raw]
                word_ids = np.where(content, word_ids, -1)
        if word_ids is None:
            word_ids = _word_ids_from_markers(tokens, content)
        source = sources[b] if sources is not None else None
        spans = None if offsets is None else offsets[b]
        if spans is not None and sources is not None:
            texts = _texts_from_offsets(texts, spans, content, sources[b])
        tables.append(
            TokenTable(row, tokens, texts, spans, special, padding, word_ids, source)
        )
    return tables
