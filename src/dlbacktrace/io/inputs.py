"""Read input files into model inputs through the registered input kinds.

Images (PNG/JPEG via Pillow), text (``.txt``, ``.jsonl``; needs the model's tokenizer),
tables (``.csv``/``.parquet`` via pandas, with feature names) and tensors (``.npy`` with
``allow_pickle=False``, ``.safetensors``), plus any kind registered with
:func:`~dlbacktrace.io.kinds.register_kind`. Everything malformed raises
:class:`~dlbacktrace.io.batch.InputFileError` with a message that says what is wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlbacktrace.io.batch import InputBatch, InputFileError
from dlbacktrace.io.kinds import ReadOptions, detect_kind, get_kind

__all__ = ["read_batches", "read_input"]


def _existing(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"input file not found: {path}")
    return path


def read_input(
    path: str | Path,
    loaded: Any = None,
    *,
    kind: str | None = None,
    image_mode: str | None = None,
    image_size: tuple[int, int] | None = None,
    columns: list[str] | None = None,
    drop: list[str] | None = None,
    max_length: int = 512,
) -> InputBatch:
    """Read one input file for ``loaded``.

    Parameters
    ----------
    path
        The input file.
    loaded
        The :class:`~dlbacktrace.io.loading.LoadedModel` it is for (tokenizer, preprocess),
        or ``None``.
    kind
        A registered kind's name (default: from the file suffix, :func:`detect_kind`).
    image_mode, image_size, columns, drop, max_length
        Reading options (:class:`~dlbacktrace.io.kinds.ReadOptions`).
    """
    path = _existing(path)
    options = ReadOptions(image_mode, image_size, columns, drop, max_length)
    return get_kind(kind or detect_kind(path)).from_file(path, loaded, options)


def read_batches(
    paths: Sequence[str | Path],
    loaded: Any = None,
    *,
    inline: Sequence[str] = (),
    inline_kind: str = "text",
    kind: str | None = None,
    options: ReadOptions | None = None,
    batch_size: int = 32,
) -> list[InputBatch]:
    """Input files (and inline inputs) of one kind as batches of at most ``batch_size`` rows.

    Parameters
    ----------
    paths
        Input files, all of one kind.
    loaded
        The model they are for.
    inline
        Inputs given directly rather than in files (the CLI's ``--text``).
    inline_kind
        The kind inline inputs are of.
    kind
        The kind of every file (default: from each suffix).
    options
        Reading options.
    batch_size
        Largest number of rows per batch.
    """
    if not paths and not inline:
        raise InputFileError("nothing to explain: give input files or --text")
    kinds = {kind or detect_kind(p) for p in paths} | ({inline_kind} if inline else set())
    if len(kinds) > 1:
        raise InputFileError(f"mixed input kinds {sorted(kinds)}; explain one kind per call")
    files = [_existing(p) for p in paths]
    return get_kind(kinds.pop()).from_files(files, loaded, options, batch_size=batch_size,
                                            inline=inline)
