"""Bytes for what an audit record keeps: the explanation and the exact model inputs.

Both are compressed ``.npz`` archives (arrays plus a JSON header,
:mod:`dlbacktrace.engine.fileformat`) and are read back with ``allow_pickle=False``.
:func:`relevance_digest` hashes the maps themselves (not the archive bytes, which carry zip
timestamps), so a recomputed explanation can be compared by digest. Aggregates are stored in
the :class:`~dlbacktrace.aggregate.GlobalExplanation` save format and hashed the same way, by
content (:func:`archive_digest`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.engine.fileformat import read_archive, write_archive

__all__ = [
    "StoredInputs",
    "archive_arrays",
    "archive_digest",
    "decode_global",
    "decode_explanation",
    "decode_inputs",
    "encode_explanation",
    "encode_global",
    "encode_inputs",
    "relevance_digest",
]


def encode_explanation(exp: Explanation) -> bytes:
    """``Explanation.save`` into bytes (the same format as a saved ``.npz`` file).

    The input data is left out (``inputs_by_name``): a record keeps the exact inputs beside the
    explanation (:func:`encode_inputs`), so they are not stored twice. The other context
    fields (names, tokens) are kept.

    Parameters
    ----------
    exp
        The explanation to store.
    """
    buffer = io.BytesIO()
    dataclasses.replace(exp, inputs_by_name={}).save(buffer)
    return buffer.getvalue()


def decode_explanation(data: bytes) -> Explanation:
    """The explanation stored by :func:`encode_explanation`.

    Parameters
    ----------
    data
        The archive's bytes.
    """
    return Explanation.load(data)


def _update(digest: Any, key: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().cpu().contiguous()
    digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def relevance_digest(exp: Explanation) -> str:
    """SHA-256 over every relevance map (default/total and, in contrast mode, net) bit for bit."""
    digest = hashlib.sha256(f"mode={exp.mode}|".encode())
    for name in exp.input_names:
        _update(digest, f"total/{name}", exp.total_by_name[name])
        if exp.net_by_name is not None:
            _update(digest, f"net/{name}", exp.net_by_name[name])
    return digest.hexdigest()


class StoredInputs:
    """Model inputs as stored: positional tensors, keyword tensors, plain constants, a seed."""

    def __init__(
        self,
        args: tuple[torch.Tensor, ...] = (),
        kwargs: dict[str, torch.Tensor] | None = None,
        consts: dict[str, Any] | None = None,
        seed: torch.Tensor | None = None,
    ) -> None:
        self.args = tuple(args)
        self.kwargs = dict(kwargs or {})
        self.consts = dict(consts or {})
        self.seed = seed

    @property
    def model_kwargs(self) -> dict[str, Any]:
        return {**self.kwargs, **self.consts}


def encode_inputs(inputs: StoredInputs) -> bytes:
    """The exact model inputs as ``.npz`` bytes (arrays plus a JSON header).

    Parameters
    ----------
    inputs
        The stored inputs.
    """
    arrays: dict[str, np.ndarray] = {}
    for i, a in enumerate(inputs.args):
        arrays[f"arg/{i}"] = a.detach().cpu().numpy()
    names = list(inputs.kwargs)
    for i, name in enumerate(names):
        arrays[f"kw/{i}"] = inputs.kwargs[name].detach().cpu().numpy()
    if inputs.seed is not None:
        arrays["seed"] = inputs.seed.detach().cpu().numpy()
    header = {"n_args": len(inputs.args), "kwargs": names, "consts": inputs.consts}
    buffer = io.BytesIO()
    write_archive(buffer, arrays, header)
    return buffer.getvalue()


def _tensor(array: np.ndarray) -> torch.Tensor:
    # A fresh torch allocation, aligned like the tensors the original call most likely used:
    # BLAS kernels can sum in another order for differently aligned buffers.
    return torch.from_numpy(array).clone(memory_format=torch.contiguous_format)


def decode_inputs(data: bytes) -> StoredInputs:
    """The inputs stored by :func:`encode_inputs`.

    Parameters
    ----------
    data
        The archive's bytes.
    """
    header, archive = read_archive(data)
    args = tuple(_tensor(archive[f"arg/{i}"]) for i in range(header["n_args"]))
    kwargs = {n: _tensor(archive[f"kw/{i}"]) for i, n in enumerate(header["kwargs"])}
    seed = _tensor(archive["seed"]) if "seed" in archive else None
    return StoredInputs(args, kwargs, header["consts"], seed)


def encode_global(g: Any) -> bytes:
    """``GlobalExplanation.save`` into bytes (the same format as a saved ``.npz`` file).

    Parameters
    ----------
    g
        The :class:`~dlbacktrace.aggregate.GlobalExplanation` to store.
    """
    with tempfile.TemporaryDirectory() as folder:  # its saver writes files atomically
        return g.save(Path(folder) / "global.npz").read_bytes()


def decode_global(data: bytes) -> Any:
    """The global explanation stored by :func:`encode_global`.

    Parameters
    ----------
    data
        The archive's bytes.
    """
    from dlbacktrace.aggregate import GlobalExplanation

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "global.npz"
        path.write_bytes(data)
        return GlobalExplanation.load(path)


def archive_arrays(data: bytes) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """The JSON header and the named arrays of an archive's bytes (no pickle).

    Parameters
    ----------
    data
        The archive's bytes.
    """
    return read_archive(data)


def archive_digest(data: bytes) -> str:
    """SHA-256 over an archive's content: its canonical JSON header, then every array by name
    (dtype, shape, bytes). Unlike the bytes' digest it ignores zip timestamps.

    Parameters
    ----------
    data
        The archive's bytes.
    """
    header, arrays = read_archive(data)
    digest = hashlib.sha256(json.dumps(header, sort_keys=True, separators=(",", ":")).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        digest.update(f"|{name}|{a.dtype.str}|{a.shape}|".encode())
        digest.update(a.tobytes())
    return digest.hexdigest()
