"""Bytes for what an audit record keeps: the explanation and the exact model inputs.

Both are compressed ``.npz`` archives (arrays plus a JSON header,
:mod:`dlbacktrace.engine.fileformat`) and are read back with ``allow_pickle=False``.
:func:`relevance_digest` hashes the maps themselves (not the archive bytes, which carry zip
timestamps), so a recomputed explanation can be compared by digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from typing import Any

import numpy as np
import torch

from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.engine.fileformat import read_archive, write_archive

__all__ = [
    "StoredInputs",
    "decode_explanation",
    "decode_inputs",
    "encode_explanation",
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
