"""Audit records of aggregates (global explanations): the data, the options and the result.

The record keeps the data itself (the exact tensor the aggregate read, and the labels), not
only a reference to its file: a record must verify on its own, after the file was moved or
edited, and without trusting that the file reader still turns it into the same bits. The
file's name and SHA-256 are kept beside it as provenance. The result is stored in the
:class:`~dlbacktrace.aggregate.GlobalExplanation` save format and compared array by array.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlbacktrace.audit.codec import StoredInputs, archive_digest, encode_global, encode_inputs
from dlbacktrace.io.digests import tensor_digest

__all__ = [
    "AGGREGATE_OPTIONS", "aggregate_parts", "check_recordable", "file_digest", "replay_aggregate",
]

# ``aggregate()`` keywords a record keeps (the local backend; Ray gives the same bits).
AGGREGATE_OPTIONS = ("target", "mode", "batch_size", "feature_names", "class_names",
                     "layers", "layer_units", "sample_size", "groups", "sensitive")


def check_recordable(options: dict[str, Any], data: Any) -> None:
    """Refuse, before any work, an aggregate a record could not replay.

    Parameters
    ----------
    options
        The ``aggregate()`` keywords (only ``AGGREGATE_OPTIONS`` can be replayed).
    data
        The data; a record keeps it, so it must be one tensor or NumPy array.
    """
    from dlbacktrace.audit.store import AuditError

    unknown = sorted(set(options) - set(AGGREGATE_OPTIONS))
    if unknown:
        raise AuditError(f"a recorded aggregate cannot take {unknown} (a replay would not "
                         f"know them); recordable: {', '.join(AGGREGATE_OPTIONS)}")
    if not isinstance(data, (torch.Tensor, np.ndarray)):
        raise AuditError("a recorded aggregate needs the data as a tensor or NumPy array, "
                         f"got {type(data).__name__}")


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes, read in chunks.

    Parameters
    ----------
    path
        The file.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _labels(labels: Any) -> torch.Tensor | None:
    if labels is None:
        return None
    return torch.from_numpy(np.array(labels))  # a copy: label arrays may be read-only views


def aggregate_parts(
    g: Any, data: torch.Tensor, labels: Any = None, options: dict[str, Any] | None = None,
    data_file: str | Path | None = None,
) -> tuple[dict[str, Any], bytes, bytes]:
    """The kind-specific content and the two blobs of an aggregate record.

    Parameters
    ----------
    g
        The :class:`~dlbacktrace.aggregate.GlobalExplanation`.
    data
        The ``[rows, ...]`` tensor it was computed from.
    labels
        The true class of each row, if given to the aggregate.
    options
        The ``aggregate()`` keywords used (see ``AGGREGATE_OPTIONS``).
    data_file
        The file the data was read from (its name and digest are kept as provenance).

    Returns
    -------
    ``(content, result_blob, inputs_blob)``.
    """
    options = dict(options or {})
    check_recordable(options, data)
    data = torch.as_tensor(data).detach().cpu()
    tensors = {} if labels is None else {"labels": _labels(labels)}
    blob = encode_global(g)
    digest = archive_digest(blob)
    source: dict[str, Any] = {
        "digest": tensor_digest((data,), tensors),
        "rows": int(data.shape[0]),
        "shapes": [list(data.shape)] + [[k, list(v.shape)] for k, v in tensors.items()],
        "dtype": str(data.dtype),
        "stored": "the exact data tensor and labels are in the record's inputs",
    }
    if data_file is not None:
        source["file"] = Path(data_file).name
        source["file_sha256"] = file_digest(data_file)
    content = {
        "input": {"kind": "aggregate", "digest": source["digest"],
                  "shapes": source["shapes"]},
        "data": source,
        "target": options.get("target"),
        "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()},
        "aggregate": {
            "digest": digest,
            "rows": g.rows,
            "batches": g.batches,
            "n_classes": g.n_classes,
            "class_names": list(g.class_names),
            "inputs": list(g.inputs),
        },
    }
    return content, blob, encode_inputs(StoredInputs((data,), tensors))


def replay_aggregate(content: dict[str, Any], inputs: StoredInputs, model: Any) -> bytes:
    """Recompute the aggregate on the stored data with the recorded options.

    Parameters
    ----------
    content
        The record's content.
    inputs
        The record's stored inputs (the data tensor and labels).
    model
        The model or a :class:`~dlbacktrace.Backtrace` of it.

    Returns
    -------
    The fresh result in the stored format (bytes of the ``GlobalExplanation`` archive).
    """
    from dlbacktrace.aggregate import aggregate

    options = dict(content.get("options") or {})
    labels = inputs.kwargs.get("labels")
    g = aggregate(model, inputs.args[0], labels=None if labels is None else labels.numpy(),
                  **options)
    return encode_global(g)
