"""Token views' colour scale and legend on hand-built views: special tokens are left out of
each row's scale by default (a huge attention-sink value no longer washes out the rest), the
option puts them back, and every HTML and rich row shows its scale."""

from __future__ import annotations

import html
import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dlbacktrace.tasks.text import display
from dlbacktrace.tasks.text.tokens import TokenTable
from dlbacktrace.viz.tokens import colour_scale, legend_html, token_colours, visible_token

SINK = 100.0  # the special first token's relevance: 50x the largest content value


def _table(tokens: list[str], texts: list[str], special: list[bool]) -> TokenTable:
    n = len(tokens)
    return TokenTable(np.arange(n), tokens, texts, None, np.array(special),
                      np.zeros(n, bool), np.arange(n) - 1)


@pytest.fixture
def gen_view():
    """Prompt <|im_start|> hello⏎ world, then the generated token " again"."""
    table = _table(["<|im_start|>", "Ġhello", "Ċ", "Ġworld", "Ġagain"],
                   ["<|im_start|>", " hello", "\n", " world", " again"],
                   [True, False, False, False, False])
    return SimpleNamespace(mode="default", attention="value", table=table, prompt_length=4,
                           steps=1, matrix=torch.tensor([[SINK, 0.5, 0.25, 2.0, 0.0]]),
                           probabilities=torch.tensor([0.9]), prompt_text="hello\n world",
                           generated_text=" again")


@pytest.fixture
def text_view():
    """One contrast-mode row: [CLS] good ⏎ film (signed values; the special one is huge)."""
    table = _table(["[CLS]", "good", "\n", "film"], ["[CLS]", "good", "\n", " film"],
                   [True, False, False, False])
    return SimpleNamespace(mode="contrast", attention="split", tables=[table],
                           relevance=torch.tensor([[-50.0, 1.0, -0.5, 0.25]]),
                           probabilities=torch.tensor([[0.3, 0.7]]),
                           target=torch.tensor([1]), label=lambda i: "positive")


def _span_colours(doc: str) -> dict[str, str]:
    """The background colour of each token span, by its tooltip's token."""
    found = re.findall(r'class="t[^"]*" style="background:(rgb\([0-9,]+\))" title="([^:]+):', doc)
    return {html.unescape(token): colour for colour, token in found}


def test_scale_leaves_special_tokens_out():
    values = np.array([SINK, 0.5, -3.0, 2.0])
    special = np.array([True, False, False, False])
    assert colour_scale(values, special) == 3.0  # the largest non-special |value|
    assert colour_scale(values) == SINK
    assert display.row_scale(values, special) == 3.0
    assert display.row_scale(values, special, include_special=True) == SINK
    assert colour_scale(np.array([5.0]), np.array([True])) == 0.0  # nothing left: no scale
    # Values above the scale are clipped to the end colour; at the scale they reach it.
    assert token_colours(values, signed=False, scale=2.0).tolist() == [
        [255, 55, 55], [255, 205, 205], [255, 55, 55], [255, 55, 55]]


def test_generation_html_scale_and_legend(gen_view):
    doc = display.generation_html(gen_view)
    colours = _span_colours(doc)
    assert colours["Ġworld"] == "rgb(255,55,55)"  # 2.0 is the scale's maximum: full red
    assert colours["Ġhello"] == "rgb(255,205,205)"  # 0.5 / 2 = 0.25 of the way
    assert colours["<|im_start|>"] == "rgb(255,55,55)"  # the sink, clipped
    assert doc.count('class="lg"') == 1  # one legend per row
    assert doc.count("<span") == 4 + 1 + 1  # context tokens, generated token, answer: no more
    assert '<i class="lo">0</i>' in doc and '<i class="hi">2</i>' in doc
    assert "left out of the scale" in doc
    full = display.generation_html(gen_view, include_special=True)
    colours = _span_colours(full)
    assert colours["Ġworld"] == "rgb(255,251,251)"  # 2 / 100: the washed-out picture
    assert '<i class="hi">100</i>' in full and "left out of the scale" not in full


def test_text_html_signed_scale_and_legend(text_view):
    doc = display.text_html(text_view)
    colours = _span_colours(doc)
    assert colours["good"] == "rgb(255,55,55)"  # +1 = +scale
    assert colours["\n"] == "rgb(155,155,255)"  # -0.5: half way to blue
    assert colours["[CLS]"] == "rgb(55,55,255)"  # -50, clipped to -scale
    assert '<i class="lo">-1</i>' in doc and '<i class="hi">+1</i>' in doc
    stops = re.search(r"linear-gradient\(to right,([^)]+\)(?:,[^)]+\))*)\)", doc).group(1)
    assert stops.startswith("rgb(55,55,255)") and stops.endswith("rgb(255,55,55)")
    assert "rgb(255,255,255)" in stops  # white at 0
    full = display.text_html(text_view, include_special=True)
    assert _span_colours(full)["good"] == "rgb(255,251,251)"  # 1 / 50 of the way
    assert '<i class="hi">+50</i>' in full


def test_rich_views_show_the_scale(gen_view, text_view):
    from rich.console import Console

    console = Console(record=True, width=200, color_system="truecolor")
    console.print(display.generation_rich(gen_view))
    out = console.export_text(clear=False)
    assert "0 ██████ 2" in out and "hello⏎ world" in out and "again" in out
    assert "left out of the scale" in " ".join(out.split())
    styled = console.export_html(inline_styles=True)
    assert "#ff3737" in styled and "#ffffff" in styled  # the bar's two ends
    console = Console(record=True, width=200, color_system="truecolor")
    console.print(display.generation_rich(gen_view, include_special=True))
    assert "0 ██████ 100" in console.export_text()
    console = Console(record=True, width=200, color_system="truecolor")
    console.print(display.text_rich(text_view))
    assert "-1 ██████ +1" in console.export_text()


def test_legend_html_hand_values():
    doc = legend_html(0.8626, signed=False)
    assert '<i class="lo">0</i>' in doc and '<i class="hi">0.863</i>' in doc
    assert ("linear-gradient(to right,rgb(255,255,255),rgb(255,205,205),rgb(255,155,155),"
            "rgb(255,105,105),rgb(255,55,55))") in doc


@pytest.mark.parametrize("text, shown", [
    (" capital", " capital"), ("\n", "⏎"), ("a\r\nb", "a⏎b"), ("\t", "⇥"), ("  ", "␣␣"),
    ("", ""),
])
def test_visible_token(text, shown):
    assert visible_token(text) == shown
