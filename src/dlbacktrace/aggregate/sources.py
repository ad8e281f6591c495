"""Turn any supported dataset into numbered batches of model inputs (and optional labels).

Supported: a ``torch.utils.data.DataLoader`` or any iterable of batches (a tensor, an ``(x, y)``
tuple, or a mapping of keyword inputs such as a Hugging Face ``BatchEncoding``, whose
``labels``/``label`` entry is taken as the labels), a NumPy array, a torch tensor, or a pandas
DataFrame (feature names from its columns). Arrays are sliced without copying the whole
dataset; resuming skips finished batches by slicing (arrays) or by drawing and discarding them
(iterables, which cannot be indexed).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dlbacktrace.aggregate.bias import BiasLensError, group_labels
from dlbacktrace.engine.errors import InputError

LABEL_KEYS = ("labels", "label")


@dataclass
class Batch:
    """One batch: its number, the global number of its first row, inputs and labels.

    Parameters
    ----------
    index
        The batch number (from 0).
    offset
        The global number of the batch's first row.
    args
        Positional model inputs.
    kwargs
        Keyword model inputs.
    labels
        ``[B]`` int64 labels, if the data has them.
    groups
        ``[B]`` group label of each row (the bias lens), if any.
    """

    index: int
    offset: int
    args: tuple[Any, ...]
    kwargs: dict[str, Any] = field(default_factory=dict)
    labels: torch.Tensor | None = None
    groups: np.ndarray | None = None

    @property
    def size(self) -> int:
        """Rows in the batch (first dim of the first input)."""
        first = self.args[0] if self.args else next(iter(self.kwargs.values()))
        return int(first.shape[0])


@dataclass
class DataSource:
    """A re-iterable description of the data; ``batches(start)`` yields from batch ``start``.

    Parameters
    ----------
    data
        A DataLoader or iterable of batches, a NumPy array, a tensor or a pandas DataFrame
        (numeric columns; converted to a float64 array).
    batch_size
        Rows per batch for array data (positive).
    labels
        For array data: one label per row; for a DataFrame also a label column name (the
        column is then dropped from the features). Not allowed for iterables.
    dtype
        Floating-point inputs are cast to it.
    feature_names
        Feature names (default: a DataFrame's columns).
    device
        The model's device: batches are moved there.
    groups
        For array data: one group value per row; for a DataFrame also a column name (the
        column is then dropped from the features). Not allowed for iterables.
    """

    data: Any
    batch_size: int
    labels: Any = None
    dtype: torch.dtype = torch.float32
    feature_names: list[str] | None = None
    device: torch.device | str | None = None  # the model's device: batches are moved there
    groups: Any = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InputError(f"batch_size must be positive, got {self.batch_size}")
        data = self.data
        if isinstance(self.groups, str) and not _is_dataframe(data):
            raise BiasLensError("groups= as a column name needs DataFrame data; pass one group "
                                "value per row instead")
        if _is_dataframe(data):
            if isinstance(self.groups, str):  # a group column of the frame: not a feature
                if self.groups not in data.columns:
                    raise BiasLensError(f"group column {self.groups!r} not in the DataFrame")
                column = self.groups
                self.groups = data[column].to_numpy()
                if not (isinstance(self.labels, str) and self.labels == column):
                    data = data.drop(columns=[column])
            if isinstance(self.labels, str):  # a label column of the frame itself
                if self.labels not in data.columns:
                    raise InputError(f"label column {self.labels!r} not in the DataFrame")
                column = self.labels
                self.labels = data[column].to_numpy()
                data = data.drop(columns=[column])
            if self.feature_names is None:
                self.feature_names = [str(c) for c in data.columns]
            from pandas.api.types import is_bool_dtype, is_numeric_dtype

            non_numeric = [c for c, t in data.dtypes.items()
                           if not (is_numeric_dtype(t) or is_bool_dtype(t))]
            if non_numeric:
                raise InputError(
                    f"DataFrame columns must be numeric (encode them first): {non_numeric[:5]}"
                )
            self.data = data.to_numpy(dtype=np.float64)
        elif isinstance(data, (str, bytes)) or not (
            isinstance(data, (np.ndarray, torch.Tensor)) or isinstance(data, Iterable)
        ):
            raise InputError(
                "data must be a DataLoader, an iterable of batches, a NumPy array, a tensor or a "
                f"pandas DataFrame, got {type(data).__name__}"
            )
        if self.is_array:
            if self.data.ndim < 2:
                raise InputError(
                    f"array data must be [rows, features...], got shape {tuple(self.data.shape)}"
                )
            if self.labels is not None and len(self.labels) != len(self.data):
                raise InputError(
                    f"{len(self.labels)} labels for {len(self.data)} rows of data"
                )
            if self.groups is not None:
                self.groups = group_labels(self.groups, len(self.data))
        elif self.labels is not None:
            raise InputError("labels= applies to array data; iterables carry their own labels")
        elif self.groups is not None:
            raise BiasLensError("groups= applies to array data and DataFrames, not iterables")

    @property
    def is_array(self) -> bool:
        """Whether the data is an array or tensor (sliced) rather than an iterable (drawn)."""
        return isinstance(self.data, (np.ndarray, torch.Tensor))

    @property
    def n_batches(self) -> int | None:
        """The number of batches, or None for an iterable without a length."""
        if self.is_array:
            return -(-len(self.data) // self.batch_size)
        try:
            return len(self.data)
        except TypeError:
            return None

    def _tensor(self, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.ascontiguousarray(value))
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                value = value.to(self.dtype)
            if self.device is not None:
                value = value.to(self.device)
        return value

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """Batches numbered from 0; those before ``start`` are skipped without explaining.

        Parameters
        ----------
        start
            The first batch to yield (arrays are sliced from there; iterables are drawn and
            the earlier batches discarded).
        """
        if self.is_array:
            n, bs = len(self.data), self.batch_size
            for index in range(start, self.n_batches or 0):
                lo, hi = index * bs, min((index + 1) * bs, n)
                labels = None if self.labels is None else self._labels(self.labels[lo:hi])
                groups = None if self.groups is None else self.groups[lo:hi]
                yield Batch(index, lo, (self._tensor(self.data[lo:hi]),), {}, labels, groups)
            return
        offset = 0
        for index, item in enumerate(self.data):
            batch = self._batch(index, offset, item)
            offset += batch.size
            if index >= start:
                yield batch

    def _labels(self, value: Any) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            value = np.array(value)  # a copy: label arrays may be read-only views
        labels = torch.as_tensor(value)
        if labels.is_floating_point():
            labels = labels.round().long()
        return labels.long()

    def _batch(self, index: int, offset: int, item: Any) -> Batch:
        if isinstance(item, (torch.Tensor, np.ndarray)):
            return Batch(index, offset, (self._tensor(item),))
        if isinstance(item, Mapping):
            kwargs = {k: self._tensor(v) for k, v in item.items() if k not in LABEL_KEYS}
            label = next((item[k] for k in LABEL_KEYS if k in item), None)
            if not kwargs:
                raise InputError(f"batch {index} has no model inputs, only labels")
            return Batch(index, offset, (), kwargs, None if label is None else self._labels(label))
        if isinstance(item, (tuple, list)) and item:
            if len(item) == 1:
                return Batch(index, offset, (self._tensor(item[0]),))
            *xs, y = item
            return Batch(index, offset, tuple(self._tensor(x) for x in xs), {}, self._labels(y))
        raise InputError(
            f"batch {index} is a {type(item).__name__}; expected a tensor, an (x, y) tuple or a "
            "mapping of keyword inputs"
        )


def _is_dataframe(data: Any) -> bool:
    return type(data).__name__ == "DataFrame" and hasattr(data, "columns")
