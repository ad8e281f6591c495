"""Every registered Method declares its traits consistently with what it computes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlbacktrace import Backtrace
from dlbacktrace.evaluation.baselines import METHODS, MapMethod, MethodError, explain
from dlbacktrace.evaluation.registry import Registry
from dlbacktrace.examples.demo import DigitsCNN

pytest.importorskip("captum")


@pytest.fixture(scope="module")
def linear():
    """Class 0 is w·x with w = (1, -2, 3, 0.5, 0) and x = (1, 2, 1, 4, 3): the contributions
    w·x = (1, -4, 3, 2, 0), so feature 1 is evidence against the class."""
    model = nn.Sequential(nn.Linear(5, 2)).eval()
    with torch.no_grad():
        model[0].weight.copy_(torch.tensor([[1.0, -2.0, 3.0, 0.5, 0.0], [0.0, 1.0, 0, 0, 1.0]]))
        model[0].bias.zero_()
    return model, torch.tensor([[1.0, 2.0, 1.0, 4.0, 3.0]])


@pytest.fixture(scope="module")
def mlp():
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    return model, torch.randn(4, 6, generator=torch.Generator().manual_seed(1))


def _options(name: str, model: nn.Module, bt: Backtrace) -> dict:
    if METHODS[name].has_ledger:
        return {"backtrace": bt}
    return {"n_samples": 60} if name in ("lime", "kernel-shap") else {}


def test_signed_methods_show_the_negative_evidence_and_unsigned_ones_are_non_negative(linear):
    model, x = linear
    bt = Backtrace(model)
    checked = set()
    for name, method in METHODS.items():
        if not method.applies_to(model, x):
            continue
        exp = explain(model, x, name, target=0, **_options(name, model, bt))
        rel = exp.relevance
        assert exp.mode == ("contrast" if method.signed else "default"), name
        if method.signed:
            assert float(rel[0, 1]) < 0, name  # w₁x₁ = -4
            assert float(rel[0, 2]) > 0, name  # w₂x₂ = +3
        else:
            assert bool((rel >= 0).all()), name
        checked.add(name)
    assert {"dlb-contrast", "input-x-gradient", "integrated-gradients", "deeplift", "lime",
            "kernel-shap", "lrp-epsilon"} <= checked  # fmt: skip
    assert {"grad-cam", "attention-rollout"}.isdisjoint(checked)  # no conv, no tokens


def test_non_sampling_methods_are_bit_identical_and_sampling_ones_follow_the_seed(mlp):
    model, x = mlp
    bt = Backtrace(model)
    for name, method in METHODS.items():
        if not method.applies_to(model, x):
            continue
        opts = _options(name, model, bt)
        first = explain(model, x, name, **opts).relevance
        if method.sampling:
            again = explain(model, x, name, seed=3, **opts).relevance
            assert torch.equal(again, explain(model, x, name, seed=3, **opts).relevance), name
            assert not torch.equal(again, first), name  # seed 3 is not the default seed 0
        else:
            assert torch.equal(first, explain(model, x, name, **opts).relevance), name


def test_ledger_methods_conserve_and_the_others_absorb_nothing(mlp):
    model, x = mlp
    bt = Backtrace(model)
    for name, method in METHODS.items():
        if not method.applies_to(model, x) or method.sampling:
            continue
        exp = explain(model, x, name, **_options(name, model, bt))
        if method.has_ledger:
            assert exp.conservation_error < 1e-5, name
            assert method.captures_graph, name
        else:
            assert exp.absorbed == {}, name


def test_applies_to_follows_the_kind_of_input_and_model(mlp):
    model, x = mlp
    with torch.random.fork_rng():
        torch.manual_seed(0)
        cnn = DigitsCNN().eval()
    images = torch.rand(1, 1, 8, 8)
    tokens = {"input_ids": torch.ones(1, 3, dtype=torch.long)}
    assert METHODS["grad-cam"].applies_to(cnn, images)
    assert not METHODS["grad-cam"].applies_to(model, x)
    assert METHODS["attention-rollout"].applies_to(model, tokens)
    assert not METHODS["attention-rollout"].applies_to(model, x)
    assert not METHODS["lrp-epsilon"].applies_to(model, tokens)
    assert all(METHODS[n].requires for n in ("grad-cam", "attention-rollout", "lrp-epsilon"))


def _input_map(prep, target, **options):
    return prep.x.clone()


def test_a_registered_user_method_is_explainable_by_name(mlp):
    model, x = mlp
    method = MapMethod(name="test-input", signed=True, map_fn=_input_map)
    with pytest.raises(MethodError, match="unknown method"):
        explain(model, x, "test-input")
    assert torch.equal(explain(model, x, method).relevance, x)  # an unregistered object works
    METHODS.register(method)
    try:
        exp = explain(model, x, "test-input")
        assert exp.mode == "contrast" and torch.equal(exp.relevance, x)
        assert torch.equal(exp.positive - exp.negative, x)
    finally:
        METHODS.unregister("test-input")
    assert "test-input" not in METHODS


def test_registry_refuses_silent_shadowing():
    reg: Registry = Registry("thing")
    first = MapMethod(name="a", signed=False, map_fn=_input_map)
    reg.register(first)
    with pytest.raises(ValueError, match="already registered"):
        reg.register(MapMethod(name="a", signed=True, map_fn=_input_map))
    second = reg.register(MapMethod(name="a", signed=True, map_fn=_input_map), replace=True)
    assert reg["a"] is second and list(reg) == ["a"]
    with pytest.raises(KeyError, match="unknown thing 'b'"):
        reg["b"]
