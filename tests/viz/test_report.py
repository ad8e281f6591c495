"""HTML reports: hand-built explanations rendered to self-contained, escaped HTML."""

from __future__ import annotations

import base64
import math
import re

import pytest
import torch

from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.report import explanation_report, explanation_rows, ledger, prediction
from dlbacktrace.report.results import generic_sections, report_from_json


def make_exp(name: str, total: torch.Tensor, net: torch.Tensor | None = None,
             output: torch.Tensor | None = None) -> Explanation:
    seed_total = float(total.sum())
    return Explanation(
        mode="contrast" if net is not None else "default",
        input_names=[name],
        total_by_name={name: total},
        net_by_name=None if net is None else {name: net},
        absorbed={"linear": 0.0},
        seed=torch.tensor([[0.0, seed_total]]),
        target=torch.tensor([1]),
        output=output if output is not None else torch.tensor([[0.0, math.log(3.0)]]),
    )


def no_external_refs(html: str) -> None:
    refs = re.findall(r'(?:src|href)="([^"]*)"', html)
    assert all(r.startswith(("data:", "#")) for r in refs), refs
    assert "http://" not in html and "https://" not in html


def test_prediction_probabilities_hand_computed():
    p = prediction(torch.tensor([0.0, math.log(3.0)]), ["cat", "dog"])
    assert p["class"] == 1 and p["label"] == "dog"
    assert [x["label"] for x in p["probabilities"]] == ["dog", "cat"]
    assert p["probabilities"][0]["p"] == pytest.approx(0.75)
    single = prediction(torch.tensor([0.0]))
    assert single["probabilities"][0]["p"] == pytest.approx(0.5)
    lm = prediction(torch.tensor([[9.0, 0.0], [0.0, math.log(4.0)]]))  # last position
    assert lm["class"] == 1 and lm["probabilities"][0]["p"] == pytest.approx(0.8)


def test_ledger_and_text_rows():
    exp = make_exp("input_ids", torch.tensor([[0.5, 0.25, 0.25]]))
    led = ledger(exp)
    assert led["seed_total"] == 1.0 and led["input_total"] == 1.0
    assert led["conservation_error"] == 0.0
    rows = explanation_rows(exp, "text", tokens=[["<script>", "b", "c"]],
                            kwargs={"attention_mask": torch.tensor([[1, 1, 1]])})
    tokens = rows[0]["tokens"]
    assert [t["token"] for t in tokens] == ["<script>", "b", "c"]
    assert tokens[0]["color"] == "rgba(220,40,40,0.850)"  # the largest value: full colour
    assert tokens[1]["color"] == "rgba(220,40,40,0.425)"  # half of it
    assert rows[0]["top_features"][0] == {"feature": "<script> @0", "relevance": 0.5}
    html = explanation_report(exp, "text", tokens=[["<script>", "b", "c"]],
                              kwargs={"attention_mask": torch.tensor([[1, 1, 1]])},
                              model={"description": "<b>m</b>"})
    assert "<script>" not in html and "&lt;script&gt;" in html  # autoescaped
    assert "&lt;b&gt;m&lt;/b&gt;" in html
    no_external_refs(html)


def test_table_rows_contrast_sorted_with_widths():
    total = torch.tensor([[0.1, 0.6, 0.3]])
    net = torch.tensor([[0.1, -0.4, 0.3]])
    exp = make_exp("x", total, net)
    rows = explanation_rows(exp, "table", args=(torch.tensor([[1.0, 2.0, 3.0]]),),
                            feature_names=["a", "b", "c"])
    feats = rows[0]["features"]
    assert [f["name"] for f in feats] == ["b", "c", "a"]  # by |net relevance|
    assert [f["relevance"] for f in feats] == pytest.approx([-0.4, 0.3, 0.1])
    assert [f["width"] for f in feats] == pytest.approx([100.0, 75.0, 25.0])
    assert feats[0]["positive"] == pytest.approx(0.1)  # (total + net) / 2
    assert feats[0]["negative"] == pytest.approx(0.5)  # (total - net) / 2
    assert feats[0]["value"] == 2.0
    html = explanation_report(exp, "table", args=(torch.tensor([[1.0, 2.0, 3.0]]),),
                              feature_names=["a", "b", "c"], config={"target": 1})
    assert "signed net map" in html and "&#34;target&#34;: 1" in html
    assert html.count('class="bar neg"') >= 1


def test_rows_read_the_context_the_explanation_carries():
    """A real explanation with feature and class names: the rows need nothing beside it."""
    from torch import nn

    from dlbacktrace import Backtrace

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    exp = Backtrace(model).explain(x, feature_names=["age", "income", "debt"],
                                   output_names=["deny", "grant"])
    carried = explanation_rows(exp, "table")
    given = explanation_rows(exp, "table", args=(x,), feature_names=["age", "income", "debt"],
                             labels=["deny", "grant"])
    assert carried == given
    assert {f["name"] for f in carried[0]["features"]} == {"age", "income", "debt"}
    assert [f["value"] for f in carried[0]["features"] if f["name"] == "income"] == [-2.0]
    best = int(exp.output[0].argmax())
    assert carried[0]["prediction"]["label"] == ["deny", "grant"][best]


def test_image_report_embeds_pngs():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand(1, 1, 6, 6, generator=gen)
    total = torch.rand(1, 1, 6, 6, generator=gen)
    exp = make_exp("x", total, total * 0.5)
    rows = explanation_rows(exp, "image", args=(image,))
    assert rows[0]["top_features"][0]["relevance"] == pytest.approx(
        float((total * 0.5).max()))
    for key in ("heatmap_png", "contrast_png"):
        data = base64.b64decode(rows[0][key].split(",", 1)[1])
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
    html = explanation_report(exp, "image", args=(image,))
    no_external_refs(html)
    assert html.count("data:image/png;base64,") == 2


def test_generic_sections_and_json_reports():
    data = {"kind": "benchmark", "n": 3, "scores": {"ig": 0.2, "dlb": -0.5},
            "cases": [{"method": "dlb", "auc": 0.25, "extra": {"a": 1}}],
            "meta": {"seed": 0, "weights": {"w1": 1.0}}}
    sections = generic_sections(data)
    titles = [s["title"] for s in sections]
    assert titles[0] == "Summary" and sections[0]["kv"] == {"kind": "benchmark", "n": 3}
    bars = next(s for s in sections if s["title"] == "scores")["bars"]
    assert [b["feature"] for b in bars] == ["dlb", "ig"]  # by magnitude
    assert next(s for s in sections if s["title"] == "cases")["table"][0]["extra"] == '{"a": 1}'
    assert "meta / weights" in titles
    html = report_from_json(data)
    assert "DLBacktrace benchmark" in html and "0.25" in html
    no_external_refs(html)
    exp = make_exp("x", torch.tensor([[1.0, 0.0]]))
    rows = explanation_rows(exp, "table", args=(torch.tensor([[1.0, 2.0]]),))
    saved = {"kind": "table", "mode": "default", "rows": rows, "ledger": ledger(exp),
             "model": {"description": "m"}, "record_id": 7}
    html = report_from_json([saved, saved])
    assert "DLBacktrace batch of 2" in html and "audit record <b>#7</b>" in html


def test_render_page_is_the_one_page_header():
    from dlbacktrace.report.render import render_page

    html = render_page("sections.html.j2", title="<b>T</b>", versions={"torch": "9.9"},
                       sections=[{"id": "s", "title": "only", "kv": {"a": 1}}])
    assert "&lt;b&gt;T&lt;/b&gt;" in html and "<b>T</b>" not in html  # autoescaped
    assert "9.9" in html and "only" in html
    no_external_refs(html)
