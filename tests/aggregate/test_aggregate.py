"""Global aggregation: exact streaming statistics, data sources, layers, images, sample, storage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import load_breast_cancer, load_digits

from dlbacktrace import Backtrace
from dlbacktrace.aggregate import AggregateError, GlobalExplanation, aggregate
from dlbacktrace.aggregate.sketch import RowSample, row_hash
from dlbacktrace.aggregate.stats import ClassMoments


def _train(model: torch.nn.Module, X: torch.Tensor, y: torch.Tensor, epochs: int) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(X), y).backward()
        opt.step()
    model.eval()



def close_maps(got, want) -> None:
    """Maps summed from float32 explanations in other batches: equal to float32 rounding of
    their scale (batching may change BLAS summation order), not to 1e-12."""
    want = np.asarray(want, dtype=np.float64)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * float(np.abs(want).max()))

@pytest.fixture(scope="module")
def cancer():
    data = load_breast_cancer()
    X = ((data.data - data.data.mean(0)) / data.data.std(0)).astype(np.float32)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(30, 16), torch.nn.ReLU(), torch.nn.Linear(16, 2))
    _train(model, torch.from_numpy(X), torch.from_numpy(data.target), 60)
    return Backtrace(model), X, data.target, list(data.feature_names)


def _direct(bt, X, mode="default", target=None, layers=None):
    exp = bt.explain(torch.from_numpy(X), mode=mode, target=target, layers=layers)
    return exp, exp.target.numpy()


def test_streaming_statistics_equal_direct_computation(cancer):
    bt, X, y, names = cancer
    exp, cls = _direct(bt, X)
    R = exp.relevance.double().numpy()
    frame = pd.DataFrame(X, columns=names)
    g = aggregate(bt, frame, batch_size=100, class_names=["malignant", "benign"])
    assert g.rows == 569 and g.batches == 6
    np.testing.assert_array_equal(g.class_counts(), np.bincount(cls, minlength=2))
    assert g.feature_labels() == names
    for k in range(2):
        rows = R[cls == k]
        close_maps(g.class_maps()[k], rows.mean(0))
        close_maps(g.class_maps(stat="sumabs")[k], np.abs(rows).mean(0))
        np.testing.assert_allclose(g.inputs["input0"].std()[k], rows.std(0, ddof=1),
                                   rtol=1e-5, atol=1e-10)
    np.testing.assert_allclose(g.importance(), np.abs(R).mean(0), rtol=1e-6)
    table = g.to_dataframe()
    overall = table[table["class"] == "all"].set_index("feature")
    assert list(overall.index) == names
    np.testing.assert_allclose(overall["mean"].to_numpy(), R.mean(0), rtol=1e-6)
    assert set(table["class"]) == {"malignant", "benign", "all"}
    # The batch size changes only the float summation order.
    g2 = aggregate(bt, X, batch_size=569)  # one batch: another capture
    np.testing.assert_allclose(g2.class_maps(), g.class_maps(), rtol=1e-12)


def test_contrast_mode_keeps_positive_and_negative_evidence(cancer):
    bt, X, _, _ = cancer
    exp, cls = _direct(bt, X, mode="contrast")
    g = aggregate(bt, X, mode="contrast", batch_size=100)
    pos, neg = exp.positive.double().numpy(), exp.negative.double().numpy()
    for k in range(2):
        np.testing.assert_allclose(g.class_maps(stat="pos")[k], pos[cls == k].mean(0), rtol=1e-6)
        np.testing.assert_allclose(g.class_maps(stat="neg")[k], neg[cls == k].mean(0), rtol=1e-6)
    # signed mean = mean positive - mean negative, up to float32 rounding of the per-row maps
    # (each stream is summed separately, so the difference is exact only to ~1e-7 of its scale)
    scale = float(np.abs(g.class_maps(stat="pos")).max() + np.abs(g.class_maps(stat="neg")).max())
    np.testing.assert_allclose(g.class_maps(), g.class_maps(stat="pos") - g.class_maps(stat="neg"),
                               rtol=1e-6, atol=1e-6 * scale)
    frame = g.to_dataframe()
    assert {"mean_positive", "mean_negative"} <= set(frame.columns)


def test_target_label_groups_rows_by_true_class(cancer):
    bt, X, y, _ = cancer
    g = aggregate(bt, X, labels=y, target="label", batch_size=100)
    np.testing.assert_array_equal(g.class_counts(), np.bincount(y))
    exp = bt.explain(torch.from_numpy(X), target=torch.from_numpy(y))
    R = exp.relevance.double().numpy()
    np.testing.assert_allclose(g.class_maps()[0], R[y == 0].mean(0), rtol=1e-6)
    with pytest.raises(AggregateError, match="no labels"):
        aggregate(bt, X, target="label", batch_size=100)


def test_every_data_source_gives_the_same_statistics(cancer):
    bt, X, y, names = cancer
    ref = aggregate(bt, X, batch_size=100)
    Xt, yt = torch.from_numpy(X), torch.from_numpy(y)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(Xt, yt), batch_size=100)
    sources = [
        Xt,
        loader,
        [Xt[i:i + 100] for i in range(0, 569, 100)],
        ((Xt[i:i + 100], yt[i:i + 100]) for i in range(0, 569, 100)),
        pd.DataFrame(X, columns=names).assign(label=y),
    ]
    for source in sources:
        kwargs = {"labels": "label"} if isinstance(source, pd.DataFrame) else {}
        g = aggregate(bt, source, batch_size=100, **kwargs)
        assert g.rows == 569
        np.testing.assert_array_equal(g.class_maps(), ref.class_maps())


def test_bad_data_is_rejected_clearly(cancer):
    bt, X, y, _ = cancer
    with pytest.raises(AggregateError, match="no batches"):
        aggregate(bt, [])
    with pytest.raises(ValueError, match="labels"):
        aggregate(bt, X, labels=y[:10])
    with pytest.raises(ValueError, match="numeric"):
        aggregate(bt, pd.DataFrame({"a": ["x", "y"]}))
    with pytest.raises(ValueError, match="feature names"):
        aggregate(bt, X, feature_names=["a", "b"])
    with pytest.raises(ValueError, match="backend"):
        aggregate(bt, X, backend="spark")
    with pytest.raises(ValueError, match="batch"):
        aggregate(bt, [{"labels": torch.zeros(2)}])


def test_layers_aggregate_hidden_units_per_class(cancer):
    bt, X, _, _ = cancer
    exp, cls = _direct(bt, X, layers=["0", "1"])
    g = aggregate(bt, X, layers=["0", "1"], batch_size=100)
    assert set(g.layers) == {"0", "1"}
    hidden = exp.layers["1"].double().numpy()  # [N, 16] relevance of the ReLU's units
    for k in range(2):
        np.testing.assert_allclose(g.layers["1"].mean()[k], hidden[cls == k].mean(0), rtol=1e-6)
    units = g.to_dataframe("layers")
    assert len(units[(units["layer"] == "0") & (units["class"] == "all")]) == 16


@pytest.fixture(scope="module")
def digits_cnn():
    d = load_digits()
    X = torch.from_numpy((d.images / 16.0).astype(np.float32)).unsqueeze(1)[:300]
    y = torch.from_numpy(d.target)[:300]
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(64, 10),
    )
    _train(model, X, y, 25)
    return Backtrace(model), X, y


def test_images_give_class_maps_channel_means_and_conv_channels(digits_cnn):
    bt, X, y = digits_cnn
    exp = bt.explain(X, layers=["0"])
    cls = exp.target.numpy()
    R = exp.relevance.double().numpy()
    g = aggregate(bt, X.numpy(), batch_size=100, layers=["0"], sample_size=0)
    maps = g.class_maps()
    assert maps.shape == (10, 1, 8, 8)
    for k in np.unique(cls)[:3]:
        close_maps(maps[k], R[cls == k].mean(0))
    channel = g.channel_means()
    np.testing.assert_allclose(channel[:, 0], maps.reshape(10, -1).sum(1), rtol=1e-12)
    counts = g.class_counts()
    records = g.to_json()["features"]  # classes without rows are left out, not NaN
    assert len(records) == 64 * (int((counts > 0).sum()) + 1)
    assert all(r["mean"] is not None for r in records)
    # Conv output [B, 4, 8, 8] reduces to 4 channels (spatial sums).
    conv = exp.layers["0"].double().numpy().sum(axis=(2, 3))
    assert g.layers["0"].sums["sum"].shape == (10, 4)
    k = int(cls[0])
    np.testing.assert_allclose(g.layers["0"].mean()[k], conv[cls == k].mean(0), rtol=1e-6)
    assert g.sample is None


def test_row_sample_is_uniform_deterministic_and_merge_order_free():
    rng = np.random.default_rng(1)
    values = rng.normal(size=(1000, 3))
    rows = np.arange(1000)
    whole = RowSample.from_batch(64, rows, rows % 2, {"v": values})
    def parts():
        return [RowSample.from_batch(64, rows[i:i + 100], rows[i:i + 100] % 2,
                                     {"v": values[i:i + 100]}) for i in range(0, 1000, 100)]

    first, last = parts(), parts()
    forward, backward = first[0], last[-1]
    for p in first[1:]:
        forward.merge(p)
    for p in last[-2::-1]:
        backward.merge(p)
    for merged in (forward, backward):
        np.testing.assert_array_equal(merged.sorted_by_row().rows, whole.sorted_by_row().rows)
    # The kept rows are exactly those with the 64 smallest hashes.
    expected = np.sort(rows[np.argsort(row_hash(rows))[:64]])
    np.testing.assert_array_equal(whole.sorted_by_row().rows, expected)
    np.testing.assert_array_equal(whole.values["v"], values[whole.rows])
    assert len(set(row_hash(rows).tolist())) == 1000


def test_quantiles_from_the_sample_are_close(cancer):
    bt, X, _, _ = cancer
    exp, _ = _direct(bt, X)
    R = exp.relevance.double().numpy()
    g = aggregate(bt, X, batch_size=100, sample_size=200)
    q = g.quantiles([0.25, 0.5, 0.75])
    assert q.shape == (3, 30) and len(g.sample.rows) == 200
    # rank error of a 200-row uniform sample: check the rank of each estimate in the full data
    ranks = (R[None, :, :] <= q[:, None, :]).mean(1)
    assert np.abs(ranks - np.array([0.25, 0.5, 0.75])[:, None]).max() < 0.15
    full = aggregate(bt, X, batch_size=100, sample_size=10_000)
    np.testing.assert_allclose(full.quantiles([0.5]), np.quantile(R, [0.5], axis=0), rtol=1e-6)


def test_class_moments_merge_rejects_mismatched_shapes():
    a = ClassMoments.empty(2, (3,), contrast=False)
    b = ClassMoments.empty(2, (4,), contrast=False)
    with pytest.raises(ValueError, match="shape"):
        a.merge(b)
    with pytest.raises(ValueError, match="out of range"):
        ClassMoments.from_batch(torch.zeros(2, 3), torch.tensor([0, 5]), 2)


def test_save_load_roundtrip_and_json(cancer, tmp_path):
    bt, X, y, names = cancer
    g = aggregate(bt, X, mode="contrast", layers=["1"], feature_names=names, batch_size=100,
                  class_names=["malignant", "benign"])
    path = g.save(tmp_path / "global")
    assert path.suffix == ".npz"
    back = GlobalExplanation.load(path)
    for attr in ("mode", "n_classes", "class_names", "feature_names", "rows", "batches"):
        assert getattr(back, attr) == getattr(g, attr)
    pd.testing.assert_frame_equal(back.to_dataframe(), g.to_dataframe())
    pd.testing.assert_frame_equal(back.to_dataframe("layers"), g.to_dataframe("layers"))
    np.testing.assert_array_equal(back.sample.values["rel:input0"], g.sample.values["rel:input0"])
    summary = g.to_json()
    assert summary["rows"] == 569 and summary["classes"] == ["malignant", "benign"]
    first = summary["features"][0]
    assert first["feature"] == names[0] and "mean_positive" in first
    np.save(tmp_path / "other.npy", np.zeros(3))
    with pytest.raises(Exception):  # noqa: B017 - not an aggregate file
        GlobalExplanation.load(tmp_path / "other.npy")


def test_unit_rules_for_channels_tokens_heads_and_experts():
    from dlbacktrace.aggregate.compute import reduce_units

    r = torch.arange(2 * 3 * 4, dtype=torch.float64).reshape(2, 3, 4)  # [B, T, D]
    np.testing.assert_array_equal(reduce_units(r, "last"), r.sum(1))
    np.testing.assert_array_equal(reduce_units(r, "channel"), r.sum(2))
    np.testing.assert_array_equal(reduce_units(r, "heads:2"),
                                  torch.stack([r[..., :2].sum((1, 2)), r[..., 2:].sum((1, 2))], 1))
    np.testing.assert_array_equal(reduce_units(r, "total"), r.sum((1, 2))[:, None])
    img = torch.ones(2, 5, 3, 3)
    np.testing.assert_array_equal(reduce_units(img, "last"), torch.full((2, 5), 9.0))
    with pytest.raises(ValueError, match="heads"):
        reduce_units(r, "heads:3")


def test_progress_bar_and_bad_layer_rules(cancer):
    bt, X, _, _ = cancer
    g = aggregate(bt, X, batch_size=100, progress=True)
    assert g.batches == 6
    with pytest.raises(ValueError, match="heads:N"):
        aggregate(bt, X, batch_size=100, layers=["1"], layer_units={"1": "rows"})
    with pytest.raises(ValueError, match="no module"):
        aggregate(bt, X, batch_size=100, layers=["nope"])


def test_optional_dependencies_are_not_imported_up_front():
    import subprocess
    import sys

    code = ("import sys, dlbacktrace.aggregate, dlbacktrace.viz.global_plots; "
            "print(sorted(m for m in ('ray', 'pandas', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
