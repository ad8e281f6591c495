"""Read inputs from files or bytes into model inputs, keeping what reports need to show them.

Images (PNG/JPEG via Pillow), text (strings, ``.txt``, ``.jsonl``; needs the model's tokenizer),
tables (``.csv``/``.parquet`` via pandas, with feature names) and tensors (``.npy`` with
``allow_pickle=False``, ``.safetensors``). Everything malformed raises :class:`InputFileError`
(an :class:`~dlbacktrace.engine.errors.InputError`) with a message that says what is wrong.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlbacktrace.engine.errors import InputError

__all__ = [
    "InputBatch",
    "InputFileError",
    "KINDS",
    "decode_text",
    "detect_kind",
    "image_batch",
    "load_image",
    "read_frame",
    "read_input",
    "table_batch",
    "tensor_batch",
    "tensor_digest",
    "text_batch",
    "texts_from_file",
]

KINDS = ("image", "text", "table", "tensor")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
TABLE_SUFFIXES = {".csv", ".parquet"}
TENSOR_SUFFIXES = {".npy", ".safetensors"}
TEXT_SUFFIXES = {".txt", ".jsonl"}
MAX_IMAGE_PIXELS = 64_000_000


class InputFileError(InputError):
    """An input file or upload is malformed, of an unknown kind or does not fit the model."""


@dataclass
class InputBatch:
    """Model inputs (``args``/``kwargs``) plus what a report needs to display them.

    ``display``: images as N x H x W x C floats in [0, 1]; text as tokens per row; tables as
    the feature values. ``feature_names`` names table columns, ``names`` each row.
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
        first = self.args[0] if self.args else next(iter(self.kwargs.values()))
        return int(first.shape[0]) if first.dim() else 1

    @property
    def digest(self) -> str:
        return tensor_digest(self.args, self.kwargs)

    def row(self, i: int) -> InputBatch:
        """Row ``i`` as a batch of one (the server and reports explain row by row)."""
        return InputBatch(
            self.kind,
            tuple(a[i : i + 1] for a in self.args),
            {k: v[i : i + 1] for k, v in self.kwargs.items()},
            self.names[i : i + 1],
            None if self.display is None else self.display[i : i + 1],
            self.feature_names,
            None if self.tokens is None else self.tokens[i : i + 1],
            None if self.texts is None else self.texts[i : i + 1],
        )


def tensor_digest(args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> str:
    """SHA-256 over the exact input tensors (position/name, dtype, shape, bytes)."""
    digest = hashlib.sha256()
    items = [(str(i), a) for i, a in enumerate(args)]
    items += sorted((kwargs or {}).items())
    for key, value in items:
        if not isinstance(value, torch.Tensor):
            digest.update(f"{key}|const|{value!r}|".encode())
            continue
        t = value.detach().cpu().contiguous()
        digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def detect_kind(path: str | Path) -> str:
    """Input kind from a file suffix (``image``, ``text``, ``table`` or ``tensor``)."""
    suffix = Path(path).suffix.lower()
    for kind, suffixes in (
        ("image", IMAGE_SUFFIXES),
        ("table", TABLE_SUFFIXES),
        ("tensor", TENSOR_SUFFIXES),
        ("text", TEXT_SUFFIXES),
    ):
        if suffix in suffixes:
            return kind
    raise InputFileError(
        f"cannot tell the input kind of {Path(path).name!r} from its suffix; supported: "
        f"{sorted(IMAGE_SUFFIXES | TABLE_SUFFIXES | TENSOR_SUFFIXES | TEXT_SUFFIXES)}"
    )


# ---- images --------------------------------------------------------------------------------


def load_image(data: bytes | str | Path, name: str = "image") -> Any:
    """Decode a PNG/JPEG fully (truncated or corrupt files fail here, not later)."""
    from PIL import Image, UnidentifiedImageError

    raw = data if isinstance(data, bytes) else Path(data).read_bytes()
    try:
        with Image.open(io.BytesIO(raw)) as probe:
            if probe.format not in ("PNG", "JPEG"):
                raise InputFileError(f"{name}: only PNG and JPEG images are accepted")
            if probe.width * probe.height > MAX_IMAGE_PIXELS:
                raise InputFileError(f"{name}: image too large ({probe.width}x{probe.height})")
            probe.load()
            return probe.copy()
    except InputFileError:
        raise
    except Image.DecompressionBombError as exc:
        raise InputFileError(f"{name}: image too large to decode safely ({exc})") from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise InputFileError(f"{name}: not a readable PNG/JPEG image ({exc})") from exc


def image_batch(
    images: list[Any],
    names: list[str],
    *,
    preprocess: Any = None,
    mode: str | None = None,
    size: tuple[int, int] | None = None,
) -> InputBatch:
    """PIL images -> an N x C x H x W float batch in [0, 1] (or the model's own preprocess).

    ``mode``: ``"L"`` (1 channel) or ``"RGB"``; default keeps grayscale images grayscale.
    ``size``: (width, height) to resize to. The display copy is what the model saw when no
    preprocess is given, else the RGB image at its own size.
    """
    if not images:
        raise InputFileError("no images given")
    tensors, shown = [], []
    for image, name in zip(images, names, strict=True):
        target_mode = mode or ("L" if image.mode in ("L", "1", "I;16", "I") else "RGB")
        if target_mode not in ("L", "RGB"):
            raise InputFileError(f"image mode must be 'L' or 'RGB', got {target_mode!r}")
        converted = image.convert(target_mode)
        if size is not None:
            converted = converted.resize(size)
        array = np.asarray(converted, dtype=np.float32) / 255.0
        if array.ndim == 2:
            array = array[:, :, None]
        if preprocess is not None:
            try:
                tensor = torch.as_tensor(preprocess(converted))
            except Exception as exc:
                raise InputFileError(f"{name}: the model's preprocess failed: {exc}") from exc
        else:
            tensor = torch.from_numpy(array.transpose(2, 0, 1).copy())
        tensors.append(tensor)
        shown.append(array)
    shapes = {tuple(t.shape) for t in tensors}
    if len(shapes) != 1:
        raise InputFileError(f"images differ in size after preprocessing: {sorted(shapes)}")
    display = np.stack(shown) if len({a.shape for a in shown}) == 1 else None
    return InputBatch("image", (torch.stack(tensors).float(),), names=list(names), display=display)


# ---- text ----------------------------------------------------------------------------------


def decode_text(raw: bytes, name: str = "text") -> str:
    """Strict UTF-8 decoding: invalid bytes are an error, never silently replaced."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputFileError(f"{name} is not valid UTF-8 text (byte {exc.start})") from exc


def texts_from_file(path: str | Path, field_name: str = "text") -> list[str]:
    """``.txt``: the whole file is one text; ``.jsonl``: one text per line (``field_name``)."""
    path = Path(path)
    content = decode_text(path.read_bytes(), path.name)
    if path.suffix.lower() != ".jsonl":
        text = content.strip()
        if not text:
            raise InputFileError(f"{path.name} is empty")
        return [text]
    texts = []
    for number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFileError(f"{path.name} line {number}: not JSON ({exc.msg})") from exc
        value = record.get(field_name) if isinstance(record, dict) else None
        if not isinstance(value, str):
            raise InputFileError(f"{path.name} line {number}: no string field {field_name!r}")
        texts.append(value)
    if not texts:
        raise InputFileError(f"{path.name} has no records")
    return texts


def text_batch(texts: list[str], tokenizer: Any, *, max_length: int = 512) -> InputBatch:
    """Tokenize ``texts`` (padded together) into ``input_ids``/``attention_mask`` keywords."""
    if tokenizer is None:
        raise InputFileError(
            "text input needs a tokenizer: load a Hugging Face model folder with --task"
        )
    if not texts or any(not isinstance(t, str) or not t.strip() for t in texts):
        raise InputFileError("text inputs must be non-empty strings")
    encoded = tokenizer(
        texts, return_tensors="pt", padding=True, truncation=True, max_length=max_length
    )
    kwargs = {k: v for k, v in encoded.items() if isinstance(v, torch.Tensor)}
    ids = kwargs["input_ids"]
    mask = kwargs.get("attention_mask", torch.ones_like(ids))
    tokens = [
        tokenizer.convert_ids_to_tokens(row[m.bool()].tolist())
        for row, m in zip(ids, mask, strict=True)
    ]
    names = [t if len(t) <= 40 else t[:37] + "..." for t in texts]
    return InputBatch("text", (), kwargs, names, None, None, tokens, list(texts))


# ---- tables --------------------------------------------------------------------------------


def table_batch(
    frame: Any, *, columns: list[str] | None = None, drop: list[str] | None = None
) -> InputBatch:
    """A pandas DataFrame -> an N x F float32 batch; the column names become feature names."""
    if drop:
        missing = [c for c in drop if c not in frame.columns]
        if missing:
            raise InputFileError(f"columns to drop not found: {missing}")
        frame = frame.drop(columns=drop)
    if columns:
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise InputFileError(f"feature columns not found: {missing}")
        frame = frame[columns]
    if frame.shape[0] == 0 or frame.shape[1] == 0:
        raise InputFileError("the table is empty")
    non_numeric = [str(c) for c in frame.columns if not _is_numeric(frame[c])]
    if non_numeric:
        raise InputFileError(
            f"non-numeric columns {non_numeric}: encode them, or leave them out with --drop"
        )
    values = frame.to_numpy(dtype=np.float32)
    if not np.isfinite(values).all():
        raise InputFileError("the table has missing or infinite values")
    names = [f"row {i}" for i in frame.index]
    return InputBatch(
        "table",
        (torch.from_numpy(values.copy()),),
        names=names,
        display=values,
        feature_names=[str(c) for c in frame.columns],
    )


def _is_numeric(series: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(series)) and not pd.api.types.is_bool_dtype(series)


def read_frame(path: Path) -> Any:
    """A ``.csv`` or ``.parquet`` file as a pandas DataFrame (clear errors, no guessing)."""
    try:
        import pandas as pd
    except ImportError as exc:
        raise InputFileError("tables need pandas: pip install 'dlbacktrace[global]'") from exc
    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except Exception as exc:
        raise InputFileError(f"{path.name}: cannot read the table ({exc})") from exc


# ---- tensors -------------------------------------------------------------------------------


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
    """``.npy`` (one positional input) or ``.safetensors`` (one tensor, or keyword inputs)."""
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


# ---- dispatch ------------------------------------------------------------------------------


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
    """Read one input file for ``loaded`` (a :class:`~dlbacktrace.io.loading.LoadedModel`)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"input file not found: {path}")
    kind = kind or detect_kind(path)
    if kind == "image":
        image = load_image(path, path.name)
        preprocess = getattr(loaded, "preprocess", None)
        return image_batch(
            [image], [path.name], preprocess=preprocess, mode=image_mode, size=image_size
        )
    if kind == "text":
        return text_batch(
            texts_from_file(path), getattr(loaded, "tokenizer", None), max_length=max_length
        )
    if kind == "table":
        return table_batch(read_frame(path), columns=columns, drop=drop)
    if kind == "tensor":
        return tensor_batch(path)
    raise InputFileError(f"unknown input kind {kind!r}; choose one of {KINDS}")
