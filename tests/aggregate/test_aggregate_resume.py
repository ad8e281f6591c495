"""Checkpoint and resume: an interrupted aggregation resumes without recomputing or
double-counting, and gives the same bits as an uninterrupted run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlbacktrace import Backtrace
from dlbacktrace.aggregate import AggregateError, GlobalExplanation, aggregate


class Interrupted(RuntimeError):
    pass


class Batches:
    """Batches of a fixed dataset; raises after ``fail_after`` batches; counts what it served."""

    def __init__(self, X: torch.Tensor, size: int, fail_after: int | None = None) -> None:
        self.X, self.size, self.fail_after, self.served = X, size, fail_after, 0

    def __iter__(self):
        for i, lo in enumerate(range(0, len(self.X), self.size)):
            if self.fail_after is not None and i == self.fail_after:
                raise Interrupted(f"stopped at batch {i}")
            self.served += 1
            yield self.X[lo:lo + self.size]


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    X = torch.randn(230, 6, generator=torch.Generator().manual_seed(1))
    return Backtrace(model), X


def _same(a: GlobalExplanation, b: GlobalExplanation) -> None:
    assert (a.rows, a.batches) == (b.rows, b.batches)
    for name, m in a.inputs.items():
        np.testing.assert_array_equal(m.count, b.inputs[name].count)
        for field, arr in m.sums.items():
            np.testing.assert_array_equal(arr, b.inputs[name].sums[field])
    np.testing.assert_array_equal(a.sample.rows, b.sample.rows)
    np.testing.assert_array_equal(a.sample.values["rel:input0"], b.sample.values["rel:input0"])


def test_resume_after_interruption_equals_uninterrupted_run(setup, tmp_path):
    bt, X = setup
    full = aggregate(bt, Batches(X, 20), mode="contrast", sample_size=40)
    ckpt = tmp_path / "state.npz"
    with pytest.raises(Interrupted):
        aggregate(bt, Batches(X, 20, fail_after=7), mode="contrast", sample_size=40,
                  checkpoint=ckpt, checkpoint_every=3)
    saved = GlobalExplanation.load(ckpt)
    assert (saved.batches, saved.rows) == (6, 120)  # last save before the failure
    calls = []
    original = bt.explain

    def counting(*args, **kwargs):
        calls.append(len(args[0]))
        return original(*args, **kwargs)

    bt.explain = counting
    try:
        resumed = aggregate(bt, Batches(X, 20), mode="contrast", sample_size=40,
                            checkpoint=ckpt, checkpoint_every=3)
    finally:
        del bt.explain
    assert len(calls) == 12 - 6  # only the unfinished batches were explained
    _same(resumed, full)
    # The final state is saved too: another call explains nothing and returns the same.
    again = aggregate(bt, Batches(X, 20), mode="contrast", sample_size=40, checkpoint=ckpt)
    _same(again, full)
    assert not list(tmp_path.glob("*.tmp"))  # atomic writes leave no temp files


def test_array_resume_slices_instead_of_recomputing(setup, tmp_path):
    bt, X = setup
    data = X.numpy()
    full = aggregate(bt, data, batch_size=50)
    ckpt = tmp_path / "arr.npz"
    original, calls = bt.explain, []

    def failing(*args, **kwargs):
        calls.append(float(args[0][0, 0]))
        if len(calls) == 4:
            raise Interrupted("worker lost")
        return original(*args, **kwargs)

    bt.explain = failing
    try:
        with pytest.raises(Interrupted):
            aggregate(bt, data, batch_size=50, checkpoint=ckpt, checkpoint_every=2)
        calls.clear()
        resumed = aggregate(bt, data, batch_size=50, checkpoint=ckpt, checkpoint_every=2)
    finally:
        del bt.explain
    assert calls == [float(data[100, 0]), float(data[150, 0]), float(data[200, 0])]
    _same(resumed, full)
    with pytest.raises(AggregateError, match="rows"):
        aggregate(bt, data[:100], batch_size=50, checkpoint=ckpt)


def test_a_checkpoint_of_another_model_is_refused(setup, tmp_path):
    bt, X = setup
    ckpt = tmp_path / "state.npz"
    aggregate(bt, X.numpy(), batch_size=100, checkpoint=ckpt)
    other = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.Tanh(), torch.nn.Linear(8, 3))
    with pytest.raises(AggregateError, match="model"):
        aggregate(other, X.numpy(), batch_size=100, checkpoint=ckpt)
    with pytest.raises(AggregateError, match="mode"):
        aggregate(bt, X.numpy(), batch_size=100, checkpoint=ckpt, mode="contrast")
