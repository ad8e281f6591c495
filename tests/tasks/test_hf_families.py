"""dlbacktrace.tasks.hf: the Hugging Face specifics each family declares, read by the helpers."""

from __future__ import annotations

import pytest
from torch import nn

from dlbacktrace.tasks import hf

transformers = pytest.importorskip("transformers")

SMALL = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
             vocab_size=50)


def _llama() -> nn.Module:
    cfg = transformers.LlamaConfig(**SMALL, num_key_value_heads=1, max_position_embeddings=64)
    return transformers.LlamaForCausalLM(cfg).eval()


def _bert(**labels) -> nn.Module:
    cfg = transformers.BertConfig(**SMALL, max_position_embeddings=48, **labels)
    return transformers.BertForSequenceClassification(cfg).eval()


def _gpt2() -> nn.Module:
    cfg = transformers.GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=40)
    return transformers.GPT2LMHeadModel(cfg).eval()


def test_families_found_by_model_type() -> None:
    assert hf.family_of(_llama()).name == "llama"
    assert hf.family_of(_bert()).name == "bert"
    assert hf.family_of(_gpt2()).name == "gpt2"
    assert hf.family_of(nn.Linear(2, 2)) is hf.GENERIC


def test_each_model_type_is_declared_once() -> None:
    declared = [t for family in hf.FAMILIES for t in family.model_types]
    assert len(declared) == len(set(declared))
    assert len({f.name for f in hf.FAMILIES}) == len(hf.FAMILIES)


def test_export_options_only_what_forward_takes() -> None:
    assert hf.export_options(_llama()) == {"use_cache": False}
    assert hf.export_options(_gpt2()) == {"use_cache": False}
    assert hf.export_options(_bert()) == {}
    assert hf.export_options(nn.Linear(2, 2)) == {}


def test_logits_keyword() -> None:
    assert hf.logits_keyword(_llama()) == "logits_to_keep"
    assert hf.logits_keyword(_bert()) is None


def test_class_names_ordered_by_index() -> None:
    model = _bert(id2label={1: "pos", 0: "neg", 2: "mixed"}, label2id={})
    assert hf.class_names(model) == ["neg", "pos", "mixed"]
    assert hf.class_names(nn.Linear(2, 2)) is None


def test_context_length_from_the_family_key() -> None:
    assert hf.context_length(_llama()) == 64
    assert hf.context_length(_gpt2()) == 40  # n_positions
    assert hf.context_length(_bert()) == 48
    assert hf.context_length(nn.Linear(2, 2)) is None


def test_embeddings() -> None:
    model = _llama()
    assert hf.output_embedding(model) is model.lm_head
    assert hf.embedding_rows(model) == 50
    assert hf.output_embedding(nn.Linear(2, 2)) is None


def test_expert_layouts() -> None:
    by_name = {f.name: f for f in hf.FAMILIES}
    assert by_name["qwen2_moe"].experts.shared == "shared_expert"
    assert by_name["mixtral"].experts.shared is None
    assert by_name["llama"].experts is None
    assert hf.GENERIC.experts.kernel == "batched_mm"


def test_declarations_are_read_only() -> None:
    with pytest.raises(TypeError):
        hf.GENERIC.export_options["use_cache"] = True  # type: ignore[index]
    with pytest.raises(AttributeError):
        hf.GENERIC.labels = "x"  # type: ignore[misc]
