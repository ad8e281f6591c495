"""The bias lens: relevance statistics per group of rows, and the share of sensitive features.

Rows carry a group label (e.g. the applicant's sex). Per group the lens keeps exact float64 sums
of each feature's relevance (count, sum, sum of |R|, sum of squares), so per-group means are
exact and merge across batches and backends like the per-class statistics. For each *sensitive*
feature (one column, or a one-hot group of columns ``name=...``) it keeps, per group, the sums
of the per-row share ``s_i = sum_{j in S} |R_ij| / sum_j |R_ij|`` and of ``s_i**2``: the
reported share is the mean of the per-row shares and its standard error is the sample standard
deviation over rows divided by ``sqrt(n)``. Rows whose relevance is all zero have no share and
are left out of the share statistics (not of the counts). Groups form an open set: tables are
keyed by the sorted group labels and merge by union.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlbacktrace.engine.errors import InputError

FEATURE_FIELDS = ("sum", "sumabs", "sumsq")
SHARE_FIELDS = ("n", "sum", "sumsq")
ALL_ROWS = "(all rows)"


class BiasLensError(InputError):
    """Groups or sensitive features do not fit the data (unknown column, wrong length)."""


def resolve_sensitive(
    sensitive: Sequence[str] | Mapping[str, Sequence[str]], labels: Sequence[str]
) -> dict[str, list[int]]:
    """Map each sensitive feature to the indices of its columns.

    A name matches the column of that exact name, or else every one-hot column ``name=...``
    (``"status_sex"`` matches ``"status_sex=male : single"`` and its siblings). A mapping
    ``{name: [column or one-hot prefix, ...]}`` names a feature made of several such parts.

    Parameters
    ----------
    sensitive
        Feature names, or ``{name: [parts]}``.
    labels
        The column names of the explained input.

    Returns
    -------
    ``{name: sorted column indices}``; raises ``BiasLensError`` for a name that matches none.
    """
    if isinstance(sensitive, str):
        sensitive = [s.strip() for s in sensitive.split(",") if s.strip()]
    parts = (
        {str(k): [v] if isinstance(v, str) else [str(p) for p in v]
         for k, v in sensitive.items()}
        if isinstance(sensitive, Mapping) else {str(s): [str(s)] for s in sensitive}
    )
    if not parts:
        raise BiasLensError("sensitive= names no feature")
    labels = [str(x) for x in labels]
    out: dict[str, list[int]] = {}
    for name, members in parts.items():
        found: set[int] = set()
        for member in members:
            hits = [i for i, x in enumerate(labels) if x == member]
            if not hits:
                hits = [i for i, x in enumerate(labels) if x.startswith(f"{member}=")]
            if not hits:
                close = sorted({x.split("=", 1)[0] for x in labels if member.lower() in x.lower()})
                hint = f"; did you mean {', '.join(map(repr, close[:5]))}?" if close else ""
                raise BiasLensError(
                    f"sensitive feature {member!r} matches no column (exactly, or as a one-hot "
                    f"group '{member}=...'){hint}"
                )
            found.update(hits)
        if not found:
            raise BiasLensError(f"sensitive feature {name!r} names no columns")
        out[name] = sorted(found)
    return out


def group_labels(values: Any, rows: int | None = None) -> np.ndarray:
    """One string label per row: ``str`` of each value (so NaN is ``"nan"``, None ``"None"``).

    Parameters
    ----------
    values
        An array, list, tensor or Series of one group value per row.
    rows
        The number of rows the data has (checked when given).
    """
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    array = np.asarray(values, dtype=object)
    if array.ndim != 1:
        raise BiasLensError("groups= must be a column name or one group value per row")
    if rows is not None and len(array) != rows:
        raise BiasLensError(f"{len(array)} group values for {rows} rows of data")
    return np.array([str(v) for v in array], dtype=str)


@dataclass
class GroupStats:
    """Per-group sums of one ``[rows, features]`` input's relevance, and sensitive shares.

    Parameters
    ----------
    input
        The explained input these statistics are of.
    names
        ``G`` sorted, unique group labels.
    count
        ``[G]`` int64 rows per group.
    sums
        ``"sum"``, ``"sumabs"``, ``"sumsq"`` -> ``[G, F]`` float64 sums of relevance.
    sensitive
        ``{sensitive feature: column indices}`` (may be empty).
    shares
        ``"n"`` (rows with a share), ``"sum"``, ``"sumsq"`` -> ``[G, S]`` sums of per-row
        shares, one column per sensitive feature in ``sensitive`` order.
    """

    input: str
    names: list[str]
    count: np.ndarray
    sums: dict[str, np.ndarray]
    sensitive: dict[str, list[int]] = field(default_factory=dict)
    shares: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_batch(
        cls, input: str, relevance: np.ndarray, groups: np.ndarray,
        sensitive: dict[str, list[int]] | None = None,
    ) -> GroupStats:
        """Partial sums of one batch.

        Parameters
        ----------
        input
            The input's name.
        relevance
            ``[B, F]`` relevance of each row (float64; the net map in contrast mode).
        groups
            ``[B]`` group label of each row.
        sensitive
            ``{name: column indices}`` whose shares are kept.
        """
        rel = np.asarray(relevance, np.float64).reshape(len(relevance), -1)
        sensitive = dict(sensitive or {})
        for name, cols in sensitive.items():
            if not cols or max(cols) >= rel.shape[1]:
                raise BiasLensError(f"sensitive feature {name!r}: columns {cols} out of range "
                                    f"for {rel.shape[1]} features")
        names, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        inverse = inverse.reshape(-1)
        # Rows sorted by group (stable), one reduceat per field: a fixed summation order.
        order = np.argsort(inverse, kind="stable")
        count = np.bincount(inverse, minlength=len(names)).astype(np.int64)
        starts = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)

        def per_group(values: np.ndarray) -> np.ndarray:
            if not len(order):
                return np.zeros((0, *values.shape[1:]))
            return np.add.reduceat(values[order], starts, axis=0)

        absolute = np.abs(rel)
        sums = {"sum": per_group(rel), "sumabs": per_group(absolute), "sumsq": per_group(rel * rel)}
        total = absolute.sum(axis=1)
        has_share = total > 0
        share = np.zeros((len(rel), len(sensitive)))
        with np.errstate(invalid="ignore", divide="ignore"):
            for k, cols in enumerate(sensitive.values()):
                share[:, k] = np.where(has_share, absolute[:, cols].sum(axis=1) / total, 0.0)
        shares = {
            "n": per_group(np.repeat(has_share[:, None], len(sensitive), 1).astype(np.int64)),
            "sum": per_group(share), "sumsq": per_group(share * share),
        }
        return cls(input, [str(n) for n in names], count, sums, sensitive, shares)

    def copy(self) -> GroupStats:
        """An independent copy (partials may be read-only, e.g. from Ray's object store)."""
        return GroupStats(
            self.input, list(self.names), self.count.copy(),
            {k: v.copy() for k, v in self.sums.items()},
            {k: list(v) for k, v in self.sensitive.items()},
            {k: v.copy() for k, v in self.shares.items()},
        )

    def merge(self, other: GroupStats) -> None:
        """Add ``other`` into ``self`` (in place): groups are united, sums added cell by cell.

        Parameters
        ----------
        other
            Statistics of the same input, features and sensitive features.
        """
        if other.input != self.input or other.sensitive != self.sensitive:
            raise BiasLensError("cannot merge group statistics of different inputs or "
                                "sensitive features")
        if other.sums["sum"].shape[1:] != self.sums["sum"].shape[1:]:
            raise BiasLensError("cannot merge group statistics of different feature counts")
        names = sorted(set(self.names) | set(other.names))
        index = {n: i for i, n in enumerate(names)}
        mine = np.array([index[n] for n in self.names], dtype=np.int64)
        theirs = np.array([index[n] for n in other.names], dtype=np.int64)

        def united(a: np.ndarray, b: np.ndarray) -> np.ndarray:
            out = np.zeros((len(names), *a.shape[1:]), dtype=a.dtype)
            out[mine] += a
            out[theirs] += b
            return out

        self.count = united(self.count, other.count)
        self.sums = {k: united(v, other.sums[k]) for k, v in self.sums.items()}
        self.shares = {k: united(v, other.shares[k]) for k, v in self.shares.items()}
        self.names = names

    # ---- derived ------------------------------------------------------------------------------
    def feature_frame(self, labels: Sequence[str]) -> Any:
        """One row per (group, feature): count, mean relevance, mean |relevance|, std.

        Parameters
        ----------
        labels
            The feature names, ``F`` of them.
        """
        import pandas as pd

        n = self.count.astype(np.float64)[:, None]
        s, sa, ss = (self.sums[k] for k in FEATURE_FIELDS)
        with np.errstate(invalid="ignore", divide="ignore"):
            std = np.sqrt(np.clip((ss - s * s / n) / (n - 1), 0.0, None))
            frame = pd.DataFrame({
                "group": np.repeat(np.asarray(self.names, dtype=object), s.shape[1]),
                "feature": np.tile(np.asarray(list(labels), dtype=object), len(self.names)),
                "count": np.repeat(self.count, s.shape[1]),
                "mean": (s / n).reshape(-1),
                "mean_abs": (sa / n).reshape(-1),
                "std": std.reshape(-1),
            })
        return frame

    def share_frame(self) -> Any:
        """One row per (sensitive feature, group) and per sensitive feature over all rows
        (group ``"(all rows)"``): rows with a share, mean share, its standard error."""
        import pandas as pd

        records = []
        for k, name in enumerate(self.sensitive):
            n, s, ss = (self.shares[f][:, k] for f in SHARE_FIELDS)
            cells = [(g, n[i], s[i], ss[i]) for i, g in enumerate(self.names)]
            cells.append((ALL_ROWS, n.sum(), s.sum(), ss.sum()))
            for group, rows, total, squares in cells:
                mean, stderr = share_mean_stderr(int(rows), float(total), float(squares))
                records.append({"sensitive": name, "group": group, "rows": int(rows),
                                "share": mean, "stderr": stderr})
        return pd.DataFrame(records, columns=["sensitive", "group", "rows", "share", "stderr"])


def share_mean_stderr(n: int, total: float, squares: float) -> tuple[float, float]:
    """Mean of ``n`` per-row shares and its standard error ``std / sqrt(n)`` from their sums.

    Parameters
    ----------
    n
        Rows.
    total, squares
        The sum of the shares and of their squares.

    Returns
    -------
    ``(mean, stderr)``: NaN mean without rows, NaN standard error below two rows.
    """
    if n < 1:
        return float("nan"), float("nan")
    mean = total / n
    if n < 2:
        return mean, float("nan")
    var = max((squares - total * total / n) / (n - 1), 0.0)
    return mean, float(np.sqrt(var / n))
