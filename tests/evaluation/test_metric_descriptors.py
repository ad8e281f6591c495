"""Metric descriptors and the evaluation context: declared traits, needs, shared results."""

from __future__ import annotations

import math

import pytest
import torch

from dlbacktrace.evaluation import metrics as M
from dlbacktrace.evaluation.baselines import METHODS

W = torch.tensor([3.0, -1.0, 2.0, 0.5], dtype=torch.float64)


class CountingForward:
    """Two logits, w·x and 0 (target 0's probability is sigmoid(w·x)); counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, x: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        logit = x.flatten(1) @ W.to(x.dtype)
        return torch.stack([logit, torch.zeros_like(logit)], 1)


def _context(**overrides) -> M.EvaluationContext:
    x = torch.ones(1, 4, dtype=torch.float64)
    fields = dict(model=torch.nn.Identity(), inputs=x, targets=torch.tensor([0]),
                  attributions=W[None] * x, forward=CountingForward(), steps=4)  # fmt: skip
    fields.update(overrides)
    return M.EvaluationContext(**fields)


def _sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


def test_every_registered_metric_describes_itself():
    assert len(M.METRICS) >= 20
    for name, metric in M.METRICS.items():
        assert metric.name == name
        assert isinstance(metric.higher_is_better, bool), name
        assert isinstance(metric.category, M.Category), name
        assert set(metric.needs) <= set(M.NEEDS), name
        assert metric.header
    assert M.higher_is_better()["abpc"] is True
    assert M.higher_is_better()["entropy"] is False
    assert M.METRICS["max_sensitivity"].category is M.Category.ROBUSTNESS
    assert M.METRICS["randomisation_similarity"].category is M.Category.RANDOMISATION
    assert M.METRICS["peak_memory_mb"].category is M.Category.COST


def test_deletion_metrics_read_one_shared_curve_computation():
    ctx = _context()
    # MoRF logits 4.5, 1.5, -0.5, -1, 0 (removing 3, 2, 0.5, -1); probabilities are sigmoids
    morf = [_sigmoid(v) for v in (4.5, 1.5, -0.5, -1.0, 0.0)]
    lerf = [_sigmoid(v) for v in (4.5, 5.5, 5.0, 3.0, 0.0)]
    area = lambda ys: 0.25 * (ys[0] / 2 + ys[1] + ys[2] + ys[3] + ys[4] / 2)  # noqa: E731
    deletion = M.METRICS["deletion_auc"](ctx)
    abpc = M.METRICS["abpc"](ctx)
    assert float(deletion[0]) == pytest.approx(area(morf), abs=1e-12)
    assert float(abpc[0]) == pytest.approx(area(lerf) - area(morf), abs=1e-12)
    calls = ctx.forward.calls
    M.METRICS["insertion_auc"](ctx)
    M.METRICS["lerf_auc"](ctx)
    assert ctx.forward.calls == calls  # all four areas come from one set of curves
    assert ctx.details["curves"]["morf"] == pytest.approx(morf, abs=1e-12)


def test_needs_decide_what_applies():
    ctx = _context(forward=None)
    assert M.METRICS["sparseness"].applies_to(ctx)  # complexity needs nothing but the maps
    assert M.METRICS["deletion_auc"].missing(ctx) == ["forward"]
    with pytest.raises(M.MetricError, match="needs forward"):
        M.METRICS["deletion_auc"](ctx)
    tokens = _context(inputs=torch.ones(1, 4, dtype=torch.long))
    assert not M.METRICS["infidelity"].applies_to(tokens)  # noise on token ids is meaningless
    assert M.METRICS["deletion_auc"].applies_to(tokens)
    # the ledger: only a method that keeps one, and only with its explanations
    assert not M.METRICS["conservation_error"].applies_to(_context(method=METHODS["dlb"]))
    with_ledger = _context(method=METHODS["dlb"], explanations=[object()])
    assert M.METRICS["conservation_error"].applies_to(with_ledger)
    assert not M.METRICS["completeness_error"].applies_to(with_ledger)
    ig = _context(method=METHODS["integrated-gradients"])
    assert M.METRICS["completeness_error"].applies_to(ig)
    assert not M.METRICS["run_variance"].applies_to(ig)  # not sampling (and no reruns)
    assert not M.METRICS["run_variance"].applies_to(
        _context(method=METHODS["lime"], explain_instances=None)
    )
    assert M.METRICS["run_variance"].applies_to(
        _context(method=METHODS["lime"], explain_instances=lambda count, **kw: None)
    )


def test_completeness_through_the_context_is_hand_computed():
    # map (1, 1, 1, 1): Σ = 4; f(x) - f(0) = 4.5 on the target logit -> |4 - 4.5| / 4.5
    ctx = _context(attributions=torch.ones(1, 4, dtype=torch.float64),
                   method=METHODS["input-x-gradient"])  # fmt: skip
    value = M.METRICS["completeness_error"](ctx)
    assert float(value[0]) == pytest.approx(0.5 / 4.5, abs=1e-12)


def test_a_metric_with_an_unknown_need_is_refused():
    with pytest.raises(M.MetricError, match="unknown"):
        M.Metric(name="bad", higher_is_better=True, category=M.Category.COMPLEXITY,
                 score=lambda ctx: ctx.attributions, needs=("telepathy",))  # fmt: skip


def test_curves_convert_to_numpy():
    c = M.curves(CountingForward(), torch.ones(1, 4, dtype=torch.float64),
                 W[None].clone(), torch.tensor([0]), steps=4, output="logit")  # fmt: skip
    arrays = c.numpy()
    assert arrays["morf"].tolist() == [[4.5, 1.5, -0.5, -1.0, 0.0]]
    assert arrays["fractions"].shape == (5,)
    assert arrays["abpc"].shape == (1,)
