"""Generation and aggregate records: what they keep, bit-identical re-verification (teacher
forcing for generations, recomputation for aggregates), changed weights reported; on SQLite
and PostgreSQL."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from cli_assets import assets

from dlbacktrace import Backtrace
from dlbacktrace.aggregate import aggregate
from dlbacktrace.audit import AuditError, AuditStore, verify_chain, verify_record
from dlbacktrace.audit.codec import archive_digest, encode_global, relevance_digest
from dlbacktrace.io.loading import load_model, parse_model_spec
from dlbacktrace.tasks.text import explain_continuation


@pytest.fixture(scope="module")
def iris():
    a = assets()
    spec = parse_model_spec(a.iris_spec, weights=str(a.iris_weights))
    return spec, load_model(spec), a.iris_x[:30]


@pytest.fixture()
def store(new_location):
    with AuditStore(new_location()) as s:
        yield s


@pytest.mark.slow  # the tiny_causal_lm fixture loads the real SmolLM2 once (its tokenizer)
def test_generation_record_keeps_ids_options_and_relevance(store, tiny_causal_lm):
    model, tokenizer = tiny_causal_lm
    gen, ids = store.explain_generation(model, tokenizer, "the cat sat on", max_new_tokens=3,
                                        bucket=16)
    rec = store.get(ids[0])
    c = rec.content
    assert rec.kind == "generation" and c["kind"] == "generation" and len(ids) == 1
    g = c["generation"]
    assert g["prompt_ids"] == gen.ids[: gen.prompt_length].tolist()
    assert g["generated_ids"] == gen.generated_ids.tolist() and len(g["generated_ids"]) == 3
    assert g["positions"] == [gen.prompt_length + k for k in range(3)]
    assert c["options"] == {"mode": "default", "attention": gen.attention, "batch_size": 16,
                            "bucket": 16, "max_new_tokens": 3, "do_sample": False, "seed": 0}
    assert set(c["model"]["fingerprint"]) == {"architecture", "weights", "digest"}
    stored = rec.explanation()
    assert relevance_digest(stored) == c["relevance"]["digest"] == relevance_digest(
        gen.explanation)
    matrix = stored.total_by_name["input_ids"]  # [3, L]
    assert torch.equal(matrix, gen.explanation.total_by_name["input_ids"])
    inputs = rec.inputs().kwargs
    assert torch.equal(inputs["generated_ids"], gen.generated_ids)
    assert verify_chain(store).ok


@pytest.mark.slow
def test_generation_verifies_by_teacher_forcing(store, tiny_causal_lm, monkeypatch):
    model, tokenizer = tiny_causal_lm
    # bucket=4: the two sequences pad to different widths, so each must be explained alone
    # for its record to replay bit for bit
    _, ids = store.explain_generation(model, tokenizer,
                                      ["hello there", "one two three four five six seven"],
                                      max_new_tokens=3, mode="contrast", bucket=4)
    assert len(ids) == 2
    import dlbacktrace.tasks.text as text

    calls = []
    monkeypatch.setattr(text, "explain_continuation",
                        lambda *a, **k: calls.append(k) or explain_continuation(*a, **k))
    for rid in ids:
        result = verify_record(store, rid, (model, tokenizer))
        assert result.identical and result.fingerprint_match, result.message
        assert result.kind == "generation" and result.max_abs_diff == 0.0
        assert {"total/input_ids", "net/input_ids"} <= set(result.per_map)
    assert len(calls) == 2 and calls[0]["mode"] == "contrast"  # replayed, not regenerated


@pytest.mark.slow
def test_generation_with_changed_weight_is_reported(store, tiny_causal_lm):
    model, tokenizer = tiny_causal_lm
    _, ids = store.explain_generation(model, tokenizer, "the cat sat on", max_new_tokens=2)
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.model.layers[0].mlp.down_proj.weight[0, 0] += 0.5
    result = verify_record(store, ids[0], (changed, tokenizer))
    assert not result.identical and result.max_abs_diff > 0
    assert not result.fingerprint_match and "weights" in result.message
    assert "architecture" not in result.message.split("changed:")[-1]
    with pytest.raises(AuditError, match="needs the tokenizer"):
        verify_record(store, ids[0], model)


def test_aggregate_record_verifies_bit_for_bit(store, iris):
    spec, loaded, x = iris
    labels = torch.arange(len(x)) % 3
    g, rid = store.aggregate(loaded.model, x, labels=labels, spec=spec, target="label",
                             batch_size=4, class_names=["a", "b", "c"])
    rec = store.get(rid)
    c = rec.content
    assert rec.kind == "aggregate" and c["options"] == {
        "mode": "default", "batch_size": 4, "target": "label", "class_names": ["a", "b", "c"]}
    assert c["data"]["rows"] == len(x) and c["aggregate"]["rows"] == g.rows == len(x)
    assert torch.equal(rec.inputs().args[0], x)
    assert torch.equal(rec.inputs().kwargs["labels"], labels)
    back = rec.global_explanation()
    assert c["aggregate"]["digest"] == archive_digest(encode_global(back))
    assert np.array_equal(back.class_maps(), g.class_maps(), equal_nan=True)
    result = verify_record(store, rid)  # the model reloaded from the stored spec
    assert result.identical and result.fingerprint_match, result.message
    assert result.kind == "aggregate" and "inputs/0/sum" in result.per_map
    with pytest.raises(AuditError, match="is an aggregate"):
        rec.explanation()


def test_aggregate_with_changed_weight_is_reported(store, iris):
    spec, loaded, x = iris
    _, rid = store.aggregate(Backtrace(loaded.model), x, spec=spec)
    changed = load_model(spec)
    with torch.no_grad():
        changed.model.net[0].weight[0, 0] += 0.5
    result = verify_record(store, rid, changed)
    assert not result.identical and result.max_abs_diff > 0
    assert not result.fingerprint_match and "weights" in result.message
    # the aggregate's own numbers differ from a direct recomputation with the changed model
    direct = aggregate(changed.model, x)
    stored = store.get(rid).global_explanation().class_maps()
    assert not np.array_equal(direct.class_maps(), stored, equal_nan=True)


def test_aggregate_refuses_what_it_cannot_replay(store, iris):
    _, loaded, x = iris
    with pytest.raises(AuditError, match="cannot take"):
        store.aggregate(loaded.model, x, backend="ray")
    with pytest.raises(AuditError, match="tensor or NumPy array"):
        store.aggregate(loaded.model, [x])
    assert store.count() == 0


def test_schema_1_records_without_kind_are_explanations(store, iris):
    """Records written before kinds existed still read and verify as explanations."""
    spec, loaded, x = iris
    _, rid = store.explain(Backtrace(loaded.model), x[:3], spec=spec)
    rec = store.get(rid)
    old = {k: v for k, v in rec.content.items() if k not in ("kind", "blobs")}
    old["schema"] = 1
    old_id = store.append(old, rec.explanation_blob, rec.inputs_blob)
    assert store.get(old_id).kind == "explanation"
    result = verify_record(store, old_id)
    assert result.identical and result.kind == "explanation", result.message
