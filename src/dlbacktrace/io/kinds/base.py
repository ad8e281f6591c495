"""What every input modality declares: its suffixes, how to read it and what reports show.

One :class:`InputKind` subclass per modality (image, text, table, tensor, ...), registered by
name with :func:`~dlbacktrace.io.kinds.register_kind`; the CLI, the server and the reports
look kinds up instead of branching on their names (the shape of SHAP's maskers). The base
class is also the generic fallback: its report rows list the largest relevance entries by
index, which fits any tensor.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, ClassVar

import torch

from dlbacktrace.io.batch import InputBatch, InputFileError

__all__ = ["InputKind", "ReadOptions", "RequestField", "RequestLimits", "RowInputs"]


@dataclass(frozen=True)
class RequestField:
    """One JSON field a server request of a kind may carry (the server builds its request
    model from these, so the kinds need no web framework)."""

    type: Any
    description: str
    default: Any = None


@dataclass(frozen=True)
class ReadOptions:
    """How to read input files; each kind uses the options that concern it."""

    image_mode: str | None = None
    image_size: tuple[int, int] | None = None
    columns: list[str] | None = None
    drop: list[str] | None = None
    max_length: int = 512


@dataclass(frozen=True)
class RequestLimits:
    """What one server request may hold (larger requests are client errors)."""

    max_rows: int = 64
    max_text_chars: int = 20_000


@dataclass
class RowInputs:
    """What report rows can show besides the relevance: the inputs and their names."""

    args: tuple[torch.Tensor, ...] = ()
    kwargs: dict[str, torch.Tensor] = field(default_factory=dict)
    tokens: list[list[str]] | None = None
    feature_names: list[str] | None = None


class InputKind:
    """One input modality. Subclasses set ``name`` and ``suffixes`` and read files.

    ``request_fields`` declares the JSON fields a server request of this kind may carry
    (:class:`RequestField` by name); the server's request model is built from the
    registered kinds.
    """

    name: ClassVar[str] = "generic"
    suffixes: ClassVar[tuple[str, ...]] = ()
    request_fields: ClassVar[dict[str, RequestField]] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, suffixes={self.suffixes!r})"

    # ---- reading ---------------------------------------------------------------------------

    def from_file(self, path: Path, loaded: Any = None,
                  options: ReadOptions | None = None) -> InputBatch:
        """Read one file into a batch.

        Parameters
        ----------
        path
            An existing file with one of ``suffixes`` (or a kind chosen explicitly).
        loaded
            The :class:`~dlbacktrace.io.loading.LoadedModel` the input is for (its tokenizer,
            preprocess, feature names), or ``None``.
        options
            Reading options (defaults: :class:`ReadOptions`).
        """
        raise InputFileError(f"{self.name} inputs cannot be read from files")

    def from_files(self, paths: Sequence[Path], loaded: Any = None,
                   options: ReadOptions | None = None, *, batch_size: int = 32,
                   inline: Sequence[str] = ()) -> list[InputBatch]:
        """Read several files as batches of at most ``batch_size`` rows.

        The default reads each file with :meth:`from_file` and cuts it into batches; kinds
        whose files hold one row each (images) or inline values (texts) group them instead.

        Parameters
        ----------
        paths
            Existing input files of this kind.
        loaded
            The model the inputs are for (see :meth:`from_file`).
        options
            Reading options.
        batch_size
            Largest number of rows per batch.
        inline
            Inputs given on the command line rather than in files (``--text``); kinds
            without an inline form refuse them.
        """
        if inline:
            raise InputFileError(f"{self.name} inputs cannot be given inline")
        batches: list[InputBatch] = []
        for path in paths:
            batches += self.from_file(Path(path), loaded, options).split(batch_size)
        return batches

    def from_upload(self, raw: bytes, name: str, loaded: Any = None) -> InputBatch:
        """Read an uploaded file's bytes; ``name`` is the client's file name (no path).

        The default writes the bytes to a temporary file of our own naming and reads it
        with :meth:`from_file`, so no path from the client is ever used.

        Parameters
        ----------
        raw
            The uploaded bytes.
        name
            The client's file name; only its suffix is used.
        loaded
            The model the input is for.
        """
        suffix = PurePath(name).suffix.lower()
        if suffix not in self.suffixes:
            raise InputFileError(f"a {self.name} upload must be one of {self.suffixes}")
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"upload{suffix}"
            path.write_bytes(raw)
            return self.from_file(path, loaded)

    def from_request(self, request: Any, loaded: Any = None,
                     limits: RequestLimits | None = None) -> InputBatch:
        """Build the input from a validated JSON request (its ``request_fields``).

        Parameters
        ----------
        request
            The server's request model; this kind reads the fields it declared.
        loaded
            The model the input is for.
        limits
            Size limits of one request.
        """
        raise InputFileError(f"kind={self.name} cannot be sent as JSON; upload a file")

    # ---- reports ---------------------------------------------------------------------------

    def relevance_input(self, input_names: Sequence[str]) -> str:
        """Which model input's relevance the report shows (default: the first).

        Parameters
        ----------
        input_names
            The explained model's input names, in order.
        """
        return input_names[0]

    def report_rows(self, maps: dict[str, torch.Tensor], inputs: RowInputs, *,
                    top_k: int = 10, figures: bool = True) -> list[dict[str, Any]]:
        """The kind's part of each report row (one dict per batch row).

        Parameters
        ----------
        maps
            ``relevance`` (and in contrast mode ``positive``/``negative``), float64, batch
            first.
        inputs
            The explained inputs and their names.
        top_k
            How many top features each row lists.
        figures
            Whether to embed figures (kinds without figures ignore it).
        """
        relevance = maps["relevance"]
        n = int(relevance.shape[0]) if relevance.dim() else 1
        return [self.report_row(maps, i, inputs, top_k=top_k, figures=figures)
                for i in range(n)]

    def report_row(self, maps: dict[str, torch.Tensor], i: int, inputs: RowInputs, *,
                   top_k: int = 10, figures: bool = True) -> dict[str, Any]:
        """Row ``i`` of :meth:`report_rows`; the default lists the largest entries by index.

        Parameters
        ----------
        maps, inputs, top_k, figures
            As for :meth:`report_rows`.
        i
            The batch row.
        """
        rel = maps["relevance"][i]
        flat = rel.reshape(-1)
        order = flat.abs().argsort(descending=True)[:top_k]
        return {
            "shape": list(rel.shape),
            "top_features": [
                {"feature": str(tuple(int(c) for c in torch.unravel_index(j, rel.shape)))
                 if rel.dim() else "()", "relevance": float(flat[j])}
                for j in order
            ],
        }
