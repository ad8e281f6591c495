"""Explanation context: names kept, rows sliced, views (DataFrame, plot, HTML, repr), storage."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn as nn

from dlbacktrace import Backtrace, Explanation, InputError
from dlbacktrace.engine.fileformat import HEADER_KEY, read_archive, write_archive

FEATURES = ["age", "income", "height", "weight", "score"]
CLASSES = ["low", "mid", "high"]


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, 3)).double()


class TokenModel(nn.Module):
    """Token ids -> mean embedding -> two logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 2)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.head(self.emb(input_ids).mean(1))


class TinyConv(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(2)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


@pytest.fixture(scope="module")
def tabular():
    model = _mlp()
    x = torch.randn(4, 5, dtype=torch.double, generator=torch.Generator().manual_seed(3))
    bt = Backtrace(model)
    return bt, x, bt.explain(x, feature_names=FEATURES, output_names=CLASSES)


@pytest.fixture(scope="module")
def tokens():
    model = TokenModel()
    ids = torch.tensor([[1, 4, 2], [3, 3, 9]])
    words = [["the", "<b>cat</b>", "sat"], ["a", "a", "dog"]]
    exp = Backtrace(model, mode="contrast").explain(ids, tokens=words, output_names=["no", "yes"])
    return ids, words, exp


# ---- names ---------------------------------------------------------------------------------------
def test_names_are_kept_and_not_given_to_the_model(tabular) -> None:
    _, x, exp = tabular
    assert exp.feature_names == FEATURES
    assert exp.output_names == CLASSES
    assert exp.feature_labels() == FEATURES
    assert exp.output_name(2) == "high"
    torch.testing.assert_close(exp.inputs, x, rtol=0, atol=0)


def test_inputs_are_copies_the_caller_can_change(tabular) -> None:
    bt, x, _ = tabular
    mine = x.clone()
    exp = bt.explain(mine)
    mine.zero_()
    torch.testing.assert_close(exp.inputs, x, rtol=0, atol=0)


def test_wrong_name_counts_fail_fast(tabular) -> None:
    bt, x, _ = tabular
    with pytest.raises(InputError, match="4 feature names"):
        bt.explain(x, feature_names=FEATURES[:4])
    with pytest.raises(InputError, match="output_names"):
        bt.explain(x, output_names=["a", "b"])
    with pytest.raises(InputError, match="unknown input"):
        bt.explain(x, feature_names={"nope": FEATURES})


def test_tokens_per_row_and_shared(tokens) -> None:
    ids, words, exp = tokens
    assert exp.tokens == words and exp.token_input == "input0"  # the integer input
    shared = Backtrace(TokenModel()).explain(ids, tokens=["x", "y", "z"])
    assert shared.tokens == [["x", "y", "z"], ["x", "y", "z"]]
    with pytest.raises(InputError, match="3 strings"):
        Backtrace(TokenModel()).explain(ids, tokens=["x", "y"])


# ---- rows ----------------------------------------------------------------------------------------
def test_row_equals_that_row_explained_alone(tabular) -> None:
    bt, x, exp = tabular
    assert torch.equal(exp[1].relevance, bt.explain(x[1:2]).relevance)  # float64: bitwise
    for i in range(4):
        alone = bt.explain(x[i : i + 1])
        row = exp[i]
        # Slicing is exact; the engine's own batch invariance is exact up to the BLAS kernel's
        # summation order for a different batch size (one float64 ulp seen on some rows).
        torch.testing.assert_close(row.relevance, alone.relevance, rtol=1e-14, atol=1e-16)
        assert torch.equal(row.seed, alone.seed)
        assert torch.equal(row.output, alone.output)
        assert torch.equal(row.target, alone.target)
        assert row.total_absorbed == pytest.approx(alone.total_absorbed, rel=1e-12, abs=1e-15)
        assert row.conservation_error < 1e-12
        assert row.feature_names == FEATURES and row.output_names == CLASSES
        torch.testing.assert_close(row.inputs, x[i : i + 1], rtol=0, atol=0)


def test_slices_masks_and_concat(tabular) -> None:
    _, x, exp = tabular
    part = exp[1:3]
    assert part.batch_size == 2 and len(part) == 2
    assert torch.equal(part.relevance, exp.relevance[1:3])
    picked = exp[[3, 0]]
    assert torch.equal(picked.relevance, exp.relevance[[3, 0]])
    mask = exp[torch.tensor([True, False, False, True])]
    assert torch.equal(mask.output, exp.output[[0, 3]])
    assert torch.equal(exp[-1].target, exp.target[3:])
    # the slices' absorbed amounts add up to the batch's
    halves = [exp[:2], exp[2:]]
    assert sum(h.total_absorbed for h in halves) == pytest.approx(exp.total_absorbed, rel=1e-12)
    again = Explanation.concat(halves)
    assert torch.equal(again.relevance, exp.relevance)
    assert torch.equal(again.absorbed_rows, exp.absorbed_rows)
    assert again.conservation_error < 1e-12
    with pytest.raises(IndexError):
        exp[4]


def test_token_rows_keep_their_tokens(tokens) -> None:
    _, words, exp = tokens
    assert exp[1].tokens == [words[1]]
    assert exp[1].positive.shape == (1, 3)


# ---- views ---------------------------------------------------------------------------------------
def test_dataframe_is_the_relevance_with_names(tabular) -> None:
    _, x, exp = tabular
    df = exp.to_dataframe()
    assert len(df) == 4 * 5
    assert list(df.columns[:4]) == ["row", "input", "index", "feature"]
    rel = exp.relevance.numpy()
    for _, line in df.iterrows():
        r, j = int(line["row"]), int(line["index"])
        assert line["feature"] == FEATURES[j]
        assert line["relevance"] == rel[r, j]
        assert line["value"] == x[r, j].item()
        assert line["target_name"] == CLASSES[int(exp.target[r])]
    wide = df.pivot(index="row", columns="feature", values="relevance")[FEATURES]
    np.testing.assert_array_equal(wide.to_numpy(), rel)


def test_dataframe_of_tokens_contrast(tokens) -> None:
    _, words, exp = tokens
    df = exp.to_dataframe()
    assert df["feature"].tolist() == words[0] + words[1]
    np.testing.assert_array_equal(df["positive"] - df["negative"], df["relevance"])
    np.testing.assert_array_equal(df["relevance"], exp.relevance.double().reshape(-1).numpy())


def test_repr_is_short_on_a_big_input() -> None:
    model = TinyConv()
    x = torch.randn(16, 3, 32, 32)
    exp = Backtrace(model).explain(x, output_names=[f"class {i}" for i in range(5)])
    text = repr(exp)
    assert len(text) < 300
    assert "tensor(" not in text and "\n" not in text
    assert "rows=16" in text and "(16, 3, 32, 32)" in text and "conservation_error" in text


def test_html_escapes_names() -> None:
    evil = "<script>alert(1)</script>"
    exp = Backtrace(_mlp()).explain(torch.randn(1, 5, dtype=torch.double),
                                    feature_names=[evil, "b", "c", "d", "e"],
                                    output_names=["<i>x</i>", "y", "z"])
    page = exp._repr_html_()
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "<i>" not in page


def test_html_token_highlight_escapes(tokens) -> None:
    page = tokens[2]._repr_html_()
    assert "&lt;b&gt;cat&lt;/b&gt;" in page and "<b>cat" not in page
    assert page.count("<span") == 6


def test_html_token_rows_carry_a_legend_of_their_scale(tokens) -> None:
    import re

    exp = tokens[2]
    page = exp._repr_html_()
    highs = re.findall(r'<i class="hi">([^<]+)</i>', page)
    assert len(highs) == len(exp)
    for r, high in enumerate(highs):
        biggest = float(exp.relevance[r].abs().max())
        assert high == f"+{biggest:.3g}"  # contrast: a diverging scale of +-max|relevance|


def test_plot_image_tabular_tokens(tabular, tokens) -> None:
    matplotlib = pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    with matplotlib.rc_context({"backend": "Agg"}):
        image_exp = Backtrace(TinyConv()).explain(torch.randn(2, 3, 8, 8))
        assert isinstance(image_exp.plot(), Figure)
        contrast = Backtrace(TinyConv(), mode="contrast").explain(torch.randn(1, 3, 8, 8))
        assert isinstance(contrast.plot(kind="contrast"), Figure)
        _, _, exp = tabular
        bars = exp.plot(row=1)
        labels = [t.get_text() for t in bars.axes[0].get_yticklabels()]
        order = np.argsort(-np.abs(exp.relevance[1].numpy()), kind="stable")
        assert labels == [FEATURES[j] for j in order]  # largest first, at the top
        positions = [t.get_position()[1] for t in bars.axes[0].get_yticklabels()]
        assert positions == sorted(positions, reverse=True)
        assert isinstance(tokens[2].plot(row=1), Figure)


def test_waterfall_ends_at_the_explained_logit() -> None:
    pytest.importorskip("matplotlib")
    model = _mlp()
    x = torch.randn(2, 5, dtype=torch.double)
    exp = Backtrace(model, mode="contrast").explain(x, target=[0, 2], feature_names=FEATURES)
    fig = exp.plot(row=1, kind="waterfall", max_display=3)
    label = fig.axes[0].get_xlabel()
    with torch.no_grad():
        logit = float(model(x)[1, 2])
    assert label == f"relevance (total {logit:.4g})"
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert ticks[-1] == "absorbed" and ticks[-2] == "3 other features" and len(ticks) == 4


# ---- storage -------------------------------------------------------------------------------------
def test_save_load_keeps_context(tmp_path, tokens, tabular) -> None:
    for exp in (tokens[2], tabular[2]):
        back = Explanation.load(exp.save(tmp_path / "exp"))
        assert (back.feature_names_by_name, back.tokens, back.token_input, back.output_names) == (
            exp.feature_names_by_name, exp.tokens, exp.token_input, exp.output_names)
        for name, value in exp.inputs_by_name.items():
            assert torch.equal(back.inputs_by_name[name], value)
        assert torch.equal(back.relevance, exp.relevance)
        assert repr(back) == repr(exp)


def test_explanation_to_and_from_bytesio(tabular) -> None:
    exp = tabular[2]
    buffer = io.BytesIO()
    assert exp.save(buffer) is None
    buffer.seek(0)
    back = Explanation.load(buffer)
    assert torch.equal(back.relevance, exp.relevance) and back.feature_names == FEATURES
    assert torch.equal(Explanation.load(buffer.getvalue()).seed, exp.seed)


def test_codec_bytesio_round_trip_and_header_layout() -> None:
    arrays = {"a/0": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array([True, False])}
    buffer = io.BytesIO()
    assert write_archive(buffer, arrays, {"format": "x/1", "names": ["é", "<"]}) is None
    header, back = read_archive(io.BytesIO(buffer.getvalue()))
    assert header == {"format": "x/1", "names": ["é", "<"]}
    assert set(back) == set(arrays)
    for k, v in arrays.items():
        np.testing.assert_array_equal(back[k], v)
        assert back[k].dtype == v.dtype
    with np.load(io.BytesIO(buffer.getvalue()), allow_pickle=False) as raw:  # plain npz
        assert raw[HEADER_KEY].dtype == np.uint8
    with pytest.raises(ValueError, match="reserved"):
        write_archive(io.BytesIO(), {HEADER_KEY: np.zeros(1)}, {})


def test_codec_path_is_atomic_and_creates_folders(tmp_path) -> None:
    target = tmp_path / "deep" / "file.npz"
    assert write_archive(target, {"x": np.ones(3)}, {"k": 1}, compress=False) == target
    assert [p.name for p in target.parent.iterdir()] == ["file.npz"]  # no temporary left
    assert read_archive(target)[0] == {"k": 1}


def test_file_without_context_fields_still_loads(tmp_path, tabular) -> None:
    """A file saved before the context fields existed (same format number) loads."""
    exp = tabular[2]
    header, arrays = read_archive(exp.save(tmp_path / "new.npz"))
    for key in ("inputs", "feature_names", "tokens", "token_input", "output_names"):
        header.pop(key)
    arrays = {k: v for k, v in arrays.items() if not k.startswith("inputs/")}
    write_archive(tmp_path / "old.npz", arrays, header)
    back = Explanation.load(tmp_path / "old.npz")
    assert torch.equal(back.relevance, exp.relevance)
    assert back.feature_names is None and back.inputs is None and back.output_names is None
