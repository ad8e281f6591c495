"""dlbacktrace.tasks.text end to end on real models: SmolLM2-135M-Instruct and a MiniLM
sentiment head.

Quality checks that can fail: the generated " Paris" must have "France" among its three most
relevant prompt tokens; on clear examples, the sentiment word outranks every stop word.
"""

from __future__ import annotations

import pytest
import torch

from dlbacktrace.tasks.text import explain_generation, explain_text

pytestmark = pytest.mark.slow

STOP_WORDS = {"the", "a", "an", "is", "was", "this", "it", "and", "i", "so", "of", "to", "that"}
CLEAR = [
    ("i love this song", "love", "positive"),
    ("this is a wonderful day", "wonderful", "positive"),
    ("i hate it", "hate", "negative"),
    ("the weather is awful", "awful", "negative"),
]


@pytest.fixture(scope="module")
def france(smollm2):
    model, tok = smollm2
    return explain_generation(model, tok, "The capital of France is", max_new_tokens=2,
                              batch_size=2)


def test_paris_from_france(france) -> None:
    assert france.generated_tokens[0] == " Paris"
    top3 = [t.text for t in france.top_contributors(0, 3)]
    assert " France" in top3, top3
    assert france.conservation_error < 1e-5
    P = france.prompt_length
    for k in range(france.steps):
        assert torch.all(france.matrix[k, P + k :] == 0)
    assert 0.5 < float(france.probabilities[0]) <= 1.0  # the model is confident about Paris


def test_sentiment_words_outrank_stop_words(minilm_sentiment) -> None:
    model, tok, info = minilm_sentiment
    assert info["accuracy"] > 0.75
    texts = [t for t, _, _ in CLEAR]
    exp = explain_text(model, tok, texts, class_names=info["class_names"])
    assert exp.conservation_error < 1e-5
    for i, (_, word, label) in enumerate(CLEAR):
        assert exp.label(i) == label
        words = {w.text.lower(): w.relevance for w in exp.words(i)}
        stops = [r for w, r in words.items() if w in STOP_WORDS]
        assert stops, words
        assert words[word] > max(stops), (texts[i], words)
