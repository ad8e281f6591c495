"""The one storage format: a ``.npz`` archive of named arrays plus a JSON header.

Every saver of the library (explanations, dataset-level aggregates, audit records) writes
through :func:`write_archive` and reads through :func:`read_archive`, so there is one place
that decides how files look and one guarantee for all of them: loading never unpickles
(``allow_pickle=False``). The header is stored as the UTF-8 bytes of a JSON document in the
array ``__header__``; callers put their own ``format`` tag in it and check it on reading.
Writes to a path are atomic (a temporary file in the same folder, then ``os.replace``), so a
crash never leaves half a file where a previous checkpoint was.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = ["HEADER_KEY", "read_archive", "with_npz_suffix", "write_archive"]

HEADER_KEY = "__header__"


def with_npz_suffix(path: str | Path) -> Path:
    """``path`` with ``.npz`` appended unless it already ends so (``a.x`` -> ``a.x.npz``).

    Parameters
    ----------
    path
        The file name the caller asked for.
    """
    path = Path(path)
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def _archive_bytes(arrays: Mapping[str, np.ndarray], header: Mapping[str, Any],
                   compress: bool, fh: IO[bytes]) -> None:
    if HEADER_KEY in arrays:
        raise ValueError(f"{HEADER_KEY!r} is reserved for the header")
    payload = dict(arrays)
    payload[HEADER_KEY] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    (np.savez_compressed if compress else np.savez)(fh, **payload)


def write_archive(
    target: str | Path | IO[bytes],
    arrays: Mapping[str, np.ndarray],
    header: Mapping[str, Any],
    *,
    compress: bool = True,
) -> Path | None:
    """Write ``arrays`` and the JSON-serialisable ``header`` as one ``.npz`` archive.

    Parameters
    ----------
    target
        A path (written atomically; parent folders are created; the name is used as given)
        or a writable binary file object (``io.BytesIO``, an open file), written at its
        current position.
    arrays
        Named NumPy arrays (no object arrays: they would need pickle to read back).
    header
        JSON-serialisable metadata, read back by :func:`read_archive`.
    compress
        Deflate the arrays (smaller files; slower for large float arrays).

    Returns
    -------
    The path written, or None for a file object.
    """
    if not isinstance(target, (str, Path)):
        _archive_bytes(arrays, header, compress, target)
        return None
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            _archive_bytes(arrays, header, compress, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_archive(
    source: str | Path | bytes | IO[bytes],
) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """Read an archive written by :func:`write_archive` (never unpickles).

    Parameters
    ----------
    source
        A path, the archive's bytes, or a readable binary file object.

    Returns
    -------
    ``(header, arrays)``: the JSON header (an empty dict when the archive has none) and every
    other array by name, loaded into memory.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    with np.load(source, allow_pickle=False) as data:
        arrays = {name: data[name] for name in data.files}
    raw = arrays.pop(HEADER_KEY, None)
    header = json.loads(bytes(raw).decode()) if raw is not None else {}
    return header, arrays
