"""Displays of text explanations: colours, HTML (inline and standalone), rich, matplotlib."""

from __future__ import annotations

import html.parser
import re

import numpy as np
import pytest

from dlbacktrace.tasks.text import explain_continuation, explain_text
from dlbacktrace.tasks.text.display import token_colours

TEXTS = ["a <b>bold</b> & fine day", "so sad"]


@pytest.fixture(scope="module")
def text_exp(tiny_text_classifier):
    model, tok = tiny_text_classifier
    return explain_text(model, tok, TEXTS)


@pytest.fixture(scope="module")
def gen_exp(tiny_causal_lm):
    model, tok = tiny_causal_lm
    return explain_continuation(model, tok, "The capital of France is", " Paris.\nYes, it is")


def test_colours_hand_values() -> None:
    assert token_colours(np.array([0.0, 0.5, 1.0]), signed=False).tolist() == [
        [255, 255, 255], [255, 155, 155], [255, 55, 55]]
    assert token_colours(np.array([-2.0, 0.0, 1.0]), signed=True).tolist() == [
        [55, 55, 255], [255, 255, 255], [255, 155, 155]]
    assert token_colours(np.zeros(3), signed=True).tolist() == [[255, 255, 255]] * 3


class _Collect(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.spans: list[tuple[str, str]] = []
        self.text: list[str] = []
        self._style: str | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "span":
            self._style = dict(attrs).get("style", "")

    def handle_data(self, data):
        self.text.append(data)
        if self._style is not None:
            self.spans.append((self._style, data))
            self._style = None


def test_text_html(text_exp, tmp_path) -> None:
    doc = text_exp.to_html()
    assert doc == text_exp._repr_html_()
    assert "<b>" not in doc and "&lt;" in doc and "&amp;" in doc  # the text is escaped
    parser = _Collect()
    parser.feed(doc)
    rows = [r for r in text_exp.tokens(0) if not r.padding]
    spans = parser.spans[: len(rows)]
    assert [s[1] for s in spans] == [r.text for r in rows]
    content = [r.relevance if not r.special else 0.0 for r in rows]
    strongest = int(np.argmax(content))
    assert "rgb(255,55,55)" in spans[strongest][0]  # the most relevant token, full red
    pad_count = sum(r.padding for r in text_exp.tokens(1))
    assert pad_count > 0 and len(parser.spans) == len(rows) + len(text_exp.tokens(1)) - pad_count
    path = text_exp.save_html(tmp_path / "text")
    assert path.suffix == ".html"
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and "dlbacktrace" in page


def test_text_rich(text_exp) -> None:
    from rich.console import Console

    console = Console(record=True, width=200, color_system="truecolor")
    console.print(text_exp)
    out = console.export_text(clear=False)
    assert "fine" in out and "sad" in out and "[PAD]" not in out
    styled = console.export_html(inline_styles=True)
    assert "#ff3737" in styled  # rgb(255,55,55): the strongest token of a row


def test_generation_html_and_rich(gen_exp, tmp_path) -> None:
    doc = gen_exp.to_html()
    for token in gen_exp.generated_tokens:
        assert token.replace("\n", "↵") in doc.replace("↵<br>", "↵")
    for p in gen_exp.probabilities:
        assert f"p={float(p):.3f}" in doc
    parser = _Collect()
    parser.feed(doc)
    # context spans of all steps: P + (P+1) + ... tokens, plus the generated-token spans
    P, G = gen_exp.prompt_length, gen_exp.steps
    assert len(parser.spans) == sum(P + k for k in range(G)) + G + 1  # + the answer line
    assert gen_exp.save_html(tmp_path / "gen.html").read_text().startswith("<!DOCTYPE html>")
    from rich.console import Console

    console = Console(record=True, width=200)
    console.print(gen_exp)
    assert "Paris" in console.export_text()


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_generation_plot(tiny_causal_lm, gen_exp, mode) -> None:
    from matplotlib.figure import Figure

    exp = gen_exp
    if mode == "contrast":
        model, tok = tiny_causal_lm
        exp = explain_continuation(model, tok, "The capital of France is", " Paris.\nYes, it is",
                                   mode="contrast")
    fig = exp.plot()
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    image = ax.images[0]
    np.testing.assert_allclose(np.asarray(image.get_array()), exp.matrix.numpy()[:, :-1])
    labels = [t.get_text() for t in ax.get_yticklabels()]
    assert labels == [t.replace("\n", "↵") for t in exp.generated_tokens]
    low, high = image.get_clim()
    if mode == "contrast":
        assert low == -high and image.get_cmap().name == "RdBu_r"
    else:
        assert low == 0.0 and high == pytest.approx(float(exp.matrix.max()))
    last = exp.plot(max_columns=4).axes[0].images[0]
    np.testing.assert_allclose(np.asarray(last.get_array()), exp.matrix.numpy()[:, -5:-1])


def test_generation_table_decoded_tokens_and_newline(gen_exp) -> None:
    """The CLI's generation JSON and table show decoded text (" capital", not "Ġcapital"),
    keep the vocabulary piece beside it, and show a generated newline as ⏎."""
    from rich.console import Console

    from dlbacktrace.apps.cli.generation import generation_json, generation_table

    (data,) = generation_json([gen_exp])
    assert "\n" in gen_exp.generated_tokens  # the continuation has a newline token
    pieces = []
    for k, step in enumerate(data["steps"]):
        assert step["token"] == gen_exp.generated_tokens[k]
        expected = gen_exp.top_contributors(k, 5)
        assert [t["token"] for t in step["top"]] == [r.text for r in expected]
        assert [t["piece"] for t in step["top"]] == [r.token for r in expected]
        pieces += [t["piece"] for t in step["top"]]
    assert any(p.startswith("Ġ") for p in pieces)  # the raw pieces differ from the text
    console = Console(record=True, width=300)
    console.print(generation_table([data]))
    out = console.export_text()
    assert "'⏎'" in out and "' Paris'" in out
    assert "Ġ" not in out and "Ċ" not in out
    from dlbacktrace.report.results import generation_report

    page = generation_report([gen_exp])  # the HTML report's table of generated tokens
    cells = re.findall(r"<td>([^<]*\(-?[0-9.e+-]+\)[^<]*)</td>", page)
    assert cells and all("Ġ" not in c and "Ċ" not in c for c in cells)
    assert any("&#39; Paris&#39;" in c for c in cells)
