"""A user's own model and data as an evaluation :class:`~dlbacktrace.evaluation.task.Task`.

The data may be given as it is at hand: a tensor or NumPy array (tables ``[N, F]``, images
``[N, C, H, W]``, any float ``[N, ...]``), a pandas DataFrame (columns are the features), a
dict of token tensors (``input_ids``, ``attention_mask``), a list of texts (with the model's
tokenizer), an :class:`~dlbacktrace.io.batch.InputBatch`, or a file or folder the CLI reads
(CSV/parquet, an image folder, JSONL/TXT text, ``.npy``/``.safetensors``) through the
registered input kinds (:mod:`dlbacktrace.io.kinds`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlbacktrace.evaluation.metrics import MetricError
from dlbacktrace.evaluation.task import Task, predicted
from dlbacktrace.io.batch import InputBatch, InputFileError

__all__ = ["EvaluationDataError", "read_data", "user_task"]

# sampling methods' budgets on a user's data: enough for a proof of concept in minutes
SAMPLES = {"lime": 200, "kernel-shap": 200}
IG_STEPS = 32


class EvaluationDataError(InputFileError):
    """The data to evaluate on cannot be read or does not fit the model."""


def _from_frame(frame: Any, label_column: str | None) -> tuple[InputBatch, Any]:
    from dlbacktrace.io.kinds.table import table_batch

    labels = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise EvaluationDataError(
                f"label column {label_column!r} not found; columns: {', '.join(map(str, frame))}"
            )
        labels = frame[label_column].to_numpy()
    return table_batch(frame, drop=[label_column] if label_column else None), labels


def _image_folder(folder: Path, loaded: Any) -> InputBatch:
    from dlbacktrace.io.kinds import get_kind

    kind = get_kind("image")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in kind.suffixes)
    if not files:
        raise EvaluationDataError(
            f"folder {folder.name!r} has no images ({', '.join(kind.suffixes)})"
        )
    batches = kind.from_files(files, loaded, batch_size=len(files))
    return batches[0]


def read_data(
    data: Any, loaded: Any = None, *, label_column: str | None = None
) -> tuple[InputBatch, Any]:
    """``data`` as one input batch, and the labels of a table's label column (or None).

    Parameters
    ----------
    data
        See the module docstring.
    loaded
        The :class:`~dlbacktrace.io.loading.LoadedModel` (its tokenizer and preprocess), or
        None.
    label_column
        A table's column of true labels, left out of the features.
    """
    if isinstance(data, InputBatch):
        return data, None
    if isinstance(data, (str, Path)):
        path = Path(data)
        if path.is_dir():
            return _image_folder(path, loaded), None
        if not path.is_file():
            raise EvaluationDataError(f"data not found: {path}")
        from dlbacktrace.io.kinds import detect_kind, get_kind

        kind = detect_kind(path)
        if kind == "table":
            from dlbacktrace.io.kinds.table import read_frame

            return _from_frame(read_frame(path), label_column)
        if label_column is not None:
            raise EvaluationDataError("--label-column applies to tables (.csv, .parquet) only")
        return get_kind(kind).from_file(path, loaded), None
    if hasattr(data, "columns") and hasattr(data, "to_numpy"):  # a pandas DataFrame
        return _from_frame(data, label_column)
    if isinstance(data, Mapping):
        tensors = {k: torch.as_tensor(v) for k, v in data.items()}
        if "input_ids" not in tensors:
            raise EvaluationDataError("a dict of inputs needs 'input_ids' (token inputs)")
        return InputBatch("text", (), tensors), None
    if isinstance(data, Sequence) and data and all(isinstance(t, str) for t in data):
        from dlbacktrace.io.kinds.text import text_batch

        return text_batch(list(data), getattr(loaded, "tokenizer", None)), None
    if isinstance(data, np.ndarray):
        data = torch.from_numpy(np.ascontiguousarray(data))
    if isinstance(data, torch.Tensor):
        if not data.is_floating_point() or data.dim() < 2 or data.shape[0] == 0:
            raise EvaluationDataError(
                f"data must be float [N, ...] with N >= 1, got {data.dtype} {tuple(data.shape)}"
            )
        kind = "table" if data.dim() == 2 else ("image" if data.dim() == 4 else "tensor")
        return InputBatch(kind, (data.detach().float().contiguous(),)), None
    raise EvaluationDataError(
        f"cannot evaluate on data of type {type(data).__name__}: give a tensor, an array, a "
        "DataFrame, a dict of token tensors, a list of texts or a file/folder"
    )


def _targets(model: nn.Module, inputs: Any, target: Any, n: int) -> torch.Tensor:
    if target is None:
        return predicted(model, inputs)
    t = torch.as_tensor(target, dtype=torch.long).flatten()
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise EvaluationDataError(f"target has {t.numel()} entries for {n} instances")
    return t


def _label_indices(labels: Any, classes: list[str] | None) -> torch.Tensor | None:
    """True labels as class indices where they can be read as such (ints, or class names)."""
    if labels is None:
        return None
    if np.issubdtype(np.asarray(labels).dtype, np.integer):
        return torch.tensor(np.array(labels), dtype=torch.long)
    if classes:
        index = {str(c): i for i, c in enumerate(classes)}
        if all(str(v) in index for v in labels):
            return torch.tensor([index[str(v)] for v in labels], dtype=torch.long)
    return None


def _token_removal(tokenizer: Any, ids: torch.Tensor) -> tuple[int, str]:
    for attr, note in (("mask_token_id", "mask token"), ("pad_token_id", "pad token"),
                       ("unk_token_id", "unknown token")):
        value = getattr(tokenizer, attr, None)
        if value is not None:
            return int(value), f"{note} (id {int(value)})"
    return 0, "token id 0"


def user_task(
    model: nn.Module | Any,
    data: Any,
    *,
    instances: int | None = None,
    target: Any = None,
    removal: Any = None,
    feature_names: list[str] | None = None,
    label_column: str | None = None,
    name: str = "data",
) -> Task:
    """The evaluation task of ``model`` on ``data``.

    Parameters
    ----------
    model
        An ``nn.Module`` or a :class:`~dlbacktrace.io.loading.LoadedModel`.
    data
        See the module docstring.
    instances
        Explain the first this many rows (None: all).
    target
        The explained class: None (predicted), one index, or one per row.
    removal
        What a removed feature becomes in the perturbation metrics: ``"zero"``, ``"mean"``,
        ``"blur"`` (images), a number (a token id for text) or a tensor. Default: tables the
        column means of ``data``, images ``"zero"``, text the mask (else pad) token.
    feature_names
        One name per feature (default: the table's columns).
    label_column
        A table's true-label column (left out of the features; gives the accuracy).
    name
        The task's name in results.
    """
    loaded = model if hasattr(model, "model") and isinstance(model.model, nn.Module) else None
    module = loaded.model if loaded is not None else model
    if not isinstance(module, nn.Module):
        raise EvaluationDataError(f"model must be an nn.Module, got {type(module).__name__}")
    batch, labels = read_data(data, loaded, label_column=label_column)
    n_all = batch.size
    n = n_all if instances is None else min(int(instances), n_all)
    if n < 1:
        raise EvaluationDataError("instances must be at least 1")
    module = module.eval()
    info: dict[str, Any] = {"instances": n, "rows in data": n_all}
    if batch.args:
        x_all = batch.args[0]
        x = x_all[:n].clone()
        inputs: Any = x
    else:
        inputs = {k: v[:n].clone() for k, v in batch.kwargs.items()}
        x_all = None
    try:
        targets = _targets(module, inputs, target, n)
    except EvaluationDataError:
        raise
    except Exception as exc:
        hint = "" if batch.kind != "table" or label_column else (
            "; if a column holds the labels, name it with label_column (--label-column)")
        raise EvaluationDataError(
            f"the model does not run on this data ({type(exc).__name__}: {exc}){hint}"
        ) from exc
    names = feature_names or batch.feature_names or getattr(loaded, "feature_names", None)
    classes = getattr(loaded, "labels", None) or getattr(module, "labels", None)
    truth = _label_indices(labels, classes)
    if truth is not None and len(truth) == n_all:
        info["accuracy (label column)"] = float((predicted(module, inputs) == truth[:n])
                                                .float().mean())
    opts: dict[str, dict[str, Any]] = {m: {"n_samples": s} for m, s in SAMPLES.items()}
    opts["integrated-gradients"] = {"n_steps": IG_STEPS}
    if x_all is None:
        tokenizer = getattr(loaded, "tokenizer", None)
        ids = inputs["input_ids"]
        mask = inputs.get("attention_mask", torch.ones_like(ids))
        inputs.setdefault("attention_mask", mask)
        special = torch.tensor(list(getattr(tokenizer, "all_special_ids", []) or []),
                               dtype=ids.dtype)
        valid = mask.bool() & ~torch.isin(ids, special)
        if removal is None:
            removal, note = _token_removal(tokenizer, ids)
        else:
            note = f"token id {int(removal)}"
        for m in ("lime", "kernel-shap", "integrated-gradients", "deeplift"):
            opts.setdefault(m, {})["baseline_token_id"] = int(removal)
        return Task(name, f"{type(module).__name__} on {n} texts", module, inputs, targets,
                    removal=int(removal), removal_note=note, valid_elements=valid,
                    fractions=(0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0),
                    eraser_bins=(0.1, 0.2, 0.5), options=opts, chunk=16, info=info)
    if removal is None:
        if x.dim() == 2:
            removal = x_all.mean(0)
            note = f"the column means of the data ({n_all} rows)"
        else:
            removal, note = "zero", "zero"
    elif isinstance(removal, str) and removal == "mean" and x.dim() == 2:
        removal, note = x_all.mean(0), f"the column means of the data ({n_all} rows)"
    else:
        note = str(removal) if not isinstance(removal, torch.Tensor) else "a given tensor"
    if isinstance(removal, torch.Tensor):
        if removal.shape != x.shape[1:] and removal.numel() not in (1,):
            raise MetricError(f"removal tensor of shape {tuple(removal.shape)} does not fit "
                              f"inputs of shape {tuple(x.shape[1:])}")
        for m in ("lime", "kernel-shap", "integrated-gradients", "deeplift"):
            opts.setdefault(m, {})["baseline"] = removal
    elif isinstance(removal, (int, float)):
        for m in ("lime", "kernel-shap", "integrated-gradients", "deeplift"):
            opts.setdefault(m, {})["baseline"] = float(removal)
    if x.dim() == 4 and x.shape[-1] * x.shape[-2] <= 1024:  # small images: one per pixel
        for m in ("lime", "kernel-shap"):
            opts[m]["feature_mask"] = "pixels"
    if names is not None and len(names) != x[0].numel():
        raise EvaluationDataError(f"{len(names)} feature names for {x[0].numel()} features")
    info["features"] = int(x[0].numel())
    steps = min(20, max(2, int(x[0].numel()) if x.dim() == 2 else 16))
    return Task(name, f"{type(module).__name__} on {n} rows of shape {tuple(x.shape[1:])}",
                module, x, targets, removal=removal, removal_note=note, steps=steps,
                options=opts, chunk=32, info=info, feature_names=names)
