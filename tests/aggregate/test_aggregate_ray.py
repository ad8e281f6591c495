"""Ray backend: the same aggregate as the local backend, whatever the number of workers."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
import torch
from sklearn.datasets import load_breast_cancer

from dlbacktrace.aggregate import AggregateError, aggregate

ray = pytest.importorskip("ray", reason="the Ray backend needs the 'ray' extra")


@pytest.fixture(scope="module")
def local_ray():
    """One small local Ray for this module: 2 CPUs, no dashboard, no usage reporting."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer()
    X = ((data.data - data.data.mean(0)) / data.data.std(0)).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(data.target)
    for _ in range(60):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(Xt), yt).backward()
        opt.step()
    return model.eval(), X, data.target


class _Ref:
    def __init__(self, value):
        self.value = value


class _FakeRay:
    """Runs tasks at once, completes them newest first (out of order), records init/shutdown."""

    def __init__(self):
        self.calls, self.initialized = [], False

    def is_initialized(self):
        return self.initialized

    def init(self, address=None, **options):
        self.calls.append(("init", address, options.get("num_cpus")))
        self.initialized = True

    def shutdown(self):
        self.calls.append(("shutdown",))
        self.initialized = False

    def remote(self, **_):
        def call(fn, *args):  # like Ray: top-level object refs are resolved, boxed ones not
            return _Ref(fn(*(a.value if isinstance(a, _Ref) else a for a in args)))

        return lambda fn: type("Task", (), {"remote": staticmethod(lambda *a: call(fn, *a))})()

    def put(self, obj):
        return _Ref(obj)

    def get(self, ref):
        return ref.value

    def wait(self, refs, num_returns=1):
        return [refs[-1]], refs[:-1]

    def cancel(self, ref):
        self.calls.append(("cancel",))


def test_a_ray_started_by_the_call_is_shut_down_and_order_is_restored(cancer, monkeypatch):
    from dlbacktrace.aggregate import backends

    fake = _FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    monkeypatch.setattr(backends, "_WORKER_CACHE", backends.OrderedDict())
    model, X, _ = cancer
    remote = aggregate(model, X, batch_size=50, backend="ray", num_workers=3)
    assert fake.calls == [("init", None, 3), ("shutdown",)]
    _assert_same(remote, aggregate(model, X, batch_size=50), exact=True)  # same process
    fake.calls.clear()
    aggregate(model, X, batch_size=50, backend="ray", num_workers=2, address="ray://head:1")
    assert fake.calls == [("init", "ray://head:1", None), ("shutdown",)]
    fake.calls.clear()
    with pytest.raises(AggregateError, match="no labels"):
        aggregate(model, X, batch_size=50, backend="ray", target="label")
    assert fake.calls[0][0] == "init" and fake.calls[-1] == ("shutdown",)


def _assert_same(a, b, exact: bool) -> None:
    assert (a.rows, a.batches) == (b.rows, b.batches)
    for table in ("inputs", "layers"):
        ta, tb = getattr(a, table), getattr(b, table)
        assert set(ta) == set(tb)
        for name in ta:
            np.testing.assert_array_equal(ta[name].count, tb[name].count)
            for field, arr in ta[name].sums.items():
                if exact:
                    np.testing.assert_array_equal(arr, tb[name].sums[field])
                else:
                    np.testing.assert_allclose(arr, tb[name].sums[field], rtol=1e-6, atol=1e-9)
    np.testing.assert_array_equal(a.sample.rows, b.sample.rows)
    assert (a.groups is None) == (b.groups is None)
    if a.groups is not None:  # the bias lens
        assert a.groups.names == b.groups.names and a.groups.sensitive == b.groups.sensitive
        np.testing.assert_array_equal(a.groups.count, b.groups.count)
        for field in ("sum", "sumabs", "sumsq"):
            np.testing.assert_array_equal(a.groups.sums[field], b.groups.sums[field])
        for field in ("n", "sum", "sumsq"):
            np.testing.assert_array_equal(a.groups.shares[field], b.groups.shares[field])


def test_the_bias_lens_merges_in_batch_order_on_ray(cancer, monkeypatch):
    from dlbacktrace.aggregate import backends

    monkeypatch.setitem(sys.modules, "ray", _FakeRay())  # completes batches out of order
    monkeypatch.setattr(backends, "_WORKER_CACHE", backends.OrderedDict())
    model, X, y = cancer
    # groups that first appear in later batches: the union of groups must not depend on order
    groups = np.where(np.arange(len(X)) < 300, "early", np.where(y == 1, "late-1", "late-0"))
    kwargs = dict(batch_size=50, groups=groups, sensitive={"size": ["x0", "x2", "x3"]})
    remote = aggregate(model, X, backend="ray", num_workers=3, **kwargs)
    assert remote.groups.names == ["early", "late-0", "late-1"]
    _assert_same(remote, aggregate(model, X, **kwargs), exact=True)


@pytest.mark.slow
def test_ray_equals_local_for_any_number_of_workers(local_ray, cancer):
    model, X, y = cancer
    kwargs = dict(batch_size=50, mode="contrast", layers=["1"], labels=y, target="label",
                  sample_size=100)
    local = aggregate(model, X, **kwargs)
    two = aggregate(model, X, backend="ray", num_workers=2, **kwargs)
    one = aggregate(model, X, backend="ray", num_workers=1, **kwargs)
    # Workers hold their own Backtrace; partials merge in batch order, so the results agree
    # with each other bit for bit (same process type) and with the local run to float rounding.
    _assert_same(two, one, exact=True)
    _assert_same(two, local, exact=False)
    np.testing.assert_array_equal(two.class_counts(), np.bincount(y))


def test_ray_from_an_iterable_of_batches(local_ray, cancer):
    model, X, _ = cancer
    Xt = torch.from_numpy(X)
    batches = [(Xt[i:i + 100], torch.zeros(len(Xt[i:i + 100]), dtype=torch.long))
               for i in range(0, len(Xt), 100)]
    local = aggregate(model, batches, sample_size=50)
    remote = aggregate(model, iter(batches), backend="ray", num_workers=2, sample_size=50)
    _assert_same(remote, local, exact=False)


def test_ray_errors_surface_in_the_caller(local_ray, cancer):
    model, X, _ = cancer
    with pytest.raises(Exception, match="no labels"):
        aggregate(model, X, target="label", backend="ray", num_workers=2)
    with pytest.raises(ValueError, match="num_workers"):
        aggregate(model, X, backend="ray", num_workers=0)
