"""Public API behaviour: seeds and targets, outputs, layers, storage, Captum shape."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from dlbacktrace import Backtrace, Explanation, TargetError, explain


def _mlp(out: int = 3) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 7), nn.ReLU(), nn.Linear(7, out)).double()


class TwoHeads(nn.Module):
    """Returns a dict, to check output selection."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(4, 6)
        self.a = nn.Linear(6, 3)
        self.b = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        h = torch.relu(self.body(x))
        return {"logits": self.a(h), "aux": self.b(h)}


def test_default_target_is_argmax_per_row():
    model = _mlp()
    x = torch.randn(4, 5, dtype=torch.double)
    exp = Backtrace(model).explain(x)
    assert torch.equal(exp.target, model(x).argmax(-1))
    assert exp.seed.sum().item() == pytest.approx(4.0)
    assert torch.equal(exp.seed.argmax(-1), exp.target)


def test_scale_multiplies_relevance():
    model = _mlp()
    x = torch.randn(2, 5, dtype=torch.double)
    bt = Backtrace(model)
    one = bt.explain(x, target=1)
    three = bt.explain(x, target=1, scale=3.0)
    torch.testing.assert_close(three.relevance, 3 * one.relevance)


def test_per_row_targets_match_single_targets():
    model = _mlp()
    x = torch.randn(3, 5, dtype=torch.double)
    bt = Backtrace(model)
    both = bt.explain(x, target=[0, 2, 1])
    for row, t in enumerate([0, 2, 1]):
        alone = bt.explain(x, target=t)
        torch.testing.assert_close(both.relevance[row], alone.relevance[row])


def test_custom_seed_equals_target_seed():
    model = _mlp()
    x = torch.randn(2, 5, dtype=torch.double)
    bt = Backtrace(model)
    seed = torch.zeros(2, 3, dtype=torch.double)
    seed[:, 2] = 1.0
    by_seed = bt.explain(x, seed=seed).relevance
    torch.testing.assert_close(by_seed, bt.explain(x, target=2).relevance)
    with pytest.raises(TargetError):
        bt.explain(x, seed=torch.zeros(2, 4))
    with pytest.raises(TargetError):
        bt.explain(x, seed=seed, target=1)


def test_single_logit_negative_target_swaps_contrast_maps():
    model = _mlp(out=1)
    x = torch.randn(3, 5, dtype=torch.double)
    bt = Backtrace(model, mode="contrast")
    pos = bt.explain(x, target="positive")
    neg = bt.explain(x, target="negative")
    torch.testing.assert_close(pos.positive, neg.negative)
    torch.testing.assert_close(pos.negative, neg.positive)
    torch.testing.assert_close(pos.total, neg.total)
    with pytest.raises(TargetError):
        bt.explain(x, target="maybe")


def test_output_selection_by_key():
    torch.manual_seed(1)
    model = TwoHeads().double()
    x = torch.randn(2, 4, dtype=torch.double)
    bt = Backtrace(model)
    logits = bt.explain(x)
    aux = bt.explain(x, output="aux")
    assert logits.output.shape == (2, 3) and aux.output.shape == (2, 2)
    assert aux.conservation_error < 1e-12
    with pytest.raises(TargetError):
        bt.explain(x, output="missing")


def test_sequence_output_explains_last_position_by_default():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 5)).double()
    x = torch.randn(2, 3, 4, dtype=torch.double)
    exp = Backtrace(model).explain(x, target=4)
    # Position-wise model: only the last position's features can carry relevance.
    assert exp.relevance[:, :2].abs().sum() == 0
    assert exp.relevance[:, 2].abs().sum() > 0
    first = Backtrace(model).explain(x, target=4, position=0)
    assert first.relevance[:, 1:].abs().sum() == 0


def test_layers_hold_relevance_of_module_outputs():
    model = _mlp()
    x = torch.randn(2, 5, dtype=torch.double)
    exp = Backtrace(model).explain(x, layers=["0", "1"])
    assert set(exp.layers) == {"0", "1"}
    # Relevance entering the ReLU's output equals what its input (Linear 0's output) receives.
    torch.testing.assert_close(exp.layers["0"], exp.layers["1"])
    # Linear 2 has no bias share from the relu outputs beyond its own: ledger accounts for it.
    absorbed_last = exp.absorbed.get("linear_1", 0.0)
    total_seed = float(exp.seed.abs().sum())
    assert float(exp.layers["1"].sum()) == pytest.approx(total_seed - absorbed_last, rel=1e-12)
    with pytest.raises(KeyError):
        Backtrace(model).explain(x, layers=["nope"])


def test_save_load_roundtrip(tmp_path):
    model = _mlp()
    x = torch.randn(2, 5, dtype=torch.double)
    exp = Backtrace(model, mode="contrast").explain(x, target=1, layers="all")
    path = exp.save(tmp_path / "exp")
    assert path.suffix == ".npz"
    back = Explanation.load(path)
    assert back.mode == "contrast"
    torch.testing.assert_close(back.relevance, exp.relevance)
    torch.testing.assert_close(back.positive, exp.positive)
    torch.testing.assert_close(back.negative, exp.negative)
    assert back.absorbed == exp.absorbed
    assert back.conservation_error == pytest.approx(exp.conservation_error, abs=1e-15)
    assert set(back.layers) == set(exp.layers)
    assert torch.equal(back.target, exp.target)


def test_attribute_is_captum_shaped_and_explain_function_matches():
    model = _mlp()
    x = torch.randn(2, 5, dtype=torch.double)
    attr = Backtrace(model).attribute(x, target=0)
    assert isinstance(attr, torch.Tensor) and attr.shape == x.shape
    torch.testing.assert_close(attr, explain(model, x, target=0).relevance)
    net = Backtrace(model).attribute(x, target=0, mode="contrast")
    exp = Backtrace(model, mode="contrast").explain(x, target=0)
    torch.testing.assert_close(net, exp.positive - exp.negative)


def test_several_inputs_give_a_tuple():
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Linear(3, 4)
            self.b = nn.Linear(2, 4)
            self.head = nn.Linear(4, 2)

        def forward(self, x, y):
            return self.head(torch.relu(self.a(x) + self.b(y)))

    torch.manual_seed(3)
    model = Two().double()
    x, y = torch.randn(2, 3, dtype=torch.double), torch.randn(2, 2, dtype=torch.double)
    exp = Backtrace(model).explain(x, y)
    assert isinstance(exp.relevance, tuple) and len(exp.relevance) == 2
    assert exp.relevance[0].shape == x.shape and exp.relevance[1].shape == y.shape
    assert exp.conservation_error < 1e-12
    attr = Backtrace(model).attribute((x, y))
    assert isinstance(attr, tuple) and attr[1].shape == y.shape


def test_capture_is_cached_per_signature():
    model = _mlp()
    bt = Backtrace(model)
    g1 = bt.capture(torch.randn(2, 5, dtype=torch.double))
    g2 = bt.capture(torch.randn(2, 5, dtype=torch.double))
    # the batch size is a dynamic dimension (one capture); the rank is part of the signature
    g3 = bt.capture(torch.randn(3, 2, 5, dtype=torch.double))
    assert g1 is g2 and g3 is not g1


def test_weights_updated_after_capture_are_used():
    model = _mlp()
    x = torch.randn(2, 5, dtype=torch.double)
    bt = Backtrace(model)
    before = bt.explain(x, target=0).relevance
    with torch.no_grad():
        model[0].weight.mul_(-1.5)
    after = bt.explain(x, target=0).relevance
    torch.testing.assert_close(after, Backtrace(model).explain(x, target=0).relevance)
    assert not torch.allclose(before, after)


def test_bad_mode_and_attention_are_rejected():
    with pytest.raises(ValueError):
        Backtrace(_mlp(), mode="fancy")
    with pytest.raises(ValueError):
        Backtrace(_mlp(), attention="both")
    with pytest.raises(TypeError):
        Backtrace(lambda x: x)


def test_non_finite_model_output_fails_fast():
    class Log(nn.Module):
        def forward(self, x):
            return torch.log(x)

    from dlbacktrace import InputError

    with pytest.raises(InputError, match="NaN or Inf"):
        Backtrace(Log()).explain(torch.tensor([[1.0, -1.0]]), target=0)


def test_abs_weight_cache_changes_nothing():
    model = _mlp()
    x = torch.randn(3, 5, dtype=torch.double)
    cached = Backtrace(model, mode="contrast")
    plain = Backtrace(model, mode="contrast", cache_abs_weights=False)
    for _ in range(2):  # second call hits the cache
        a, b = cached.explain(x, target=1), plain.explain(x, target=1)
        assert torch.equal(a.positive, b.positive) and torch.equal(a.negative, b.negative)


def test_ledger_that_does_not_balance_is_an_error():
    """DESIGN.md 2.4: Σ|z| overflows float32 (3e38 + 3e38) while the output does not; the
    default-mode shares vanish and the explanation is refused, never returned."""
    from dlbacktrace import ConservationError

    model = torch.nn.Sequential(torch.nn.Linear(2, 1))
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, 1.0]]))
        model[0].bias.fill_(0.5)
    x = torch.tensor([[3e38, -3e38]])
    with pytest.raises(ConservationError, match="does not balance"):
        Backtrace(model).explain(x)
    ok = Backtrace(model.double()).explain(x.double())  # float64 does not overflow
    assert ok.conservation_error < 1e-12


def test_buffers_updated_in_forward_are_restored():
    """DESIGN.md 4: the first call's plain forward (and the export) must not write buffers."""

    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(3, 2)
            self.register_buffer("calls", torch.zeros(()))
            self.register_buffer("running", torch.zeros(3))

        def forward(self, x):
            self.calls += 1
            self.running.mul_(0.9).add_(0.1 * x.detach().mean(0))
            return self.lin(x)

    model = Counting()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(4, 3)
    for mode in ("default", "contrast"):
        exp = Backtrace(model).explain(x, mode=mode)
        assert exp.conservation_error < 1e-5
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f"buffer or parameter {name} was written"


@pytest.mark.parametrize("kind", ["fft", "bucketize", "embedding_bag"])
def test_output_cut_off_by_an_op_names_the_op(kind):
    """Issue 13 item 6: an output that depends on the input through an op that yields no float
    data is an UnsupportedOperationError naming that op, not "does not depend on any input"."""
    from dlbacktrace import UnsupportedOperationError

    class Cut(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = nn.Embedding(8, 3)
            self.bag = nn.EmbeddingBag(8, 3, mode="sum")

        def forward(self, x):
            if kind == "fft":
                return torch.fft.rfft(x).abs()
            if kind == "bucketize":
                ids = torch.bucketize(x, torch.tensor([-1.0, 0.0, 1.0]))
                return self.emb(ids).sum(1)
            return self.bag(x)

    x = torch.randint(0, 8, (2, 4)) if kind == "embedding_bag" else torch.randn(2, 4)
    names = {"fft": "fft", "bucketize": "bucketize", "embedding_bag": "embedding_bag"}
    with pytest.raises(UnsupportedOperationError, match=names[kind]):
        Backtrace(Cut()).explain(x, seed=torch.ones_like(Cut()(x)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_half_precision_models_use_float32_arithmetic(dtype, mode):
    """DESIGN.md 4 / issue 13 item 7: half models are explained in float32, never refused with a
    raw dtype error, and conserve like float32 models; the model keeps its dtype."""
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.GELU(), nn.LayerNorm(16), nn.Linear(16, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    x = torch.randn(4, 6, generator=g)
    ref = Backtrace(model).explain(x, mode=mode)
    half = model.to(dtype)
    exp = Backtrace(half).explain(x.to(dtype), mode=mode)
    assert exp.relevance.dtype == torch.float32 and exp.conservation_error < 1e-5
    assert next(half.parameters()).dtype == dtype
    # the float32 re-run of the half weights is close to the float32 model's explanation
    scale = float(ref.relevance.abs().max())
    assert float((exp.relevance - ref.relevance).abs().max()) < 0.05 * scale


def test_overwrites_and_shape_only_constants():
    """``y[:, 1:3] = 0.5`` (copy into a slice), ``zeros_like`` buffers and
    ``where(x > 0, x, zeros_like(x))``: overwritten or constant elements absorb, the rest routes."""
    x = torch.tensor([[1.0, -2.0, 3.0, 4.0]], dtype=torch.float64)
    seed = torch.ones(1, 4, dtype=torch.float64)

    class Overwrite(nn.Module):
        def forward(self, x):
            y = x.clone()
            y[:, 1:3] = 0.5
            return y * 2

    class Into(nn.Module):
        def forward(self, x):
            y = torch.zeros_like(x)
            y[:, 1:3] = x[:, :2]
            return y

    class Relu(nn.Module):
        def forward(self, x):
            return torch.where(x > 0, x, torch.zeros_like(x))

    for model, want, absorbed in ((Overwrite(), [1.0, 0.0, 0.0, 1.0], 2.0),
                                  (Into(), [1.0, 1.0, 0.0, 0.0], 2.0),
                                  (Relu(), [1.0, 0.0, 1.0, 1.0], 1.0)):
        exp = Backtrace(model).explain(x, seed=seed)
        assert exp.relevance.tolist() == [want], type(model).__name__
        assert exp.total_absorbed == pytest.approx(absorbed)
