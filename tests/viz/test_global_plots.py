"""Global plots draw what the aggregate says (checked on hand-made aggregates)."""

from __future__ import annotations

import numpy as np
import pytest

from dlbacktrace.aggregate import GlobalExplanation, GroupStats, compare
from dlbacktrace.aggregate.keyed import KeyedStats
from dlbacktrace.aggregate.sketch import RowSample
from dlbacktrace.aggregate.stats import ClassMoments
from dlbacktrace.aggregate.text import TextSpec
from dlbacktrace.engine.errors import InputError
from dlbacktrace.viz.global_plots import (
    plot_beeswarm,
    plot_class_maps,
    plot_comparison,
    plot_feature_importance,
    plot_sensitive_shares,
    plot_top_words,
)
from dlbacktrace.viz.heatmap import save_figure


def _tabular(contrast: bool = False, scale: float = 1.0) -> GlobalExplanation:
    rng = np.random.default_rng(0)
    rel = rng.normal(size=(40, 4)) * np.array([0.1, 2.0, 0.5, 1.0]) * scale
    classes = np.arange(40) % 2
    import torch

    pos = neg = None
    if contrast:
        pos, neg = torch.from_numpy(np.clip(rel, 0, None)), torch.from_numpy(np.clip(-rel, 0, None))
    m = ClassMoments.from_batch(torch.from_numpy(rel), torch.from_numpy(classes), 2, pos, neg)
    sample = RowSample.from_batch(16, np.arange(40), classes,
                                  {"rel:x": rel, "x:x": rng.normal(size=(40, 4))})
    return GlobalExplanation(
        mode="contrast" if contrast else "default", target="None", n_classes=2,
        class_names=["no", "yes"], feature_names={"x": ["age", "income", "debt", "tenure"]},
        inputs={"x": m}, sample=sample, rows=40, batches=1,
    )


def _bars(ax):
    return sorted(ax.patches, key=lambda p: p.get_y())


def test_importance_bars_are_sorted_mean_abs_relevance(tmp_path):
    g = _tabular()
    fig = plot_feature_importance(g, n=3)
    ax = fig.axes[0]
    bars = _bars(ax)
    expected = np.sort(g.importance())[::-1][:3][::-1]  # bottom-up
    np.testing.assert_allclose([b.get_width() for b in bars], expected)
    assert ax.get_yticklabels()[-1].get_text() == "income"
    assert save_figure(fig, tmp_path / "imp.png").stat().st_size > 1000


def test_contrast_bars_split_positive_and_negative():
    g = _tabular(contrast=True)
    ax = plot_feature_importance(g, n=4, cls=1).axes[0]
    widths = [p.get_width() for p in ax.patches]
    pos, neg = g.class_maps(stat="pos")[1], g.class_maps(stat="neg")[1]
    assert sorted(w for w in widths if w > 0) == pytest.approx(sorted(pos[pos > 0]))
    assert sorted(-w for w in widths if w < 0) == pytest.approx(sorted(neg[neg > 0]))


def test_beeswarm_plots_the_sampled_rows():
    g = _tabular()
    ax = plot_beeswarm(g, n=2).axes[0]
    collections = ax.collections
    assert len(collections) == 2
    top = int(np.argmax(np.abs(g.sample.values["rel:x"]).mean(0)))
    np.testing.assert_allclose(collections[-1].get_offsets()[:, 0],
                               g.sample.values["rel:x"][:, top])
    g.sample = None
    with pytest.raises(InputError, match="sample"):
        plot_beeswarm(g)


def test_class_maps_show_each_class_mean_map():
    import torch

    rel = torch.arange(2 * 1 * 3 * 3, dtype=torch.float64).reshape(2, 1, 3, 3)
    m = ClassMoments.from_batch(rel, torch.tensor([0, 2]), 3)
    g = GlobalExplanation(mode="default", target="None", n_classes=3,
                          class_names=["a", "b", "c"], inputs={"img": m})
    fig = plot_class_maps(g)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 2  # class b has no rows
    np.testing.assert_allclose(images[1].get_array(), rel[1, 0].numpy())
    with pytest.raises(InputError):
        plot_class_maps(_tabular())


def test_top_words_and_comparison_plots():
    spec = TextSpec(["[PAD]", "good", "bad", "##ly", "movie"], [0],
                    np.array([True, True, True, False, True]), "##")
    keys = np.array([[1, -1], [2, 3], [4, -1], [1, -1], [4, -1]])
    words = KeyedStats.from_values(keys, np.array([1, 0, 1, 1, 0]),
                                   np.array([0.5, 0.9, 0.1, 0.7, -0.2]), 2)
    g = GlobalExplanation(mode="default", target="None", n_classes=2, class_names=["neg", "pos"],
                          words=words, tokens=words, text_spec=spec)
    top = g.top_words(1, n=5, min_count=1)
    assert list(top["word"]) == ["good", "movie"] and top["count"].tolist() == [2, 1]
    assert top["mean"].tolist() == pytest.approx([0.6, 0.1])
    assert g.top_words(0, min_count=1)["word"].tolist() == ["badly", "movie"]
    assert g.top_words(1, min_count=2)["word"].tolist() == ["good"]
    fig = plot_top_words(g, n=2, min_count=1)
    labels = [t.get_text() for t in fig.axes[1].get_yticklabels()]
    assert labels == ["movie", "good"]

    cmp = compare(_tabular(), _tabular(scale=0.5), names=("old", "new"))
    ax = plot_comparison(cmp, n=2).axes[0]
    assert ax.get_yticklabels()[-1].get_text() == "income"  # biggest change on top


def _grouped() -> GlobalExplanation:
    g = _tabular()
    rel = g.sample.values["rel:x"]
    groups = np.array(["f", "m", "m", "m"] * 4)
    g.groups = GroupStats.from_batch("x", rel, groups, {"age": [0], "money": [1, 2]})
    return g


def test_sensitive_share_bars_are_the_group_means_with_two_standard_errors():
    g = _grouped()
    fig = plot_sensitive_shares(g)
    shares = g.sensitive_shares().set_index(["sensitive", "group"])
    for ax, name in zip(fig.axes[:2], ["age", "money"], strict=True):
        assert ax.get_title() == name
        assert [t.get_text() for t in ax.get_yticklabels()] == ["f", "m"]
        widths = [b.get_width() for b in _bars(ax)]
        np.testing.assert_allclose(widths, shares.loc[name, "share"].to_numpy()[:2])
        (line,) = [ln for ln in ax.lines if ln.get_linestyle() == "--"]  # share of all rows
        assert line.get_xdata()[0] == pytest.approx(shares.loc[(name, "(all rows)"), "share"])
        caps = ax.collections[0].get_segments()  # error bars: share ± 2 SE
        half = [abs(seg[1][0] - seg[0][0]) / 2 for seg in caps]
        np.testing.assert_allclose(half, 2 * shares.loc[name, "stderr"].to_numpy()[:2])


def test_global_report_embeds_plots_and_the_bias_lens():
    from dlbacktrace.report.results import comparison_report, global_report

    html = global_report(_grouped())
    assert html.count('src="data:image/png;base64,') == 3  # importance, beeswarm, shares
    assert "Bias lens: share of |relevance| on sensitive features" in html
    assert "money (2 columns)" in html
    plain = global_report(_tabular())
    assert plain.count('src="data:image/png;base64,') == 2 and "Bias lens" not in plain
    import torch

    rel = torch.ones(2, 1, 3, 3, dtype=torch.float64)
    images = GlobalExplanation(mode="default", target="None", n_classes=2,
                               class_names=["a", "b"],
                               inputs={"img": ClassMoments.from_batch(rel, torch.tensor([0, 1]),
                                                                       2)})
    assert global_report(images).count('src="data:image/png;base64,') == 1  # class maps
    cmp = compare(_tabular(), _tabular(scale=0.5), names=("old", "new"))
    page = comparison_report(cmp)
    assert page.count('src="data:image/png;base64,') == 1
    assert "Feature importance change" in page and "income" in page
