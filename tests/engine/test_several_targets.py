"""Several targets of one input on one forward record (``targets=`` / ``seeds=``).

The record, the ``|x|, |w|`` forwards and the shares are computed once and each target is one
relevance stream. The oracle is batch invariance (DESIGN.md 2.4): explaining K targets equals
explaining the inputs repeated K times with one target per copy, on every architecture of the
zoo, in both modes; plus a hand-computed linear layer and the error messages.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

from dlbacktrace import Backtrace
from dlbacktrace.engine.errors import TargetError

try:
    import arch_models as am
except ImportError:  # tests/ imported as a package
    from tests import arch_models as am

REL = 1e-6  # float64: the streamed and the repeated sweep differ only in summation order
# Recurrent models run time-major: their absorbed amounts cannot be told apart by row.
TIME_MAJOR = {"lstm", "gru"}


def _repeated(case: am.Case, times: int) -> am.Case:
    def rep(t: torch.Tensor) -> torch.Tensor:
        return t.repeat(times, *[1] * (t.dim() - 1))

    return am.Case(model=case.model, args=tuple(rep(a) for a in case.args),
                   kwargs={k: rep(v) for k, v in case.kwargs.items()},
                   options=dict(case.options))


def _targets(case: am.Case) -> list[int]:
    if case.lm_target is not None:
        return [case.lm_target, (case.lm_target + 7) % am.VOCAB, 3]
    return [case.targets[0], case.targets[1], case.targets[2]]


def _close(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    assert a.shape == b.shape, what
    scale = max(a.abs().max().item(), b.abs().max().item(), 1e-300)
    assert (a - b).abs().max().item() <= REL * scale, what


@pytest.fixture(scope="module", params=sorted(am.FAST) + ["resnet18"] + sorted(am.HF)
                + [f"{name}-sdpa" for name in sorted(am.FAMILIES)])
def case(request) -> am.Case:
    if request.param.endswith("-sdpa"):
        return am.family(request.param.removesuffix("-sdpa"), "sdpa")
    return am.BUILDERS[request.param](torch.float64)


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_several_targets_equal_the_repeated_batch(case: am.Case, mode: str,
                                                  request: pytest.FixtureRequest) -> None:
    bt = Backtrace(case.model, mode=mode)
    one = case.row(0)
    targets = _targets(case)
    K = len(targets)
    streamed = bt.explain(*one.args, targets=targets, **one.kwargs, **one.options)
    repeated = bt.explain(*_repeated(one, K).args, target=torch.tensor(targets),
                          **_repeated(one, K).kwargs, **one.options)
    assert len(streamed) == K
    assert torch.equal(streamed.target, torch.tensor(targets))
    _close(streamed.seed, repeated.seed, "seed")  # contrast: the logit, from another batch
    _close(streamed.output, repeated.output, "output")
    for name in streamed.input_names:
        _close(streamed.relevance_by_name[name], repeated.relevance_by_name[name], name)
    if request.node.callspec.params["case"] in TIME_MAJOR:
        _close(streamed.absorbed_rows.sum(), repeated.absorbed_rows.sum(), "absorbed")
    else:
        _close(streamed.absorbed_rows, repeated.absorbed_rows, "absorbed per row")
        assert float(streamed.row_conservation_error.max()) <= 1e-5
    assert streamed.conservation_error <= 1e-5
    # each stream is the explanation of its target alone
    alone = bt.explain(*one.args, target=targets[1], **one.kwargs, **one.options)
    for name in streamed.input_names:
        _close(streamed[1].relevance_by_name[name], alone.relevance_by_name[name], name)


def test_rows_are_target_major_for_a_batch() -> None:
    case = am.mlp(torch.float64)
    bt = Backtrace(case.model)
    exp = bt.explain(*case.args, targets=[0, 2])
    B = case.args[0].shape[0]
    assert len(exp) == 2 * B
    for k, t in enumerate((0, 2)):
        alone = bt.explain(*case.args, target=t)
        _close(exp[k * B:(k + 1) * B].relevance, alone.relevance, f"target {t}")
    assert torch.equal(exp.inputs_by_name[exp.input_names[0]][B:], case.args[0])


def test_hand_computed_linear_layer() -> None:
    """y = W x with x = (1, 2), W = [[1, -1], [2, 1]]: z for output 0 is (1, -2), for 1 (2, 2)."""
    net = nn.Linear(2, 2, bias=False).double()
    with torch.no_grad():
        net.weight.copy_(torch.tensor([[1.0, -1.0], [2.0, 1.0]]))
    x = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    default = Backtrace(net).explain(x, targets=[0, 1])
    # default mode: |z| / Σ|z| of each output
    assert torch.allclose(default.relevance, torch.tensor([[1 / 3, 2 / 3], [0.5, 0.5]],
                                                          dtype=torch.float64))
    contrast = Backtrace(net, mode="contrast").explain(x, targets=[0, 1])
    # contrast: seed = logit (−1, 4), shares z / y: the contributions themselves
    assert torch.allclose(contrast.relevance, torch.tensor([[1.0, -2.0], [2.0, 2.0]],
                                                           dtype=torch.float64), atol=1e-9)
    seeds = torch.zeros(2, 1, 2, dtype=torch.float64)
    seeds[0, 0, 0] = 1.0
    seeds[1, 0, 1] = 2.0  # twice output 1
    custom = Backtrace(net).explain(x, seeds=seeds)
    assert custom.target is None
    assert torch.allclose(custom.relevance, torch.tensor([[1 / 3, 2 / 3], [1.0, 1.0]],
                                                         dtype=torch.float64))


def test_several_targets_errors() -> None:
    net = nn.Linear(3, 4)
    x = torch.randn(2, 3)
    bt = Backtrace(net)
    cases: list[tuple[dict[str, Any], str]] = [
        (dict(targets=[0, 1], target=0), "targets=/seeds= for several"),
        (dict(targets=[0], seeds=torch.zeros(1, 2, 4)), "not both"),
        (dict(targets=[]), "no target"),
        (dict(targets=3), "list of targets"),
        (dict(seeds=torch.zeros(2, 4)), "seeds must be shaped"),
        (dict(seeds=torch.full((1, 2, 4), float("nan"))), "NaN"),
        (dict(targets=[0, 9]), "out of range"),
    ]
    for kwargs, message in cases:
        with pytest.raises(TargetError, match=message):
            bt.explain(x, **kwargs)
