"""The offline data loaders: shapes, names, labels and a train-only standardisation."""

import numpy as np
import pytest

from dlbacktrace.engine.errors import InputError
from dlbacktrace.examples.datasets import (
    load_digits,
    load_german_credit,
    load_tweets,
    split_indices,
)


def test_german_credit_one_hot_with_readable_names():
    data = load_german_credit()
    assert data.x.shape == (1000, 61) and data.y.shape == (1000,)
    assert data.y.sum() == 700  # 700 good, 300 bad in the UCI file
    assert "duration" in data.feature_names and "age" in data.feature_names
    status = [i for i, n in enumerate(data.feature_names) if n.startswith("status=")]
    assert len(status) == 4
    np.testing.assert_array_equal(data.x[:, status].sum(axis=1), 1.0)  # one-hot


def test_split_standardises_with_train_statistics_only():
    train, test = load_german_credit().split(test_fraction=0.2, seed=3)
    assert len(train) == 800 and len(test) == 200
    np.testing.assert_allclose(train.x.mean(axis=0), 0.0, atol=1e-5)
    assert not np.allclose(test.x.mean(axis=0), 0.0, atol=1e-3)
    again, _ = load_german_credit().split(test_fraction=0.2, seed=3)
    np.testing.assert_array_equal(train.x, again.x)


def test_split_indices_partition():
    train, test = split_indices(10, 0.3, seed=0)
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(10))
    with pytest.raises(InputError):
        split_indices(10, 1.5, seed=0)


def test_digits_images():
    data = load_digits()
    assert data.x.shape == (1797, 1, 8, 8) and data.x.min() == 0.0 and data.x.max() == 1.0


def test_tweets_balanced_sample_and_bad_class():
    data = load_tweets(("negative", "positive"), min_confidence=0.8, per_class=50, seed=1)
    assert len(data) == 100 and np.bincount(data.y).tolist() == [50, 50]
    assert (data.confidence >= 0.8).all() and len(set(data.texts)) == 100
    with pytest.raises(InputError, match="unknown tweet classes"):
        load_tweets(("angry",))
