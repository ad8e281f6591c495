"""Tables: ``.csv``/``.parquet`` (pandas) or JSON rows; column names become feature names and
reports show per-feature relevance beside the values."""

from __future__ import annotations

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

__all__ = ["TableKind", "read_frame", "rows_batch", "table_batch"]


def _is_numeric(series: Any) -> bool:
    import pandas as pd

    return bool(pd.api.types.is_numeric_dtype(series)) and not pd.api.types.is_bool_dtype(series)


def table_batch(
    frame: Any, *, columns: list[str] | None = None, drop: list[str] | None = None
) -> InputBatch:
    """A pandas DataFrame -> an N x F float32 batch; the column names become feature names.

    Parameters
    ----------
    frame
        The table, one row per input.
    columns
        Feature columns to keep, in this order (default: all).
    drop
        Columns to leave out first (a label, an id).
    """
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


def rows_batch(rows: list[list[float]], names: list[str] | None) -> InputBatch:
    """Rows of numbers (a JSON request) as a table batch, checked like a file's rows.

    Parameters
    ----------
    rows
        Equally long rows of feature values.
    names
        Feature names (default ``x0``, ``x1``, ...).
    """
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is in the server extras' environment
        values = torch.tensor(rows, dtype=torch.float32)
        return InputBatch("table", (values,), names=[f"row {i}" for i in range(len(rows))],
                          feature_names=names)
    widths = {len(r) for r in rows}
    if len(widths) != 1:
        raise InputFileError("table rows differ in length")
    width = widths.pop()
    if names is not None and len(names) != width:
        raise InputFileError(f"a row needs {len(names)} values ({', '.join(names)}), got {width}")
    return table_batch(pd.DataFrame(rows, columns=names or [f"x{i}" for i in range(width)]))


def read_frame(path: Path) -> Any:
    """A ``.csv`` or ``.parquet`` file as a pandas DataFrame (clear errors, no guessing).

    Parameters
    ----------
    path
        The table file.
    """
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


class TableKind(InputKind):
    """Tables of numeric features, one row per input."""

    name = "table"
    suffixes = (".csv", ".parquet")
    request_fields: ClassVar[dict[str, RequestField]] = {
        "row": RequestField(list[float] | dict[str, float] | None,
                            "One table row: values in feature order, or feature -> value."),
        "rows": RequestField(list[list[float]] | None, "Up to 64 table rows."),
    }

    def from_file(self, path: Path, loaded: Any = None,
                  options: ReadOptions | None = None) -> InputBatch:
        options = options or ReadOptions()
        return table_batch(read_frame(Path(path)), columns=options.columns, drop=options.drop)

    def from_request(self, request: Any, loaded: Any = None,
                     limits: RequestLimits | None = None) -> InputBatch:
        limits = limits or RequestLimits()
        names = getattr(loaded, "feature_names", None)
        if isinstance(request.row, dict):
            if names is None:
                names = list(request.row)
            missing = [n for n in names if n not in request.row]
            extra = [k for k in request.row if k not in names]
            if missing or extra:
                raise InputFileError(f"row keys do not match the features: missing {missing}, "
                                     f"unknown {extra}")
            rows = [[request.row[n] for n in names]]
        elif request.row is not None:
            rows = [list(request.row)]
        else:
            rows = [list(r) for r in request.rows or []]
        if not rows or len(rows) > limits.max_rows or not rows[0]:
            raise InputFileError(f"kind=table needs row or 1 to {limits.max_rows} rows")
        return rows_batch(rows, names)

    def report_row(self, maps: dict[str, torch.Tensor], i: int, inputs: RowInputs, *,
                   top_k: int = 10, figures: bool = True) -> dict[str, Any]:
        """Every feature's value and relevance (largest first) with a bar width in %."""
        values = inputs.args[0]
        feature_names = inputs.feature_names or [f"x{j}" for j in range(values.shape[-1])]
        rel = maps["relevance"][i].reshape(-1)
        scale = float(rel.abs().max()) if rel.numel() else 0.0
        features = []
        for j, name in enumerate(feature_names):
            item = {
                "name": name,
                "value": float(values[i].reshape(-1)[j]),
                "relevance": float(rel[j]),
                "width": 0.0 if scale == 0 else 100.0 * abs(float(rel[j])) / scale,
            }
            if "positive" in maps:
                item["positive"] = float(maps["positive"][i].reshape(-1)[j])
                item["negative"] = float(maps["negative"][i].reshape(-1)[j])
            features.append(item)
        features.sort(key=lambda f: -abs(f["relevance"]))
        return {
            "features": features,
            "top_features": [{"feature": f["name"], "relevance": f["relevance"]}
                             for f in features[:top_k]],
        }
