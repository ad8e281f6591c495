"""Model comparison: a feature shuffled during retraining is reported as the biggest loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

from dlbacktrace import Backtrace
from dlbacktrace.aggregate import AggregateError, GlobalExplanation, aggregate, compare
from dlbacktrace.aggregate.compare import spearman
from dlbacktrace.aggregate.stats import ClassMoments


def _fit(X: np.ndarray, y: np.ndarray, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=1e-3)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(Xt), yt).backward()
        opt.step()
    return model.eval()


def test_shuffled_feature_is_reported_as_the_biggest_loss():
    data = load_breast_cancer()
    X = ((data.data - data.data.mean(0)) / data.data.std(0)).astype(np.float32)
    y, names = data.target, list(data.feature_names)
    before = aggregate(_fit(X, y, 0), X, batch_size=569, feature_names=names,
                       class_names=["malignant", "benign"])
    top = int(np.argmax(before.importance()))
    shuffled = X.copy()
    shuffled[:, top] = np.random.default_rng(0).permutation(shuffled[:, top])
    after = aggregate(Backtrace(_fit(shuffled, y, 0)), X, batch_size=569, feature_names=names,
                      class_names=["malignant", "benign"])
    cmp = compare(before, after, names=("before", "after"))
    assert cmp.lost(1) == [names[top]]
    i = names.index(names[top])
    assert cmp.change[i] < -2 * cmp.stderr[i]  # a real loss, beyond noise
    assert cmp.table()["feature"].iloc[0] == names[top]
    assert -1.0 <= cmp.rank_correlation < 1.0
    text = cmp.summary()
    assert f"'{names[top]}' lost importance" in text and "beyond noise" in text
    per_class = cmp.class_table()
    assert set(per_class["class"]) == {"malignant", "benign"} and len(per_class) == 60


def _moments(count, sumabs, sumsq):
    count = np.asarray(count)
    sumabs = np.asarray(sumabs, float)
    return ClassMoments(count, {"sum": sumabs.copy(), "sumabs": sumabs,
                                "sumsq": np.asarray(sumsq, float)})


def _global(m: ClassMoments) -> GlobalExplanation:
    return GlobalExplanation(mode="default", target="None", n_classes=2,
                             class_names=["no", "yes"], inputs={"x": m},
                             feature_names={"x": ["f0", "f1"]})


def test_changes_and_standard_errors_by_hand():
    # a: class 0 has 2 rows with |R| of f0 = 1, 3 and f1 = 0, 0; class 1: 2 rows f0 = 2, 2
    a = _global(_moments([2, 2], [[4, 0], [4, 2]], [[10, 0], [8, 2]]))
    b = _global(_moments([2, 2], [[2, 2], [2, 2]], [[2, 2], [2, 2]]))
    cmp = compare(a, b)
    # overall mean |R| of f0 in a: 8/4 = 2, variance (18 - 64/4)/3 = 2/3; in b: 1, variance 0
    np.testing.assert_allclose(cmp.importance_a, [2.0, 0.5])
    np.testing.assert_allclose(cmp.importance_b, [1.0, 1.0])
    np.testing.assert_allclose(cmp.stderr[0], np.sqrt(2 / 3 / 4))
    assert cmp.lost() == ["f0"] and cmp.gained() == ["f1"]
    np.testing.assert_allclose(cmp.class_a[0], [2.0, 0.0])
    np.testing.assert_allclose(cmp.class_stderr[0, 0], np.sqrt(2.0 / 2))  # var (10-8)/1 = 2
    assert spearman(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    other = _global(_moments([2, 2], [[1, 1, 1], [1, 1, 1]], [[1, 1, 1], [1, 1, 1]]))
    other.feature_names = {}
    with pytest.raises(AggregateError, match="different features"):
        compare(a, other)
