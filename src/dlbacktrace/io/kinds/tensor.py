"""Raw tensors: ``.npy`` (no pickles) and ``.safetensors`` files, or nested JSON lists.
Reports use the generic rows (largest entries by index)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from dlbacktrace.io.batch import InputBatch, InputFileError
from dlbacktrace.io.kinds.base import InputKind, ReadOptions, RequestField, RequestLimits

__all__ = ["TensorKind", "tensor_batch"]


def _check_npy_header(path: Path) -> None:
    """Refuse non-numeric arrays and headers that promise more data than the file holds,
    before anything is allocated."""
    try:
        with path.open("rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                    else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read(fh)
            offset = fh.tell()
    except (ValueError, OSError, EOFError) as exc:
        raise InputFileError(f"{path.name}: not a plain .npy array ({exc})") from exc
    if dtype.kind not in "biuf":
        raise InputFileError(
            f"{path.name}: not a plain .npy array of numbers (dtype {dtype}); a .npy input must "
            "hold numbers"
        )
    needed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    available = path.stat().st_size - offset
    if needed > available:
        raise InputFileError(
            f"{path.name}: the header declares shape {tuple(shape)} ({needed} bytes) but the "
            f"file holds {available} bytes of data"
        )


def tensor_batch(path: str | Path) -> InputBatch:
    """``.npy`` (one positional input) or ``.safetensors`` (one tensor, or keyword inputs).

    Parameters
    ----------
    path
        The tensor file.
    """
    path = Path(path)
    if path.suffix.lower() == ".npy":
        _check_npy_header(path)
        try:
            array = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputFileError(f"{path.name}: not a plain .npy array ({exc})") from exc
        tensors: dict[str, torch.Tensor] = {"0": torch.from_numpy(np.ascontiguousarray(array))}
    else:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise InputFileError(f"{path.name}: not a readable safetensors file ({exc})") from exc
        if not tensors:
            raise InputFileError(f"{path.name} holds no tensors")
    # Fresh torch allocations: BLAS kernels may sum in a different order for differently
    # aligned buffers (memory-mapped safetensors), which would break bit-for-bit replays.
    tensors = {k: v.clone(memory_format=torch.contiguous_format) for k, v in tensors.items()}
    first = next(iter(tensors.values()))
    n = int(first.shape[0]) if first.dim() else 1
    names = [f"{path.stem}[{i}]" for i in range(n)]
    if len(tensors) == 1:
        return InputBatch("tensor", (first,), names=names)
    return InputBatch("tensor", (), dict(tensors), names=names)


class TensorKind(InputKind):
    """Model inputs as they are: arrays of numbers, batch first."""

    name = "tensor"
    suffixes = (".npy", ".safetensors")
    request_fields: ClassVar[dict[str, RequestField]] = {
        "tensor": RequestField(list[Any] | None,
                               "Model input as nested lists (batch first)."),
    }

    def from_file(self, path: Path, loaded: Any = None,
                  options: ReadOptions | None = None) -> InputBatch:
        return tensor_batch(path)

    def from_request(self, request: Any, loaded: Any = None,
                     limits: RequestLimits | None = None) -> InputBatch:
        limits = limits or RequestLimits()
        if request.tensor is None:
            raise InputFileError("kind=tensor needs tensor")
        try:
            array = np.asarray(request.tensor, dtype=np.float32)
        except (ValueError, TypeError) as exc:
            raise InputFileError(f"tensor is not a rectangular array of numbers: {exc}") from exc
        if array.ndim < 1 or array.shape[0] == 0 or array.shape[0] > limits.max_rows:
            raise InputFileError(f"tensor needs a batch dimension of 1 to {limits.max_rows}")
        return InputBatch("tensor", (torch.from_numpy(array),),
                          names=[f"#{i}" for i in range(array.shape[0])])
