"""Affine nodes without dead outputs skip the dead-output bookkeeping (issue 15).

Before the sweep, one batched check finds the affine nodes whose recorded outputs are all clear
of zero (``|y| ≥ LIVE_MARGIN·tiny``): since ``D = Σ|z| + |b| ≥ |y|``, none of their outputs
can have nothing to share, so their default-mode shares are ``R ⊘ D`` directly. That must give
the same explanation, bit for bit, as checking every output in the rule; an output with
``D = 0`` must still be absorbed whole; and should a node be taken for live wrongly (a
convolution algorithm whose rounding is not bounded by ``Σ|z|``), the explanation is computed
again with every output checked.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import dlbacktrace.engine.backtrace as backtrace_module
import dlbacktrace.engine.sweep as sweep_module
from dlbacktrace import Backtrace

try:
    import arch_models
    import test_rules_hand as hand
except ImportError:  # tests/ imported as a package
    from tests import arch_models
    from tests.engine import test_rules_hand as hand


@pytest.fixture
def sweeps(monkeypatch):
    """Each sweep's ``live_outputs`` argument and its number of live nodes."""
    runs: list[tuple[bool, int]] = []
    original = backtrace_module.sweep

    def recorded(*args, live_outputs=True, **kwargs):
        result = original(*args, live_outputs=live_outputs, **kwargs)
        runs.append((live_outputs, result.live_nodes))
        return result

    monkeypatch.setattr(backtrace_module, "sweep", recorded)
    return runs


def _checked_everywhere(monkeypatch, bt: Backtrace, *args, **kwargs):
    """The same explanation with every output checked in the rules."""
    original = backtrace_module.sweep
    with monkeypatch.context() as patch:
        patch.setattr(backtrace_module, "sweep",
                      lambda *a, **k: original(*a, **{**k, "live_outputs": False}))
        return bt.explain(*args, **kwargs)


def test_live_linear_by_hand(sweeps):
    """y = W·x + b with every |y| > 0: shares |w_ji·x_i|/(Σ_i|w_ji·x_i| + |b_j|)."""
    W, b, x = [[1.0, -2.0], [0.5, 3.0]], [0.5, -1.0], [2.0, 1.0]
    model = nn.Sequential(hand.linear(W, b)).eval()
    seed = [0.25, 0.75]
    exp = Backtrace(model).explain(hand.t([x]), seed=hand.t([seed]))
    # output 0: |z| = (2, 2), |b| = 0.5, D = 4.5; output 1: |z| = (1, 3), |b| = 1, D = 5
    want = [0.25 * 2 / 4.5 + 0.75 * 1 / 5, 0.25 * 2 / 4.5 + 0.75 * 3 / 5]
    hand.close(exp.relevance, [want], "relevance")
    assert abs(hand.absorbed_sum(exp) - (0.25 * 0.5 / 4.5 + 0.75 * 1 / 5)) < hand.TOL
    hand.conserved(exp, 1.0)
    assert sweeps == [(True, 1)]


def test_dead_output_is_not_live_and_is_absorbed(sweeps):
    """An output with D = 0 (a zero input under a bias-free layer) keeps the checked form."""
    W, x = [[1.0, 2.0], [0.0, 3.0]], [1.0, 0.0]
    model = nn.Sequential(hand.linear(W)).eval()
    exp = Backtrace(model).explain(hand.t([x]), seed=hand.t([[0.4, 0.6]]))
    # output 0: z = (1, 0), all of its 0.4 to x_0; output 1: z = (0, 0), its 0.6 absorbed
    hand.close(exp.relevance, [[0.4, 0.0]], "relevance")
    assert abs(hand.absorbed_sum(exp) - 0.6) < hand.TOL
    assert sweeps == [(True, 0)]


def _cnn_bn():
    torch.manual_seed(0)
    cnn = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4),
    )
    arch_models.randomize_batchnorm(cnn)
    return cnn.eval(), (torch.randn(2, 3, 8, 8),), {}


def _mlp_gelu_layernorm():
    torch.manual_seed(0)
    mlp = nn.Sequential(nn.Linear(12, 32), nn.GELU(), nn.Linear(32, 16), nn.LayerNorm(16),
                        nn.Linear(16, 3))
    return mlp.eval(), (torch.randn(3, 12),), {}


def _zoo(name):
    def build():
        case = arch_models.BUILDERS[name](torch.float32)
        return case.model, case.args, case.kwargs
    return build


MODELS = {
    "cnn_bn": _cnn_bn,
    "mlp_gelu_layernorm": _mlp_gelu_layernorm,
    "residual_cnn": _zoo("cnn"),  # conv-BN-ReLU, a skip add, mean pooling
    "bert_sdpa": _zoo("bert_sdpa"),  # embeddings, layer norms, attention, GELU
}


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_explanation_as_checking_every_output(name, dtype, sweeps, monkeypatch):
    model, args, kwargs = MODELS[name]()
    model = model.to(dtype)
    args = tuple(a.to(dtype) if a.is_floating_point() else a for a in args)
    bt = Backtrace(model)
    for targets in ({"target": 1}, {"targets": [0, 2]}):
        fast = bt.explain(*args, **targets, **kwargs)
        checked = _checked_everywhere(monkeypatch, bt, *args, **targets, **kwargs)
        for got, want in zip(fast.relevance_by_name.values(),
                             checked.relevance_by_name.values(), strict=True):
            assert torch.equal(got, want)
        assert fast.absorbed == checked.absorbed
        assert torch.equal(fast.absorbed_rows, checked.absorbed_rows)
    assert sweeps[0][0] and sweeps[0][1] > 0, "the live form never ran"


def test_contrast_mode_checks_nothing(sweeps):
    model, args, _ = _cnn_bn()
    Backtrace(model, mode="contrast").explain(*args, target=0)
    assert sweeps == [(True, 0)]


def test_a_node_taken_for_live_wrongly_is_explained_again(sweeps, monkeypatch):
    """Every affine node forced live, a dead one among them: NaN shares, so the explanation is
    computed again with every output checked, and equals the checked one."""
    W, x = [[1.0, 2.0], [0.0, 3.0]], [1.0, 0.0]
    model = nn.Sequential(hand.linear(W), nn.ReLU(), hand.linear([[1.0, 1.0]])).eval()
    original = sweep_module.pre_sweep

    def everything_live(g, env, relevant, live_outputs):
        checks = original(g, env, relevant, live_outputs)
        if live_outputs:
            for node in relevant:
                if node.op == "call_function" and "linear" in str(node.target):
                    checks.live[node] = sweep_module._checked_output(g, env, node)
        return checks

    monkeypatch.setattr(sweep_module, "pre_sweep", everything_live)
    exp = Backtrace(model).explain(hand.t([x]))
    assert [live for live, _ in sweeps] == [True, False]
    assert sweeps[0][1] == 2
    # y = (1, 0) after the first layer; the output 1 is all x_0's
    hand.close(exp.relevance, [[1.0, 0.0]], "relevance")
    hand.conserved(exp, 1.0)
