"""Compare two global explanations (e.g. a model before and after retraining, same data).

Importance is the mean |relevance| per feature. Each change comes with a standard error from the
two aggregates' own spreads, ``sqrt(var_a/n_a + var_b/n_b)`` — conservative when both were run on
the same rows, since it ignores their pairing — so small changes within noise are told apart
from real ones. Rank agreement is Spearman's correlation of the two importance vectors. When
both aggregates kept the bias lens with the same sensitive features, the change of each
sensitive feature's mean share per group comes with ``sqrt(se_a**2 + se_b**2)`` alike.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dlbacktrace.aggregate.bias import ALL_ROWS
from dlbacktrace.aggregate.result import AggregateError, GlobalExplanation, require_pandas
from dlbacktrace.aggregate.stats import ClassMoments


def _abs_stats(m: ClassMoments, per_class: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean |R|, variance of |R|, n) flattened per feature (``[K, F]`` when per class)."""
    n = (m.count if per_class else np.array([m.count.sum()])).astype(np.float64)[:, None]
    s = m.sums["sumabs"] if per_class else m.sums["sumabs"].sum(0, keepdims=True)
    ss = m.sums["sumsq"] if per_class else m.sums["sumsq"].sum(0, keepdims=True)
    s, ss = s.reshape(len(n), -1), ss.reshape(len(n), -1)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = s / n
        var = np.clip((ss - s * s / n) / (n - 1), 0.0, None)
    return mean, var, np.broadcast_to(n, mean.shape)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties).

    Parameters
    ----------
    a, b
        Two vectors of the same length.

    Returns
    -------
    The correlation, or NaN when either vector is constant.
    """
    pd = require_pandas()
    ra = pd.Series(a).rank().to_numpy()
    rb = pd.Series(b).rank().to_numpy()
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


@dataclass
class Comparison:
    """What changed from ``a`` to ``b``: per-feature (and per-class) importance shifts.

    Built by :func:`compare`; importance is the mean |relevance| per feature.

    Parameters
    ----------
    labels
        Feature names, ``F`` of them.
    class_names
        Class names, ``K`` of them.
    name_a, name_b
        What to call the two aggregates in tables and the summary.
    importance_a, importance_b
        ``[F]`` importance over all rows.
    stderr
        ``[F]`` standard error of the change.
    class_a, class_b
        ``[K, F]`` per-class importance (NaN where a class has no rows).
    class_stderr
        ``[K, F]`` standard error of the per-class change.
    shares
        The bias lens, when both aggregates kept the same sensitive features: one record per
        (sensitive feature, group) in both, with both mean shares, the change and its
        standard error.
    """

    labels: list[str]
    class_names: list[str]
    name_a: str
    name_b: str
    importance_a: np.ndarray  # [F]
    importance_b: np.ndarray
    stderr: np.ndarray  # [F]
    class_a: np.ndarray  # [K, F] per-class mean |R| (NaN where a class has no rows)
    class_b: np.ndarray
    class_stderr: np.ndarray
    shares: list[dict[str, Any]] = field(default_factory=list)

    @property
    def change(self) -> np.ndarray:
        """``[F]`` importance of ``b`` minus importance of ``a``."""
        return self.importance_b - self.importance_a

    @property
    def rank_correlation(self) -> float:
        """Spearman's correlation of the two importance vectors."""
        return spearman(self.importance_a, self.importance_b)

    def class_rank_correlation(self) -> dict[str, float]:
        """Spearman's correlation of the two importance vectors of each class, by class name."""
        return {c: spearman(self.class_a[k], self.class_b[k])
                for k, c in enumerate(self.class_names)}

    def table(self) -> Any:
        """One row per feature, sorted by change (biggest loss first)."""
        pd = require_pandas()
        with np.errstate(invalid="ignore", divide="ignore"):
            frame = pd.DataFrame({
                "feature": self.labels,
                f"importance_{self.name_a}": self.importance_a,
                f"importance_{self.name_b}": self.importance_b,
                "change": self.change,
                "stderr": self.stderr,
                "z": self.change / self.stderr,
                "relative_change": self.change / self.importance_a,
            })
        return frame.sort_values(["change", "feature"]).reset_index(drop=True)

    def class_table(self) -> Any:
        """Per-class shifts: one row per (class, feature)."""
        pd = require_pandas()
        k, f = self.class_a.shape
        with np.errstate(invalid="ignore", divide="ignore"):
            return pd.DataFrame({
                "class": np.repeat(self.class_names, f),
                "feature": np.tile(np.asarray(self.labels, dtype=object), k),
                f"importance_{self.name_a}": self.class_a.reshape(-1),
                f"importance_{self.name_b}": self.class_b.reshape(-1),
                "change": (self.class_b - self.class_a).reshape(-1),
                "stderr": self.class_stderr.reshape(-1),
            })

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable account: rank agreement, summary, per-feature and per-class
        tables (NaN -> null)."""
        def number(x: float) -> float | None:
            return None if math.isnan(x) else float(x)

        return {
            "format": "dlbacktrace.comparison/1",
            "names": [self.name_a, self.name_b],
            "features": len(self.labels),
            "classes": list(self.class_names),
            "rank_correlation": number(self.rank_correlation),
            "class_rank_correlation": {c: number(v)
                                       for c, v in self.class_rank_correlation().items()},
            "lost": self.lost(), "gained": self.gained(),
            "summary": self.summary().splitlines(),
            "table": json.loads(self.table().to_json(orient="records")),
            "class_table": json.loads(self.class_table().to_json(orient="records")),
            "sensitive_shares": [{k: number(v) if isinstance(v, float) else v
                                  for k, v in r.items()} for r in self.shares],
        }

    def lost(self, n: int = 5) -> list[str]:
        """Features that lost the most importance (largest drop first).

        Parameters
        ----------
        n
            At most this many features (default 5); only those whose importance dropped.
        """
        order = np.argsort(self.change, kind="stable")
        return [self.labels[i] for i in order[:n] if self.change[i] < 0]

    def gained(self, n: int = 5) -> list[str]:
        """Features that gained the most importance (largest gain first).

        Parameters
        ----------
        n
            At most this many features (default 5); only those whose importance rose.
        """
        order = np.argsort(-self.change, kind="stable")
        return [self.labels[i] for i in order[:n] if self.change[i] > 0]

    def summary(self, n: int = 3) -> str:
        """A plain-language account of the biggest changes.

        Parameters
        ----------
        n
            Features listed as lost and as gained, each (default 3).

        Returns
        -------
        Lines of text: rank agreement, the biggest losses and gains (within or beyond noise)
        and each class's largest shift.
        """
        rho = self.rank_correlation
        agree = ("almost the same" if rho > 0.9 else "similar" if rho > 0.7
                 else "partly different" if rho > 0.4 else "very different")
        lines = [
            f"Feature importance rankings of {self.name_a} and {self.name_b} are {agree} "
            f"(Spearman rank correlation {rho:.2f} over {len(self.labels)} features)."
        ]
        index = {name: i for i, name in enumerate(self.labels)}
        for kind, names in (("lost", self.lost(n)), ("gained", self.gained(n))):
            for name in names:
                i = index[name]
                a, b, se = self.importance_a[i], self.importance_b[i], self.stderr[i]
                d = b - a
                sig = "beyond noise" if abs(d) > 2 * se else "within noise"
                pct = f", {d / a:+.0%}" if a > 0 else ""
                lines.append(
                    f"'{name}' {kind} importance: mean |relevance| {a:.4g} -> {b:.4g} "
                    f"({d:+.3g} ± {se:.2g}{pct}; {sig})."
                )
        for r in self.shares:
            if r["group"] != ALL_ROWS:
                continue
            d, se = r["change"], r["stderr"]
            sig = "beyond noise" if abs(d) > 2 * se else "within noise"
            lines.append(f"Share of |relevance| on sensitive '{r['sensitive']}': "
                         f"{r[f'share_{self.name_a}']:.3g} -> {r[f'share_{self.name_b}']:.3g} "
                         f"({d:+.3g} ± {se:.2g}; {sig}).")
        shifts = self.class_b - self.class_a
        for k, cls in enumerate(self.class_names):
            if np.all(np.isnan(shifts[k])):
                continue
            i = int(np.nanargmax(np.abs(shifts[k])))
            lines.append(f"Class '{cls}': largest shift in '{self.labels[i]}' "
                         f"({shifts[k, i]:+.3g}).")
        return "\n".join(lines)


def compare(
    a: GlobalExplanation,
    b: GlobalExplanation,
    input: str | None = None,
    names: tuple[str, str] = ("a", "b"),
) -> Comparison:
    """Compare the feature importance of two aggregates over the same features and classes.

    Parameters
    ----------
    a, b
        The aggregates before and after (same features, same feature names).
    input
        The input to compare, for aggregates of several inputs (None: the only one).
    names
        What to call ``a`` and ``b`` in tables and the summary.

    Returns
    -------
    A :class:`Comparison`; raises ``AggregateError`` when the features differ.
    """
    if a.mode != b.mode:
        raise AggregateError(f"the aggregates were made in different modes: {a.mode!r} vs "
                             f"{b.mode!r}")
    name, ma = a.moments(input)
    _, mb = b.moments(name)
    if ma.sums["sum"].shape != mb.sums["sum"].shape:
        raise AggregateError(
            f"the aggregates have different features: {ma.sums['sum'].shape[1:]} vs "
            f"{mb.sums['sum'].shape[1:]} (classes {a.n_classes} vs {b.n_classes})"
        )
    labels_a, labels_b = a.feature_labels(name), b.feature_labels(name)
    if labels_a != labels_b:
        differ = [f"{x!r} vs {y!r}" for x, y in zip(labels_a, labels_b, strict=True) if x != y]
        raise AggregateError(f"the aggregates name their features differently ({len(differ)} "
                             f"differ, first {differ[0]})")
    if list(a.class_names) != list(b.class_names):
        raise AggregateError(f"the aggregates name their classes differently: {a.class_names} vs "
                             f"{b.class_names}")
    mean_a, var_a, n_a = _abs_stats(ma, per_class=False)
    mean_b, var_b, n_b = _abs_stats(mb, per_class=False)
    cls_a, cvar_a, cn_a = _abs_stats(ma, per_class=True)
    cls_b, cvar_b, cn_b = _abs_stats(mb, per_class=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        stderr = np.sqrt(var_a / n_a + var_b / n_b)[0]
        class_stderr = np.sqrt(cvar_a / cn_a + cvar_b / cn_b)
    return Comparison(
        labels=labels_a, class_names=list(a.class_names), name_a=names[0], name_b=names[1],
        importance_a=mean_a[0], importance_b=mean_b[0], stderr=stderr,
        class_a=cls_a, class_b=cls_b, class_stderr=class_stderr,
        shares=_share_changes(a, b, names),
    )


def _share_changes(a: GlobalExplanation, b: GlobalExplanation,
                   names: tuple[str, str]) -> list[dict[str, Any]]:
    """Per (sensitive feature, group) in both: the two mean shares, change and its SE."""
    if a.groups is None or b.groups is None or not a.groups.sensitive:
        return []
    if a.groups.sensitive != b.groups.sensitive:
        return []  # different sensitive features: nothing comparable
    sa = a.sensitive_shares().set_index(["sensitive", "group"])
    sb = b.sensitive_shares().set_index(["sensitive", "group"])
    out = []
    for key in sa.index:
        if key not in sb.index:
            continue
        ra, rb = sa.loc[key], sb.loc[key]
        out.append({
            "sensitive": key[0], "group": key[1],
            f"share_{names[0]}": float(ra["share"]), f"share_{names[1]}": float(rb["share"]),
            "change": float(rb["share"] - ra["share"]),
            "stderr": float(np.hypot(ra["stderr"], rb["stderr"])),
        })
    return out
