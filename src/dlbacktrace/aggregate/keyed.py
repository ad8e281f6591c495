"""Exact per-class statistics keyed by integer tuples (token ids, word-piece sequences).

Tokens and words form an open vocabulary, so they cannot live in a fixed dense array of
features. ``KeyedStats`` keeps a sorted table of keys with per-class count/sum/sum of |x|/sum of
squares, updated and merged with ``np.unique`` and ``np.bincount`` only (no Python loop over
tokens). Memory grows with the number of *distinct* keys (vocabulary size), not with the corpus.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STAT_FIELDS = ("sum", "sumabs", "sumsq")


@dataclass
class KeyedStats:
    """``keys [M, P]`` (int64, -1 padded); ``count [M, K]``; float64 sums ``[M, K]`` per field.

    Parameters
    ----------
    keys
        ``[M, P]`` int64 keys, sorted and unique, padded with -1.
    count
        ``[M, K]`` int64 observations per key and class.
    sums
        ``{"sum", "sumabs", "sumsq"}`` -> ``[M, K]`` float64 sums per key and class.
    """

    keys: np.ndarray
    count: np.ndarray
    sums: dict[str, np.ndarray]

    @classmethod
    def empty(cls, width: int, n_classes: int) -> KeyedStats:
        """A table with no keys.

        Parameters
        ----------
        width
            Key width ``P``.
        n_classes
            Number of classes ``K``.
        """
        return cls(
            np.zeros((0, width), np.int64),
            np.zeros((0, n_classes), np.int64),
            {f: np.zeros((0, n_classes)) for f in STAT_FIELDS},
        )

    @classmethod
    def from_values(
        cls, keys: np.ndarray, classes: np.ndarray, values: np.ndarray, n_classes: int
    ) -> KeyedStats:
        """One observation per row of ``keys`` ([N, P]) with its class and relevance value.

        Parameters
        ----------
        keys
            ``[N, P]`` integer keys, one per observation.
        classes
            ``[N]`` class index of each observation.
        values
            ``[N]`` relevance of each observation.
        n_classes
            Number of classes ``K``.
        """
        values = np.asarray(values, np.float64)
        ones = np.ones(len(values), np.int64)
        return cls._reduce(
            np.asarray(keys, np.int64),
            np.asarray(classes, np.int64),
            n_classes,
            ones,
            {"sum": values, "sumabs": np.abs(values), "sumsq": values * values},
        )

    @classmethod
    def _reduce(cls, keys, classes, n_classes, count, sums) -> KeyedStats:
        """Group equal keys (sorted) and sum per (key, class) cell; sums run in input order."""
        width = keys.shape[1]
        if len(keys) == 0:
            return cls.empty(width, n_classes)
        uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        cell = inverse * n_classes + classes
        size = len(uniq) * n_classes

        def total(weights: np.ndarray) -> np.ndarray:
            return np.bincount(cell, weights=weights, minlength=size).reshape(len(uniq), n_classes)

        return cls(
            uniq,
            np.rint(total(count.astype(np.float64))).astype(np.int64),
            {f: total(v) for f, v in sums.items()},
        )

    def merge(self, other: KeyedStats) -> None:
        """Add ``other`` into ``self`` (in place); keys stay sorted and unique.

        Parameters
        ----------
        other
            Statistics of the same key width and classes.
        """
        if other.keys.shape[1] != self.keys.shape[1]:
            raise ValueError("cannot merge keyed statistics of different key widths")
        n_classes = self.count.shape[1]
        m, o = len(self.keys), len(other.keys)
        # Expand to one row per (key, class) cell, so both tables reduce with the same code.
        keys = np.repeat(np.concatenate([self.keys, other.keys]), n_classes, axis=0)
        classes = np.tile(np.arange(n_classes), m + o)
        count = np.concatenate([self.count, other.count]).reshape(-1)
        sums = {f: np.concatenate([v, other.sums[f]]).reshape(-1) for f, v in self.sums.items()}
        merged = KeyedStats._reduce(keys, classes, n_classes, count, sums)
        self.keys, self.count, self.sums = merged.keys, merged.count, merged.sums
