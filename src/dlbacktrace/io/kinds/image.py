"""Images: PNG/JPEG files and uploads (Pillow), shown as heat maps in reports."""

from __future__ import annotations

import base64
import binascii
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from dlbacktrace.io.batch import InputBatch, InputFileError
from dlbacktrace.io.kinds.base import (
    InputKind,
    ReadOptions,
    RequestField,
    RequestLimits,
    RowInputs,
)

__all__ = ["MAX_IMAGE_PIXELS", "ImageKind", "image_batch", "load_image"]

MAX_IMAGE_PIXELS = 64_000_000


def load_image(data: bytes | str | Path, name: str = "image") -> Any:
    """Decode a PNG/JPEG fully (truncated or corrupt files fail here, not later).

    Parameters
    ----------
    data
        The file's bytes, or its path.
    name
        What error messages call the image.
    """
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

    The display copy is what the model saw when no preprocess is given, else the image at
    its own size.

    Parameters
    ----------
    images
        Decoded images (:func:`load_image`).
    names
        One name per image.
    preprocess
        The model's own preprocessing (PIL image -> tensor), if it has one.
    mode
        ``"L"`` (1 channel) or ``"RGB"``; default keeps grayscale images grayscale.
    size
        (width, height) to resize to.
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


class ImageKind(InputKind):
    """PNG/JPEG images: one image per file, batched by grouping files."""

    name = "image"
    suffixes = (".png", ".jpg", ".jpeg")
    request_fields: ClassVar[dict[str, RequestField]] = {
        "image_base64": RequestField(str | None, "A PNG or JPEG file, base64-encoded."),
    }

    def from_file(self, path: Path, loaded: Any = None,
                  options: ReadOptions | None = None) -> InputBatch:
        return self.from_files([path], loaded, options)[0]

    def from_files(self, paths: Sequence[Path], loaded: Any = None,
                   options: ReadOptions | None = None, *, batch_size: int = 32,
                   inline: Sequence[str] = ()) -> list[InputBatch]:
        if inline:
            raise InputFileError("image inputs cannot be given inline")
        options = options or ReadOptions()
        paths = [Path(p) for p in paths]
        return [
            image_batch([load_image(p, p.name) for p in group], [p.name for p in group],
                        preprocess=getattr(loaded, "preprocess", None),
                        mode=options.image_mode, size=options.image_size)
            for group in (paths[i : i + batch_size] for i in range(0, len(paths), batch_size))
        ]

    def from_upload(self, raw: bytes, name: str, loaded: Any = None) -> InputBatch:
        return image_batch([load_image(raw, name)], [name],
                           preprocess=getattr(loaded, "preprocess", None))

    def from_request(self, request: Any, loaded: Any = None,
                     limits: RequestLimits | None = None) -> InputBatch:
        if not request.image_base64:
            raise InputFileError("kind=image needs image_base64")
        try:
            raw = base64.b64decode(request.image_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InputFileError(f"image_base64 is not valid base64: {exc}") from exc
        return image_batch([load_image(raw, "image")], ["image"],
                           preprocess=getattr(loaded, "preprocess", None))

    def report_row(self, maps: dict[str, torch.Tensor], i: int, inputs: RowInputs, *,
                   top_k: int = 10, figures: bool = True) -> dict[str, Any]:
        """Top pixels of the channel-summed map, plus heat-map (and contrast) figures."""
        rel = maps["relevance"][i]
        heat = rel.reshape(-1, *rel.shape[-2:]).sum(dim=0) if rel.dim() > 2 else rel
        order = heat.abs().flatten().argsort(descending=True)[:top_k]
        width = heat.shape[-1]
        row: dict[str, Any] = {
            "top_features": [
                {"feature": f"pixel ({int(j) // width}, {int(j) % width})",
                 "relevance": float(heat.flatten()[j])}
                for j in order.tolist()
            ],
            "shape": list(rel.shape),
        }
        if figures:
            from dlbacktrace.report.figures import contrast_png, heatmap_png

            image = inputs.args[0][i]
            row["heatmap_png"] = heatmap_png(image, rel)
            if "positive" in maps:
                row["contrast_png"] = contrast_png(
                    image, maps["positive"][i], maps["negative"][i], rel
                )
        return row
