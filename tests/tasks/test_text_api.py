"""dlbacktrace.tasks.text on tiny random models with the real MiniLM and SmolLM2 tokenizers.

Every helper result is checked against a direct engine call on the unpadded input: the length
buckets, batch padding and seeding must not change a single explanation.
"""

from __future__ import annotations

import pytest
import torch

from dlbacktrace import Backtrace
from dlbacktrace.tasks.text import (
    explain_continuation,
    explain_generation,
    explain_text,
)
from dlbacktrace.tasks.text.runner import backtrace_for

TEXTS = ["Hello world, what an unbelievably nice day!", "bad"]


@pytest.fixture(scope="module")
def text_exp(tiny_text_classifier):
    model, tok = tiny_text_classifier
    return explain_text(model, tok, TEXTS)


@pytest.fixture(scope="module")
def gen_exp(tiny_causal_lm):
    model, tok = tiny_causal_lm
    return explain_generation(model, tok, "The capital of France is", max_new_tokens=5)


# ---- explain_text ------------------------------------------------------------------------------
def test_tokens_aligned_with_tokenizer(text_exp, tiny_text_classifier) -> None:
    _, tok = tiny_text_classifier
    for i, text in enumerate(TEXTS):
        ids = tok(text)["input_ids"]
        rows = text_exp.tokens(i)
        assert [r.token for r in rows[: len(ids)]] == tok.convert_ids_to_tokens(ids)
        assert rows[0].special and rows[len(ids) - 1].special  # [CLS] ... [SEP]
        assert not any(r.special for r in rows[1 : len(ids) - 1])
        assert all(r.padding for r in rows[len(ids) :])
        assert not any(r.padding for r in rows[: len(ids)])
        for r in rows[1 : len(ids) - 1]:  # character offsets point at the token in the text
            assert text[r.start : r.end].lower() == r.token.removeprefix("##")
    assert text_exp.input_ids.shape == (2, len(tok(TEXTS[0])["input_ids"]))


def test_padding_gets_zero_and_conservation(text_exp) -> None:
    assert text_exp.conservation_error < 1e-5
    pad = torch.tensor([[r.padding for r in text_exp.tokens(i)] for i in range(2)])
    assert pad[1].any()
    assert torch.all(text_exp.relevance[pad] == 0)
    assert torch.all(text_exp.relevance >= 0)


def test_matches_direct_engine_call_unpadded(text_exp, tiny_text_classifier) -> None:
    model, tok = tiny_text_classifier
    bt = Backtrace(model)
    for i, text in [(1, TEXTS[1])]:  # the short text: 3 tokens padded to 16, in a batch of 2
        enc = tok(text, return_tensors="pt")
        exp = bt.explain(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                         token_type_ids=enc["token_type_ids"])
        direct = exp.relevance_by_name["input_ids"][0]
        n = direct.numel()
        assert int(text_exp.target[i]) == int(exp.target[0])
        torch.testing.assert_close(text_exp.relevance[i, :n], direct.float(), rtol=1e-4,
                                   atol=1e-6)
        torch.testing.assert_close(text_exp.logits[i], exp.output[0], rtol=1e-5, atol=1e-5)


def test_words_sum_their_tokens(text_exp) -> None:
    words = text_exp.words(0)
    assert [w.text for w in words] == ["Hello", "world", ",", "what", "an", "unbelievably",
                                       "nice", "day", "!"]
    rel = text_exp.relevance[0].double().numpy()
    for w in words:
        assert w.relevance == pytest.approx(rel[list(w.tokens)].sum(), rel=1e-9, abs=1e-12)
    multi = next(w for w in words if w.text == "unbelievably")
    assert len(multi.tokens) > 1  # a word of several word pieces
    assert TEXTS[0][multi.start : multi.end] == "unbelievably"
    total_content = sum(r.relevance for r in text_exp.tokens(0) if not r.special)
    assert sum(w.relevance for w in words) == pytest.approx(total_content, rel=1e-9)


def test_top_tokens_sorted_content_only(text_exp) -> None:
    top = text_exp.top_tokens(0, k=3)
    assert len(top) == 3
    assert top[0].relevance >= top[1].relevance >= top[2].relevance
    assert not any(t.special or t.padding for t in top)
    content = [r.relevance for r in text_exp.tokens(0) if not (r.special or r.padding)]
    assert top[0].relevance == max(content)


def test_targets_by_name_and_contrast(tiny_text_classifier) -> None:
    model, tok = tiny_text_classifier
    by_index = explain_text(model, tok, TEXTS, target=0)
    by_name = explain_text(model, tok, TEXTS, target="negative")
    per_row = explain_text(model, tok, TEXTS, target=["negative", 0])
    assert torch.equal(by_index.relevance, by_name.relevance)
    assert torch.equal(by_index.relevance, per_row.relevance)
    assert by_name.label(0) == "negative"
    con = explain_text(model, tok, TEXTS, target=0, mode="contrast")
    assert torch.equal(con.positive + con.negative, con.total)
    assert torch.equal(con.positive - con.negative, con.relevance)
    assert con.conservation_error < 1e-5
    assert float(con.relevance.min()) < 0 < float(con.relevance.max())


def test_one_capture_per_bucket(text_exp, tiny_text_classifier) -> None:
    model, tok = tiny_text_classifier
    bt = backtrace_for(model)  # the cached Backtrace that text_exp used
    before = len(bt._cache)
    explain_text(model, tok, ["short text", "another one here"])
    explain_text(model, tok, ["a longer text, but still under sixteen tokens", "x"])
    assert len(bt._cache) == before  # same 16-token bucket, same batch size: no new capture


# ---- explain_generation ------------------------------------------------------------------------
def _direct_rows(model, ids: torch.Tensor, prompt_length: int) -> torch.Tensor:
    """Reference: one plain engine call per generated token on the unpadded sequence (batch 1,
    full logits, the default one-hot seed at the predicting position)."""
    bt = Backtrace(model)
    seq = ids[None]
    rows = []
    for k in range(ids.numel() - prompt_length):
        exp = bt.explain(input_ids=seq, attention_mask=torch.ones_like(seq), use_cache=False,
                         position=prompt_length + k - 1, target=int(ids[prompt_length + k]))
        rows.append(exp.relevance_by_name["input_ids"][0])
    return torch.stack(rows)


def test_generation_causal_and_matches_reference(gen_exp, tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm
    P, G = gen_exp.prompt_length, gen_exp.steps
    assert P == len(tok("The capital of France is")["input_ids"]) and G == 5
    assert gen_exp.matrix.shape == (G, P + G)
    for k in range(G):  # later tokens (and the token itself) receive exactly 0
        assert torch.all(gen_exp.matrix[k, P + k :] == 0)
        assert float(gen_exp.matrix[k, : P + k].sum()) > 0
    assert gen_exp.conservation_error < 1e-5
    torch.testing.assert_close(gen_exp.matrix, _direct_rows(model, gen_exp.ids, P), rtol=1e-4,
                               atol=1e-7)


def test_generation_is_greedy_and_probabilities(gen_exp, tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm
    ids = gen_exp.ids[None]
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0]
    P = gen_exp.prompt_length
    steps = logits[P - 1 : -1]
    assert torch.equal(steps.argmax(-1), gen_exp.generated_ids)  # greedy
    expected = torch.softmax(steps, -1).gather(1, gen_exp.generated_ids[:, None])[:, 0]
    torch.testing.assert_close(gen_exp.probabilities, expected, rtol=1e-4, atol=1e-7)
    assert gen_exp.generated_text == tok.decode(gen_exp.generated_ids, skip_special_tokens=True)


def test_top_contributors(gen_exp) -> None:
    for k in range(gen_exp.steps):
        top = gen_exp.top_contributors(k, 3)
        assert len(top) == 3
        assert all(t.index < gen_exp.prompt_length + k for t in top)
        assert top[0].relevance == pytest.approx(float(gen_exp.matrix[k].max()))
        assert top[0].relevance >= top[1].relevance >= top[2].relevance
    assert len(gen_exp.top_tokens) == gen_exp.steps


def test_buckets_and_batch_sizes_do_not_change_it(gen_exp, tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm
    other = explain_continuation(model, tok, "The capital of France is", gen_exp.generated_ids,
                                 bucket=16, batch_size=2)
    torch.testing.assert_close(other.matrix, gen_exp.matrix, rtol=1e-4, atol=1e-7)
    same = explain_continuation(model, tok, "The capital of France is", gen_exp.generated_ids)
    assert torch.equal(same.matrix, gen_exp.matrix)  # same capture: bit-identical
    assert torch.equal(same.probabilities, gen_exp.probabilities)


def test_continuation_text_and_contrast(tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm
    answer = " Paris. It is a city"  # 6 tokens: the capture of gen_exp is reused
    exp = explain_continuation(model, tok, "The capital of France is", answer, mode="contrast")
    cont = tok(answer, add_special_tokens=False)["input_ids"]
    assert exp.generated_ids.tolist() == cont
    torch.testing.assert_close(exp.positive - exp.negative, exp.matrix, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(exp.positive + exp.negative, exp.total, rtol=1e-5, atol=1e-7)
    assert exp.mode == "contrast"


def test_sampling_is_seeded_and_leaves_global_rng(tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm
    state = torch.get_rng_state()
    a = explain_generation(model, tok, "Once upon a", max_new_tokens=5, do_sample=True, seed=1)
    b = explain_generation(model, tok, "Once upon a", max_new_tokens=5, do_sample=True, seed=1)
    c = explain_generation(model, tok, "Once upon a", max_new_tokens=5, do_sample=True, seed=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(a.ids, b.ids) and torch.equal(a.matrix, b.matrix)
    assert not torch.equal(a.ids, c.ids)  # a random tiny model samples near-uniformly


def test_chat_messages(tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    exp = explain_generation(model, tok, messages, max_new_tokens=2)
    text = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert exp.prompt_text == text
    assert exp.ids[: exp.prompt_length].tolist() == tok(text, add_special_tokens=False)[
        "input_ids"]
    assert exp.table.special[0]  # <|im_start|> is flagged as special
    assert all(torch.all(exp.matrix[k, exp.prompt_length + k :] == 0) for k in range(2))


def test_left_padding_is_removed(gen_exp, tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm
    prompt = gen_exp.ids[: gen_exp.prompt_length]
    pad = torch.full((3,), tok.pad_token_id)
    encoding = {"input_ids": torch.cat([pad, prompt])[None],
                "attention_mask": torch.cat([torch.zeros(3), torch.ones(prompt.numel())])[None]}
    exp = explain_generation(model, tok, encoding, max_new_tokens=5)
    assert torch.equal(exp.ids, gen_exp.ids)
    assert torch.equal(exp.matrix, gen_exp.matrix)


def test_model_flags_restored(tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm
    model.train()
    try:
        explain_generation(model, tok, "Hi", max_new_tokens=5)  # the capture of gen_exp
        assert model.training and all(m.training for m in model.modules())
    finally:
        model.eval()


def test_several_prompts_share_batches_and_match_single_calls(gen_exp, tiny_causal_lm) -> None:
    model, tok = tiny_causal_lm
    prompts = ["The capital of France is", "My favourite food is pasta with"]
    bt = backtrace_for(model)
    several = explain_generation(model, tok, prompts, max_new_tokens=3, batch_size=4)
    captures = len(bt._cache)
    assert isinstance(several, list) and len(several) == 2
    # 6 rows in batches of 4: the first batch mixes rows of both prompts
    for prompt, exp in zip(prompts, several, strict=True):
        alone = explain_generation(model, tok, prompt, max_new_tokens=3, batch_size=4)
        assert torch.equal(exp.ids, alone.ids) and exp.prompt_text == prompt
        torch.testing.assert_close(exp.matrix, alone.matrix, rtol=1e-4, atol=1e-7)
        torch.testing.assert_close(exp.probabilities, alone.probabilities, rtol=1e-4, atol=1e-6)
        assert exp.conservation_error < 1e-5
        assert exp.matrix.shape == (3, exp.prompt_length + 3)
    torch.testing.assert_close(several[0].matrix[:, : several[0].ids.numel()],
                               gen_exp.matrix[:3, : several[0].ids.numel()], rtol=1e-4, atol=1e-7)
    # a left-padded batch encoding is the same request
    tok.padding_side = "left"
    try:
        batch = tok(prompts, padding=True, return_tensors="pt")
    finally:
        tok.padding_side = "right"
    again = explain_generation(model, tok, batch, max_new_tokens=3, batch_size=4)
    assert len(bt._cache) == captures  # same bucket, same batch size: no new capture
    for a, b in zip(several, again, strict=True):
        assert torch.equal(a.ids, b.ids) and torch.equal(a.matrix, b.matrix)
    # teacher forcing for several prompts: the same rows again
    forced = explain_continuation(model, tok, prompts, [e.generated_ids for e in several],
                                  batch_size=4)
    for a, b in zip(several, forced, strict=True):
        assert torch.equal(a.matrix, b.matrix)
