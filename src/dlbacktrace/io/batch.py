"""The model inputs read from files or requests, with what a report needs to show them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dlbacktrace.engine.errors import InputError
from dlbacktrace.io.digests import tensor_digest

__all__ = ["InputBatch", "InputFileError"]


class InputFileError(InputError):
    """An input file or upload is malformed, of an unknown kind or does not fit the model."""


@dataclass
class InputBatch:
    """Model inputs (``args``/``kwargs``) plus what a report needs to display them.

    ``kind`` names the :class:`~dlbacktrace.io.kinds.InputKind` that read it. ``display``:
    images as N x H x W x C floats in [0, 1]; tables as the feature values. ``feature_names``
    names table columns, ``names`` each row, ``tokens`` the tokens of each text row.
    """

    kind: str
    args: tuple[torch.Tensor, ...] = ()
    kwargs: dict[str, torch.Tensor] = field(default_factory=dict)
    names: list[str] = field(default_factory=list)
    display: Any = None
    feature_names: list[str] | None = None
    tokens: list[list[str]] | None = None
    texts: list[str] | None = None

    @property
    def size(self) -> int:
        """Number of rows (the batch dimension of the first input)."""
        first = self.args[0] if self.args else next(iter(self.kwargs.values()))
        return int(first.shape[0]) if first.dim() else 1

    @property
    def digest(self) -> str:
        """SHA-256 of the exact input tensors (see :func:`tensor_digest`)."""
        return tensor_digest(self.args, self.kwargs)

    def row(self, i: int) -> InputBatch:
        """Row ``i`` as a batch of one (the server and reports explain row by row).

        Parameters
        ----------
        i
            Index of the row, ``0 <= i < size``.
        """
        return self.rows(i, i + 1)

    def rows(self, start: int, stop: int) -> InputBatch:
        """Rows ``start:stop`` as a batch of their own.

        Parameters
        ----------
        start, stop
            Slice bounds along the batch dimension.
        """
        return InputBatch(
            self.kind,
            tuple(a[start:stop] for a in self.args),
            {k: v[start:stop] for k, v in self.kwargs.items()},
            self.names[start:stop],
            None if self.display is None else self.display[start:stop],
            self.feature_names,
            None if self.tokens is None else self.tokens[start:stop],
            None if self.texts is None else self.texts[start:stop],
        )

    def split(self, size: int) -> list[InputBatch]:
        """This batch cut into batches of at most ``size`` rows (itself when it fits).

        Parameters
        ----------
        size
            Largest number of rows per batch (at least 1).
        """
        n = self.size
        if n <= size:
            return [self]
        return [self.rows(start, min(n, start + size)).detached() for start in range(0, n, size)]

    def detached(self) -> InputBatch:
        """The same batch in freshly allocated tensors (not views into a larger buffer).

        BLAS kernels may sum in a different order for differently aligned buffers, so a view
        at an offset could explain differently, by rounding, from its own replay.
        """
        return InputBatch(
            self.kind,
            tuple(a.clone(memory_format=torch.contiguous_format) for a in self.args),
            {k: v.clone(memory_format=torch.contiguous_format) for k, v in self.kwargs.items()},
            self.names, self.display, self.feature_names, self.tokens, self.texts,
        )
