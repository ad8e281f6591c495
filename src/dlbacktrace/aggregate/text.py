"""Per-token and per-word relevance statistics from token-level explanations.

A ``TextSpec`` is built once from a Hugging Face tokenizer: which ids to skip (special and
padding tokens), which vocabulary entries start a word (WordPiece: not ``##``-prefixed;
byte-level BPE / SentencePiece: prefixed by ``Ġ`` or ``▁``), and the token strings. Word pieces
are merged into words by vectorised cumulative sums over the batch; a word's relevance is the
sum of its pieces' relevance.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlbacktrace.aggregate.keyed import KeyedStats
from dlbacktrace.engine.errors import InputError

WORD_WIDTH = 8  # word pieces kept in a word's key; longer words share the key of their prefix
_START_MARKS = ("Ġ", "▁")


@dataclass
class TextSpec:
    """What the aggregation needs to know about a tokenizer (plain data; ships to workers).

    Parameters
    ----------
    tokens
        The token string of each id (``""`` for ids not in the vocabulary).
    skip_ids
        Special and padding token ids, left out of the statistics.
    word_start
        ``[V]`` bool: whether each id starts a word.
    continuation_prefix
        ``"##"`` for WordPiece, ``""`` otherwise.
    """

    tokens: list[str]
    skip_ids: list[int]
    word_start: np.ndarray  # [V] bool
    continuation_prefix: str  # "##" for WordPiece, "" otherwise

    @classmethod
    def from_tokenizer(cls, tokenizer: Any) -> TextSpec:
        """Read the vocabulary, special ids and word-start scheme of a tokenizer.

        Parameters
        ----------
        tokenizer
            A Hugging Face tokenizer (``get_vocab``, ``all_special_ids``, ``pad_token_id``).
        """
        vocab = tokenizer.get_vocab()
        size = max(len(tokenizer), max(vocab.values()) + 1)
        tokens = [""] * size
        for token, idx in vocab.items():
            tokens[idx] = token
        wordpiece = any(t.startswith("##") for t in tokens)
        if wordpiece:
            start = np.array([not t.startswith("##") for t in tokens])
        elif any(t[:1] in _START_MARKS for t in tokens):
            start = np.array([t[:1] in _START_MARKS for t in tokens])
        else:  # unknown scheme: every token is a word
            start = np.ones(size, bool)
        skip = sorted({int(i) for i in tokenizer.all_special_ids})
        if tokenizer.pad_token_id is not None:
            skip = sorted(set(skip) | {int(tokenizer.pad_token_id)})
        return cls(tokens, skip, start, "##" if wordpiece else "")

    def word(self, key: np.ndarray) -> str:
        """The text of a word key (pieces joined, markers removed).

        Parameters
        ----------
        key
            Token ids of the word's pieces, padded with -1.
        """
        pieces = [self.tokens[i] for i in key if i >= 0]
        if self.continuation_prefix:
            return "".join(p.removeprefix(self.continuation_prefix) for p in pieces)
        return "".join(pieces).replace("Ġ", " ").replace("▁", " ").strip()

    def token(self, idx: int) -> str:
        """The string of a token id (``"<id N>"`` outside the vocabulary).

        Parameters
        ----------
        idx
            The token id.
        """
        return self.tokens[idx] if 0 <= idx < len(self.tokens) else f"<id {idx}>"


def text_partial(
    ids: torch.Tensor,
    mask: torch.Tensor | None,
    relevance: torch.Tensor,
    classes: torch.Tensor,
    spec: TextSpec,
    n_classes: int,
) -> tuple[KeyedStats, KeyedStats]:
    """Token and word statistics of one batch (``ids``/``relevance`` are ``[B, T]``).

    Parameters
    ----------
    ids
        ``[B, T]`` token ids.
    mask
        ``[B, T]`` attention mask (zeros are left out), or None.
    relevance
        ``[B, T]`` relevance of each token.
    classes
        ``[B]`` class of each row.
    spec
        The tokenizer description.
    n_classes
        Number of classes ``K``.

    Returns
    -------
    ``(tokens, words)``: statistics keyed by token id and by word (up to ``WORD_WIDTH``
    pieces).
    """
    if ids.dim() != 2 or relevance.shape != ids.shape:
        raise InputError(
            f"text aggregation needs input_ids [batch, tokens] with one relevance per token, got "
            f"ids {tuple(ids.shape)} and relevance {tuple(relevance.shape)}"
        )
    ids_np = ids.detach().cpu().numpy().astype(np.int64)
    rel = relevance.detach().cpu().to(torch.float64).numpy()
    valid = np.ones_like(ids_np, bool) if mask is None else mask.detach().cpu().numpy() != 0
    valid &= ~np.isin(ids_np, spec.skip_ids)
    in_vocab = (ids_np >= 0) & (ids_np < len(spec.word_start))
    starts = np.zeros_like(valid)
    starts[in_vocab] = spec.word_start[ids_np[in_vocab]]
    row_class = np.broadcast_to(classes.detach().cpu().numpy()[:, None], ids_np.shape)

    flat_ids, flat_rel, flat_cls = ids_np[valid], rel[valid], row_class[valid]
    tokens = KeyedStats.from_values(flat_ids[:, None], flat_cls, flat_rel, n_classes)

    # A word starts at a valid token marked as a word start or following an invalid token.
    prev_valid = np.zeros_like(valid)
    prev_valid[:, 1:] = valid[:, :-1]
    word_start = (starts | ~prev_valid)[valid]
    word = np.cumsum(word_start) - 1  # word number of each valid token
    n_words = int(word[-1]) + 1 if len(word) else 0
    first = np.flatnonzero(word_start)
    pos = np.arange(len(word)) - first[word] if len(word) else word
    keys = np.full((n_words, WORD_WIDTH), -1, np.int64)
    keep = pos < WORD_WIDTH
    keys[word[keep], pos[keep]] = flat_ids[keep]
    word_rel = np.bincount(word, weights=flat_rel, minlength=n_words) if n_words else flat_rel
    words = KeyedStats.from_values(keys, flat_cls[first], word_rel, n_classes)
    return tokens, words
