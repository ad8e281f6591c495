"""``GlobalExplanation``: dataset-level relevance statistics, mergeable, exportable, storable.

The same object is the running state of an aggregation (partials merge into it in batch order),
the checkpoint written while it runs, and the final result. Storage is one ``.npz`` file with a
JSON header; loading never unpickles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dlbacktrace.aggregate.bias import FEATURE_FIELDS, SHARE_FIELDS, GroupStats
from dlbacktrace.aggregate.keyed import STAT_FIELDS, KeyedStats
from dlbacktrace.aggregate.sketch import RowSample
from dlbacktrace.aggregate.stats import ClassMoments
from dlbacktrace.aggregate.text import TextSpec
from dlbacktrace.engine.errors import InputError
from dlbacktrace.engine.fileformat import read_archive, with_npz_suffix, write_archive

FORMAT = "dlbacktrace.global/1"


class AggregateError(InputError):
    """Aggregation input or state is inconsistent (mismatched checkpoint, shapes, classes)."""


def require_pandas() -> Any:
    """The pandas module, or an ImportError naming the extra that installs it."""
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - pandas is in the 'global' extra
        raise ImportError(
            "DataFrame export needs pandas: pip install 'dlbacktrace[global]'"
        ) from exc
    return pd


def _feature_labels(shape: tuple[int, ...], names: list[str] | None) -> list[str]:
    size = int(np.prod(shape)) if shape else 1
    if names is not None:
        if len(names) != size:
            raise AggregateError(f"{len(names)} feature names for {size} features")
        return list(names)
    if len(shape) <= 1:
        return [f"x{i}" for i in range(size)]
    return [",".join(map(str, ix)) for ix in np.ndindex(*shape)]


@dataclass
class GlobalExplanation:
    """Per-class relevance statistics over a dataset (see the README's global section).

    ``inputs``/``layers`` map an input or module name to per-class sums (``ClassMoments``);
    ``tokens``/``words`` hold text statistics per occurrence; ``sample`` is a fixed-size uniform
    sample of rows (tabular inputs) used for quantiles and beeswarm plots; ``groups`` holds the
    bias lens (per-group statistics and sensitive-feature shares, see
    :mod:`dlbacktrace.aggregate.bias`) when rows were grouped. Classes are the explained target
    of each row (the predicted class unless ``target`` said otherwise).
    """

    mode: str
    target: str
    n_classes: int
    class_names: list[str]
    feature_names: dict[str, list[str] | None] = field(default_factory=dict)
    inputs: dict[str, ClassMoments] = field(default_factory=dict)
    layers: dict[str, ClassMoments] = field(default_factory=dict)
    tokens: KeyedStats | None = None
    words: KeyedStats | None = None
    text_spec: TextSpec | None = None
    sample: RowSample | None = None
    groups: GroupStats | None = None
    batches: int = 0
    rows: int = 0
    fingerprint: dict[str, Any] = field(default_factory=dict)

    # ---- merging ------------------------------------------------------------------------------
    def merge(self, other: GlobalExplanation) -> None:
        """Add another partial into this one (in place); call in a fixed order for exact bits."""
        if (other.mode, other.n_classes) != (self.mode, self.n_classes):
            raise AggregateError(
                f"cannot merge a {other.mode!r} aggregate with {other.n_classes} classes into a "
                f"{self.mode!r} one with {self.n_classes}"
            )
        for mine, theirs, kind in ((self.inputs, other.inputs, "input"),
                                   (self.layers, other.layers, "layer")):
            if mine and set(mine) != set(theirs):
                raise AggregateError(f"{kind} names differ: {sorted(mine)} vs {sorted(theirs)}")
            for name, moments in theirs.items():
                if name in mine:
                    mine[name].merge(moments)
                else:
                    mine[name] = ClassMoments(moments.count.copy(),
                                              {k: v.copy() for k, v in moments.sums.items()})
        for attr in ("tokens", "words", "sample", "groups"):
            theirs = getattr(other, attr)
            if theirs is None:
                continue
            mine = getattr(self, attr)
            if mine is None:
                setattr(self, attr, _copy(theirs))
            else:
                mine.merge(theirs)
        self.batches += other.batches
        self.rows += other.rows

    # ---- derived views ------------------------------------------------------------------------
    def moments(self, name: str | None = None, layer: bool = False) -> tuple[str, ClassMoments]:
        """The per-class running moments of one input (or layer) and its resolved name.

        Parameters
        ----------
        name
            The input (or layer) name; may be left out when there is only one.
        layer
            Look ``name`` up among the layer statistics instead of the inputs.
        """
        table = self.layers if layer else self.inputs
        if not table:
            kind = "layer" if layer else "input"
            raise AggregateError(f"this aggregate has no {kind} statistics")
        if name is None:
            if len(table) != 1:
                raise AggregateError(f"several {'layers' if layer else 'inputs'}: name one of "
                                     f"{sorted(table)}")
            name = next(iter(table))
        if name not in table:
            raise AggregateError(f"unknown name {name!r}; known: {sorted(table)}")
        return name, table[name]

    def class_counts(self) -> np.ndarray:
        """Rows explained per class."""
        first = next(iter(self.inputs.values()), None) or next(iter(self.layers.values()), None)
        if first is None:
            raise AggregateError("this aggregate holds no statistics yet")
        return first.count.copy()

    def class_maps(self, input: str | None = None, stat: str = "sum") -> np.ndarray:
        """Mean relevance per class, shaped ``[n_classes, *input_shape]`` (``stat='sumabs'``:
        mean |relevance|; contrast mode also ``'pos'``/``'neg'``)."""
        return self.moments(input)[1].mean(stat)

    def channel_means(self, input: str | None = None) -> np.ndarray:
        """Mean per-row relevance of each channel (dim 1 of the input), ``[n_classes, C]``."""
        maps = self.class_maps(input)
        if maps.ndim < 3:
            raise AggregateError("channel means need inputs of shape [channels, ...]")
        return maps.reshape(maps.shape[0], maps.shape[1], -1).sum(axis=2)

    def importance(
        self, input: str | None = None, per_class: bool = False, named: bool = False
    ) -> Any:
        """Mean |relevance| per feature (flattened): overall ``[F]`` or ``[n_classes, F]``.

        Parameters
        ----------
        input
            The input (None: the only one).
        per_class
            One row per class instead of one vector over all rows.
        named
            Return a pandas Series indexed by feature name (a DataFrame with one row per class
            name when ``per_class``) instead of a bare array.
        """
        name, moments = self.moments(input)
        m = moments.mean("sumabs", per_class=per_class)
        values = m.reshape(m.shape[0], -1) if per_class else m.reshape(-1)
        if not named:
            return values
        pd = require_pandas()
        labels = self.feature_labels(name)
        if per_class:
            return pd.DataFrame(values, index=pd.Index(self.class_names, name="class"),
                                columns=labels)
        return pd.Series(values, index=pd.Index(labels, name="feature"), name="importance")

    def _group_stats(self) -> GroupStats:
        if self.groups is None:
            raise AggregateError("this aggregate has no group statistics (pass groups=)")
        return self.groups

    def group_table(self) -> Any:
        """Per-group relevance statistics: one row per (group, feature) with the group's row
        count, mean relevance, mean |relevance| and standard deviation (pandas)."""
        stats = self._group_stats()
        return stats.feature_frame(self.feature_labels(stats.input))

    def sensitive_shares(self) -> Any:
        """The share of total |relevance| each sensitive feature receives, per group and over
        all rows (group ``"(all rows)"``): the mean of per-row shares and its standard error
        (sample std / sqrt(rows)); rows with zero total relevance are left out (pandas)."""
        stats = self._group_stats()
        if not stats.sensitive:
            raise AggregateError("no sensitive features were named (pass sensitive=)")
        return stats.share_frame()

    def feature_labels(self, input: str | None = None) -> list[str]:
        name, moments = self.moments(input)
        return _feature_labels(moments.sums["sum"].shape[1:], self.feature_names.get(name))

    def quantiles(self, q: Any, input: str | None = None) -> np.ndarray:
        """Quantiles of per-row relevance per feature, from the row sample: ``[len(q), F]``."""
        name, _ = self.moments(input)
        if self.sample is None or f"rel:{name}" not in self.sample.values:
            raise AggregateError("no row sample was kept for this input (sample_size=0 or "
                                 "not a [rows, features] input)")
        return np.quantile(self.sample.values[f"rel:{name}"], np.asarray(q, float), axis=0)

    # ---- export -------------------------------------------------------------------------------
    def _moments_frame(self, table: dict[str, ClassMoments], kind: str, units: bool) -> Any:
        pd = require_pandas()
        frames = []
        for name, m in table.items():
            labels = (
                [str(i) for i in range(int(np.prod(m.sums["sum"].shape[1:])))]
                if units else _feature_labels(m.sums["sum"].shape[1:], self.feature_names.get(name))
            )
            for cls, per_class in [(c, True) for c in range(self.n_classes)] + [(None, False)]:
                pick = (lambda a, c=cls: a[c]) if per_class else (lambda a: a)
                cols = {
                    kind: name,
                    "feature": labels,
                    "class": "all" if cls is None else self.class_names[cls],
                    "count": int(m.count.sum() if cls is None else m.count[cls]),
                    "mean": pick(m.mean("sum", per_class)).reshape(-1),
                    "mean_abs": pick(m.mean("sumabs", per_class)).reshape(-1),
                    "std": pick(m.std(per_class)).reshape(-1),
                }
                if m.contrast:
                    cols["mean_positive"] = pick(m.mean("pos", per_class)).reshape(-1)
                    cols["mean_negative"] = pick(m.mean("neg", per_class)).reshape(-1)
                frames.append(pd.DataFrame(cols))
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()

    def _keyed_frame(self, stats: KeyedStats | None, level: str, min_count: int) -> Any:
        pd = require_pandas()
        if stats is None or self.text_spec is None:
            raise AggregateError("this aggregate has no text statistics (pass tokenizer=)")
        spec = self.text_spec
        names = [spec.token(int(k[0])) if level == "token" else spec.word(k) for k in stats.keys]
        frames = []
        for cls in list(range(self.n_classes)) + [None]:
            count = stats.count.sum(axis=1) if cls is None else stats.count[:, cls]
            sums = {f: (v.sum(axis=1) if cls is None else v[:, cls]) for f, v in stats.sums.items()}
            keep = count >= max(min_count, 1)
            with np.errstate(invalid="ignore", divide="ignore"):
                frame = pd.DataFrame({
                    level: np.asarray(names, dtype=object)[keep],
                    "class": "all" if cls is None else self.class_names[cls],
                    "count": count[keep],
                    "total": sums["sum"][keep],
                    "mean": sums["sum"][keep] / count[keep],
                    "mean_abs": sums["sumabs"][keep] / count[keep],
                })
            frames.append(frame)
        return pd.concat(frames, ignore_index=True)

    def to_dataframe(self, kind: str = "features", min_count: int = 1) -> Any:
        """Long-format pandas table: ``kind`` = features, layers, tokens or words (class 'all'
        rows are the overall statistics)."""
        if kind == "features":
            return self._moments_frame(self.inputs, "input", units=False)
        if kind == "layers":
            return self._moments_frame(self.layers, "layer", units=True)
        if kind in ("tokens", "words"):
            stats = self.tokens if kind == "tokens" else self.words
            return self._keyed_frame(stats, kind[:-1], min_count)
        raise ValueError(f"kind must be features, layers, tokens or words, got {kind!r}")

    def top_words(
        self, cls: int | str, n: int = 10, min_count: int = 5, level: str = "word",
        by: str = "mean",
    ) -> Any:
        """The ``n`` words (or tokens) with the highest relevance for a class, among those seen
        at least ``min_count`` times (``by``: mean per occurrence, total, or mean_abs)."""
        frame = self.to_dataframe(level + "s", min_count=min_count)
        name = self.class_names[cls] if isinstance(cls, int) else str(cls)
        frame = frame[frame["class"] == name]
        return frame.sort_values([by, level], ascending=[False, True]).head(n).reset_index(
            drop=True
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable summary: per-feature, per-layer (and top-token) statistics."""
        out: dict[str, Any] = {
            "format": FORMAT, "mode": self.mode, "target": self.target,
            "classes": self.class_names, "rows": self.rows, "batches": self.batches,
        }
        for kind in ("features", "layers"):
            table = self.inputs if kind == "features" else self.layers
            if table:
                frame = self.to_dataframe(kind)
                frame = frame[frame["count"] > 0]  # a class nobody was explained as: no stats
                out[kind] = json.loads(frame.to_json(orient="records"))
        if self.groups is not None:
            counts = dict(zip(self.groups.names, self.groups.count.tolist(), strict=True))
            out["groups"] = {"input": self.groups.input, "counts": counts,
                             "sensitive": self.groups.sensitive}
            out["group_features"] = json.loads(self.group_table().to_json(orient="records"))
            if self.groups.sensitive:
                out["sensitive_shares"] = json.loads(
                    self.sensitive_shares().to_json(orient="records"))
        if self.tokens is not None and self.text_spec is not None:
            out["top_words"] = {
                c: json.loads(self.top_words(i, 20, min_count=1).to_json(orient="records"))
                for i, c in enumerate(self.class_names)
            }
        return out

    # ---- storage ------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one ``.npz`` (arrays + JSON header, :mod:`dlbacktrace.engine.fileformat`),
        atomically.

        Parameters
        ----------
        path
            The file name (``.npz`` is appended unless given).
        """
        path = with_npz_suffix(path)
        arrays: dict[str, np.ndarray] = {}
        header: dict[str, Any] = {
            "format": FORMAT, "mode": self.mode, "target": self.target,
            "n_classes": self.n_classes, "class_names": self.class_names,
            "feature_names": self.feature_names, "batches": self.batches, "rows": self.rows,
            "fingerprint": self.fingerprint,
        }
        for kind, table in (("inputs", self.inputs), ("layers", self.layers)):
            header[kind] = list(table)
            for i, m in enumerate(table.values()):
                arrays[f"{kind}/{i}/count"] = m.count
                for f, v in m.sums.items():
                    arrays[f"{kind}/{i}/{f}"] = v
        for attr in ("tokens", "words"):
            stats = getattr(self, attr)
            header[attr] = stats is not None
            if stats is not None:
                arrays[f"{attr}/keys"], arrays[f"{attr}/count"] = stats.keys, stats.count
                for f, v in stats.sums.items():
                    arrays[f"{attr}/{f}"] = v
        if self.text_spec is not None:
            spec = self.text_spec
            header["text_spec"] = {"tokens": spec.tokens, "skip_ids": spec.skip_ids,
                                   "prefix": spec.continuation_prefix}
            arrays["text_spec/word_start"] = spec.word_start
        if self.sample is not None:
            s = self.sample
            header["sample"] = {"k": s.k, "values": list(s.values)}
            arrays["sample/rows"], arrays["sample/classes"] = s.rows, s.classes
            for i, v in enumerate(s.values.values()):
                arrays[f"sample/{i}"] = v
        if self.groups is not None:
            g = self.groups
            header["groups"] = {"input": g.input, "names": g.names, "sensitive": g.sensitive}
            arrays["groups/count"] = g.count
            for f in FEATURE_FIELDS:
                arrays[f"groups/{f}"] = g.sums[f]
            for f in SHARE_FIELDS:
                arrays[f"groups/share_{f}"] = g.shares[f]
        write_archive(path, arrays, header, compress=False)
        return path

    @classmethod
    def load(cls, path: str | Path) -> GlobalExplanation:
        """Read a file written by ``save`` (no pickle).

        Parameters
        ----------
        path
            The file name.
        """
        header, data = read_archive(Path(path))
        if header.get("format") != FORMAT:
            raise AggregateError(f"{path}: not a global explanation ({header.get('format')})")
        tables = {}
        for kind in ("inputs", "layers"):
            tables[kind] = {}
            for i, name in enumerate(header[kind]):
                fields = [f.split("/")[-1] for f in data
                          if f.startswith(f"{kind}/{i}/") and not f.endswith("/count")]
                tables[kind][name] = ClassMoments(
                    data[f"{kind}/{i}/count"], {f: data[f"{kind}/{i}/{f}"] for f in fields}
                )
        keyed = {}
        for attr in ("tokens", "words"):
            keyed[attr] = KeyedStats(
                data[f"{attr}/keys"], data[f"{attr}/count"],
                {f: data[f"{attr}/{f}"] for f in STAT_FIELDS},
            ) if header[attr] else None
        spec = None
        if "text_spec" in header:
            t = header["text_spec"]
            spec = TextSpec(t["tokens"], t["skip_ids"], data["text_spec/word_start"],
                            t["prefix"])
        sample = None
        if "sample" in header:
            s = header["sample"]
            sample = RowSample(s["k"], data["sample/rows"], data["sample/classes"],
                               {n: data[f"sample/{i}"] for i, n in enumerate(s["values"])})
        groups = None
        if "groups" in header:
            h = header["groups"]
            groups = GroupStats(
                h["input"], list(h["names"]), data["groups/count"],
                {f: data[f"groups/{f}"] for f in FEATURE_FIELDS},
                {k: list(v) for k, v in h["sensitive"].items()},
                {f: data[f"groups/share_{f}"] for f in SHARE_FIELDS},
            )
        return cls(
            mode=header["mode"], target=header["target"], n_classes=header["n_classes"],
            class_names=header["class_names"], feature_names=header["feature_names"],
            inputs=tables["inputs"], layers=tables["layers"], tokens=keyed["tokens"],
            words=keyed["words"], text_spec=spec, sample=sample, groups=groups,
            batches=header["batches"],
            rows=header["rows"], fingerprint=header["fingerprint"],
        )


def _copy(obj: Any) -> Any:
    if isinstance(obj, KeyedStats):
        return KeyedStats(obj.keys.copy(), obj.count.copy(),
                          {k: v.copy() for k, v in obj.sums.items()})
    if isinstance(obj, GroupStats):
        return obj.copy()
    if isinstance(obj, RowSample):
        return RowSample(obj.k, obj.rows.copy(), obj.classes.copy(),
                         {k: v.copy() for k, v in obj.values.items()})
    raise TypeError(type(obj).__name__)
