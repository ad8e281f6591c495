"""Driving the engine for text models: the Backtrace per model, padding, batch chunks.

A capture costs seconds for a transformer; the engine exports the batch and sequence sizes as
dynamic dimensions and shares captures between every :class:`Backtrace` of a model, so texts of
any length and any chunk size reuse one capture. The helpers keep the :class:`Backtrace` of the
last few models (:func:`clear_cache` empties it and the models' shared captures), right-pad
sequences with ``attention_mask`` 0 (to a multiple of ``bucket`` tokens when asked: that limits
the captures of a model export cannot make dynamic) and explain in chunks of ``batch_size``.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from dlbacktrace.engine.backtrace import Backtrace

__all__ = [
    "backtrace_for",
    "batch_sizes",
    "bucket_length",
    "clear_cache",
    "pad_right",
]

_CACHE_SIZE = 2
_BACKTRACES: OrderedDict[int, Backtrace] = OrderedDict()


def clear_cache() -> None:
    """Forget the cached Backtraces and their models' captures (and the references they hold
    to models)."""
    for bt in _BACKTRACES.values():
        bt.forget_captures()
    _BACKTRACES.clear()


def backtrace_for(model: torch.nn.Module, backtrace: Backtrace | None = None) -> Backtrace:
    """The given ``backtrace``, or the cached one for ``model`` (created on first use)."""
    if backtrace is not None:
        if backtrace.model is not model:
            raise ValueError("backtrace= wraps a different model than the one given")
        return backtrace
    key = id(model)
    found = _BACKTRACES.get(key)
    if found is not None and found.model is model:
        _BACKTRACES.move_to_end(key)
        return found
    # Language models: big weights, short inputs. Recomputing |w| per call costs little next to
    # a sweep, while caching it would add most of the weights' size to resident memory.
    bt = Backtrace(model, cache_abs_weights=False)
    _BACKTRACES[key] = bt
    while len(_BACKTRACES) > _CACHE_SIZE:
        _BACKTRACES.popitem(last=False)
    return bt


def bucket_length(n: int, bucket: int, limit: int | None = None) -> int:
    """``n`` rounded up to a multiple of ``bucket``, but never beyond ``limit``."""
    if bucket < 1:
        raise ValueError(f"bucket must be a positive number of tokens, got {bucket}")
    length = -(-n // bucket) * bucket
    return min(length, limit) if limit is not None and n <= limit else length


def pad_right(
    ids: torch.Tensor, mask: torch.Tensor, length: int, pad_id: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad ``[B, T]`` ids and mask to ``length`` (pad id, mask 0)."""
    extra = length - ids.shape[1]
    if extra <= 0:
        return ids, mask
    ids = torch.nn.functional.pad(ids, (0, extra), value=pad_id)
    mask = torch.nn.functional.pad(mask, (0, extra), value=0)
    return ids, mask


def batch_sizes(n: int, batch_size: int) -> list[int]:
    """Chunk sizes for ``n`` rows: full chunks of ``batch_size`` and the rest (the capture's
    batch size is dynamic, so no chunk is padded with repeated rows)."""
    sizes = [batch_size] * (n // batch_size)
    rest = n % batch_size
    if rest:
        sizes.append(rest)
    return sizes
