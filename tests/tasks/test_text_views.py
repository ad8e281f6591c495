"""TextExplanation and GenerationExplanation are views of one Explanation."""

from __future__ import annotations

import pytest
import torch

from dlbacktrace import Backtrace, Explanation
from dlbacktrace.tasks.text import explain_continuation, explain_text

TEXTS = ["Hello world, what a nice day!", "bad"]


@pytest.fixture(scope="module")
def text_exp(tiny_text_classifier):
    model, tok = tiny_text_classifier
    return explain_text(model, tok, TEXTS, mode="contrast")


@pytest.fixture(scope="module")
def gen_exp(tiny_causal_lm):
    model, tok = tiny_causal_lm
    return explain_continuation(model, tok, "The capital of France is", " Paris. Yes")


def test_text_view_reads_its_explanation(text_exp, tiny_text_classifier) -> None:
    exp = text_exp.explanation
    assert isinstance(exp, Explanation) and len(exp) == len(TEXTS)
    assert torch.equal(text_exp.relevance, exp.relevance_by_name["input_ids"].float())
    assert torch.equal(text_exp.logits, exp.output) and torch.equal(text_exp.target, exp.target)
    assert exp.output_names == ["negative", "positive"] == text_exp.class_names
    assert exp.tokens == [t.texts for t in text_exp.tables]
    assert torch.equal(exp.inputs_by_name["input_ids"], text_exp.input_ids)
    # every row's ledger balances, padding rows of the last batch are not in it
    assert exp.row_conservation_error.shape == (2,)
    assert float(exp.row_conservation_error.max()) == text_exp.conservation_error < 1e-5
    assert exp.conservation_error < 1e-5


def test_text_row_equals_the_text_explained_alone(text_exp, tiny_text_classifier) -> None:
    model, tok = tiny_text_classifier
    enc = tok(TEXTS[1], return_tensors="pt")
    alone = Backtrace(model, mode="contrast").explain(**enc)
    row = text_exp.explanation[1]
    n = enc["input_ids"].shape[1]
    torch.testing.assert_close(row.relevance_by_name["input_ids"][:, :n],
                               alone.relevance_by_name["input_ids"], rtol=1e-4, atol=1e-6)
    assert row.total_absorbed == pytest.approx(alone.total_absorbed, rel=1e-4, abs=1e-6)
    assert row.tokens[0][:n] == text_exp.tables[1].texts[:n]


def test_text_view_dataframe_and_html(text_exp) -> None:
    df = text_exp.to_dataframe()
    tokens = df[(df["input"] == "input_ids") & (df["row"] == 0)]
    assert tokens["feature"].tolist() == text_exp.tables[0].texts
    assert tokens["relevance"].tolist() == text_exp.relevance[0].double().tolist()
    assert set(tokens["target_name"]) == {text_exp.label(0)}
    page = text_exp.explanation._repr_html_()
    assert page.count("<span") == int(text_exp.attention_mask.sum())  # padding hidden


def test_generation_view_rows_are_generated_tokens(gen_exp) -> None:
    exp = gen_exp.explanation
    assert len(exp) == gen_exp.steps
    assert torch.equal(exp.target, gen_exp.generated_ids)
    assert exp.output.shape == (gen_exp.steps, exp.seed.shape[1])  # one logit row per token
    seed_at = exp.seed.argmax(-1)
    assert torch.equal(seed_at, gen_exp.generated_ids)
    assert torch.equal(gen_exp.matrix, exp.relevance_by_name["input_ids"].float())
    assert exp.tokens[0] == gen_exp.tokens and len(exp.tokens) == gen_exp.steps
    assert exp.conservation_error < 1e-5 and gen_exp.conservation_error < 1e-5


def test_generation_view_round_trips(gen_exp, tmp_path) -> None:
    back = Explanation.load(gen_exp.explanation.save(tmp_path / "gen"))
    for name, value in gen_exp.explanation.relevance_by_name.items():
        assert torch.equal(back.relevance_by_name[name], value)
    assert back.tokens == gen_exp.explanation.tokens
    pytest.importorskip("matplotlib")
    from matplotlib.figure import Figure

    assert isinstance(back.plot(row=gen_exp.steps - 1), Figure)
