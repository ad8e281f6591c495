"""Issue 15 item 5: one capture per model — dynamic batch and sequence dimensions, a static
fallback, and captures shared by every ``Backtrace`` of the same model object."""

from __future__ import annotations

import gc
import logging
import weakref

import pytest
import torch
from torch import nn

from dlbacktrace import Backtrace
from dlbacktrace.engine import capture_cache

VOCAB = 64


@pytest.fixture
def exports(monkeypatch):
    """Counts ``torch.export.export`` calls (and whether each asked for dynamic shapes)."""
    calls: list[bool] = []
    real = torch.export.export

    def counting(*args, **kwargs):
        calls.append(kwargs.get("dynamic_shapes") is not None)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", counting)
    return calls


def _llama() -> nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=16, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=128, pad_token_id=0)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return LlamaForCausalLM._from_config(cfg, attn_implementation="sdpa").double().eval()


def _bert() -> nn.Module:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=16, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=32, max_position_embeddings=128,
                     num_labels=3, pad_token_id=0)  # fmt: skip
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return BertForSequenceClassification._from_config(
            cfg, attn_implementation="sdpa").double().eval()


def _text(batch: int, length: int, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=g)
    mask = torch.ones(batch, length, dtype=torch.long)
    if batch > 1:
        mask[-1, length // 2:] = 0  # a right-padded row
    return {"input_ids": ids, "attention_mask": mask}


# batch sizes 1-8 and lengths 4-64, batch 1 first (its size-1 dims are checked, not exported)
SHAPES = [(1, 4), (8, 64), (3, 17), (1, 33)]


@pytest.mark.parametrize("build", [_llama, _bert], ids=["llama", "bert"])
def test_one_export_across_batch_sizes_and_lengths(build, exports) -> None:
    model = build()
    bt = Backtrace(model)
    options = {"use_cache": False} if build is _llama else {}
    for batch, length in SHAPES:
        exp = bt.explain(**_text(batch, length), **options)
        assert exp.relevance_by_name["input_ids"].shape == (batch, length)
        assert exp.conservation_error < 1e-10
    assert exports == [True]  # one export, with dynamic shapes
    assert len(capture_cache.captures_of(model)) == 1 and len(bt._cache) == 1


@pytest.mark.parametrize(("build", "mode"), [(_llama, "contrast"), (_bert, "default")],
                         ids=["llama", "bert"])
def test_dynamic_capture_explains_like_a_static_one(build, mode) -> None:
    model = build()
    options = {"use_cache": False} if build is _llama else {}
    dynamic = Backtrace(model, mode=mode)
    dynamic.explain(**_text(4, 9, seed=1), **options)  # the capture: another batch and length
    for batch, length in [(1, 6), (3, 12)]:
        inputs = _text(batch, length, seed=batch)
        a = dynamic.explain(**inputs, **options)
        b = Backtrace(model, mode=mode, dynamic=False).explain(**inputs, **options)
        for name in ("input_ids",):
            torch.testing.assert_close(a.relevance_by_name[name], b.relevance_by_name[name],
                                       rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(a.output, b.output, rtol=1e-12, atol=1e-14)
        assert a.conservation_error < 1e-10 and b.conservation_error < 1e-10
        assert abs(sum(a.absorbed.values()) - sum(b.absorbed.values())) < 1e-10
    graphs = capture_cache.captures_of(model)
    shapes = [tuple(g.user_inputs[0].meta["val"].shape) for g in graphs]
    assert sum(all(isinstance(d, int) for d in s) for s in shapes) == 2  # the two static ones
    assert len(graphs) == 3


class _SizeOneBranch(nn.Module):
    """Computes something else for a batch of one: a graph exported at batch 2 must not be
    reused there."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3).double()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] == 1:
            return self.fc(x) * 2.0
        return self.fc(x)


def test_size_one_is_checked_not_assumed(exports) -> None:
    model = _SizeOneBranch()
    x = torch.randn(3, 4, dtype=torch.double)
    bt = Backtrace(model, mode="contrast")
    bt.explain(x[:2], target=0)
    one = bt.explain(x[:1], target=0)  # the batch-2 graph gives half the model's output here
    assert torch.equal(one.output, model(x[:1]))
    torch.testing.assert_close(one.relevance.sum() + sum(one.absorbed.values()),
                               model(x[:1])[0, 0], rtol=1e-10, atol=1e-12)
    assert exports == [True, False]  # the dynamic capture, then a static one for batch 1
    bt.explain(x, target=0)
    assert len(exports) == 2


def test_model_that_cannot_be_dynamic_falls_back_to_static(monkeypatch, caplog) -> None:
    real = torch.export.export
    calls: list[bool] = []

    def no_dynamic(*args, **kwargs):
        calls.append(kwargs.get("dynamic_shapes") is not None)
        if calls[-1]:
            raise RuntimeError("Constraints violated (simulated specialisation error)")
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.export, "export", no_dynamic)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).double()
    bt = Backtrace(model)
    with caplog.at_level(logging.DEBUG, logger="dlbacktrace.engine.capture"):
        exp = bt.explain(torch.randn(2, 4, dtype=torch.double), target=1)
    assert exp.conservation_error < 1e-12
    assert any("exporting static shapes" in r.getMessage() and r.levelno == logging.DEBUG
               for r in caplog.records)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    bt.explain(torch.randn(2, 4, dtype=torch.double), target=1)
    assert calls == [True, False]  # same shape: the static capture is reused
    bt.explain(torch.randn(3, 4, dtype=torch.double), target=1)
    assert calls == [True, False, True, False]  # a static capture per shape


def test_a_model_that_fixes_its_batch_size_still_explains(exports) -> None:
    """``int(x.shape[0])`` makes export specialise the batch dim: one capture per batch size."""

    class FixedBatch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3).double()

        def forward(self, x):
            rows = int(x.shape[0])
            return self.fc(x) + torch.arange(rows, dtype=x.dtype)[:, None]

    model = FixedBatch()
    bt = Backtrace(model)
    for rows in (2, 3, 2):
        exp = bt.explain(torch.randn(rows, 4, dtype=torch.double), target=0)
        assert exp.output.shape == (rows, 3)
    graphs = capture_cache.captures_of(model)
    assert [tuple(g.user_inputs[0].meta["val"].shape) for g in graphs] == [(2, 4), (3, 4)]


def test_two_backtraces_share_one_capture(exports) -> None:
    model = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    x = torch.randn(4, 5, dtype=torch.double)
    a = Backtrace(model).explain(x, target=2)
    b = Backtrace(model, mode="contrast").explain(x[:3], target=2)
    c = Backtrace(model).explain(x, target=2)
    assert exports == [True]
    assert torch.equal(a.relevance, c.relevance) and b.mode == "contrast"
    other = nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()
    Backtrace(other).explain(x, target=2)  # another model object: its own capture
    assert exports == [True, True]


def test_weights_changed_after_capture_are_read_live(exports) -> None:
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    x = torch.randn(2, 5, dtype=torch.double)
    before = Backtrace(model).explain(x, target=0)
    with torch.no_grad():
        model[0].weight.mul_(-2.0)
        model[2].bias.add_(1.0)
    after = Backtrace(model).explain(x, target=0)  # a new Backtrace: the shared capture
    assert exports == [True]
    assert torch.equal(after.output, model(x).detach())
    assert not torch.allclose(before.relevance, after.relevance)
    fresh = Backtrace(model, dynamic=False).explain(x, target=0)  # a new export
    torch.testing.assert_close(after.relevance, fresh.relevance, rtol=1e-12, atol=1e-14)


def test_a_dtype_change_needs_a_new_capture(exports) -> None:
    model = nn.Sequential(nn.Embedding(VOCAB, 4), nn.Flatten(), nn.Linear(12, 2))
    ids = torch.randint(0, VOCAB, (2, 3))
    Backtrace(model).explain(ids, target=0)
    first = len(exports)
    model.double()  # the integer input is the same; the graph's float dtype is not
    exp = Backtrace(model).explain(ids, target=0)
    assert exp.output.dtype == torch.float64 and len(exports) > first


def test_the_shared_cache_does_not_keep_models_alive() -> None:
    model = nn.Sequential(nn.Linear(5, 3)).double()
    Backtrace(model).explain(torch.randn(2, 5, dtype=torch.double), target=0)
    assert len(capture_cache.captures_of(model)) == 1
    assert model in capture_cache._SHARED
    alive = weakref.ref(model)
    entries = len(capture_cache._SHARED)
    del model
    gc.collect()
    assert alive() is None  # its captures (the cache's values) do not hold it
    assert len(capture_cache._SHARED) <= entries - 1  # (other dead models may go too)


def test_forget_captures_drops_them_for_every_backtrace(exports) -> None:
    model = nn.Sequential(nn.Linear(5, 3)).double()
    x = torch.randn(2, 5, dtype=torch.double)
    bt = Backtrace(model)
    bt.explain(x, target=0)
    bt.forget_captures()
    assert capture_cache.captures_of(model) == [] and len(bt._cache) == 0
    Backtrace(model).explain(x, target=0)
    assert len(exports) == 2


def test_inputs_the_model_rejects_get_its_message_with_a_shared_capture() -> None:
    """A BERT with 128 positions: a dynamic capture admits a longer text, the model does not."""
    from dlbacktrace import InputError

    model = _bert()
    bt = Backtrace(model)
    bt.explain(**_text(2, 8))
    with pytest.raises(InputError, match="the model failed on the given inputs"):
        bt.explain(**_text(2, 200))
