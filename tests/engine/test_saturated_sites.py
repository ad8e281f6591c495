"""A linear node's few saturated outputs corrected at their sites (DESIGN.md 2.1, issue 15).

The site form must give the saturated rule's values: the hand-computed saturation cases with
the sites forced on, and the full-size saturated form in float64 on MLPs whose GELU and tanh
outputs saturate here and there (both modes, several streams, with and without a bias).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import dlbacktrace.engine.rules.linear_ops as linear_ops
import dlbacktrace.engine.sweep as sweep_module
from dlbacktrace import Backtrace

try:
    import test_rules_hand as hand
except ImportError:  # tests/ imported as a package
    from tests.engine import test_rules_hand as hand

D64 = torch.float64


@pytest.fixture
def site_calls(monkeypatch):
    """Counts the calls of the site form (a test that never reaches it proves nothing)."""
    calls = {"n": 0}
    original = linear_ops.site_corrected_linear

    def counted(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(linear_ops, "site_corrected_linear", counted)
    return calls


# the cases whose output is saturated (the others never reach the site form)
SATURATED = [name for name in hand.SATURATION_CASES
             if name.endswith(("_high", "_low")) or name == "relu_inactive_output"]


@pytest.mark.parametrize("case", SATURATED)
def test_hand_saturation_cases_through_the_sites(case, site_calls, monkeypatch):
    """Every output a site (fraction 1): the hand numbers of test_rules_hand still hold."""
    monkeypatch.setattr(sweep_module, "SITE_FRACTION", 1.0)
    act, W, b, x, rho, absorbed, shares = hand.SATURATION_CASES[case]
    model = nn.Sequential(hand.linear(W, b), act).eval()
    x = hand.t([x])
    exp = hand.explain(model, x)
    hand.close(exp.relevance, [rho], "default relevance")
    assert abs(hand.absorbed_sum(exp) - absorbed) < hand.TOL
    hand.conserved(exp, 1.0)
    with torch.no_grad():
        y = float(model(x))
    exp_c = hand.explain(model, x, mode="contrast")
    hand.close(exp_c.relevance, y * hand.t([shares]), "signed", atol=1e-10)
    assert exp_c.conservation_error < 1e-10
    assert site_calls["n"] == 2


def _gelu_tanh_mlp(bias: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(16, 64, bias=bias), nn.GELU(), nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 5)
    ).to(D64).eval()
    with torch.no_grad():
        model[0].weight.mul_(4.0)  # a few pre-activations below GELU's bound of −6
    return model


def _both_forms(monkeypatch, model, x, **kwargs):
    forms = {}
    for name, fraction in (("sites", 0.5), ("full", -1.0)):
        monkeypatch.setattr(sweep_module, "SITE_FRACTION", fraction)
        forms[name] = Backtrace(model).explain(x, **kwargs)
    return forms["sites"], forms["full"]


@pytest.mark.parametrize("mode", ["default", "contrast"])
@pytest.mark.parametrize("bias", [True, False])
def test_sites_equal_the_full_saturated_form(mode, bias, site_calls, monkeypatch):
    model = _gelu_tanh_mlp(bias)
    x = torch.randn(24, 16, dtype=D64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        low = int((model[0](x) < -6).sum())
    assert 0 < low < 24 * 64 // 2  # sites, and not all of them
    sites, full = _both_forms(monkeypatch, model, x, target=2, mode=mode)
    assert site_calls["n"] >= 1
    torch.testing.assert_close(sites.relevance, full.relevance, rtol=0, atol=1e-13)
    assert set(sites.absorbed) == set(full.absorbed)
    for name, value in full.absorbed.items():
        assert abs(sites.absorbed[name] - value) < 1e-13, name
    torch.testing.assert_close(sites.absorbed_rows, full.absorbed_rows, rtol=0, atol=1e-13)
    assert sites.conservation_error < 1e-12
    assert float(sites.row_conservation_error.max()) < 1e-12


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_sites_with_several_targets(mode, site_calls, monkeypatch):
    model = _gelu_tanh_mlp(True)
    x = torch.randn(6, 16, dtype=D64, generator=torch.Generator().manual_seed(2))
    sites, full = _both_forms(monkeypatch, model, x, targets=[0, 3, 4], mode=mode)
    assert site_calls["n"] >= 1
    torch.testing.assert_close(sites.relevance, full.relevance, rtol=0, atol=1e-13)
    assert sites.conservation_error < 1e-12


def test_sites_float32_agree_and_repeat(site_calls, monkeypatch):
    """float32: the two forms agree to rounding; the site form repeats bit for bit."""
    model = _gelu_tanh_mlp(True).float()
    x = torch.randn(24, 16, generator=torch.Generator().manual_seed(1))
    sites, full = _both_forms(monkeypatch, model, x, target=1, mode="contrast")
    again = Backtrace(model).explain(x, target=1, mode="contrast")  # fraction still -1: full
    assert torch.equal(again.relevance, full.relevance)
    monkeypatch.setattr(sweep_module, "SITE_FRACTION", 0.5)
    repeat = Backtrace(model).explain(x, target=1, mode="contrast")
    assert torch.equal(repeat.relevance, sites.relevance)
    scale = float(full.relevance.abs().max())
    torch.testing.assert_close(sites.relevance, full.relevance, rtol=0, atol=1e-5 * scale)
    assert site_calls["n"] >= 2
