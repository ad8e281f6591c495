"""Bad input fails fast with a specific error, and nothing the user owns is modified.

NaN/Inf or wrongly shaped/typed inputs → ``InputError``; a target out of range →
``TargetError``; an op with no relevance rule on the relevance path → ``UnsupportedOperationError``
naming the ATen op and the user's source line; a model ``torch.export`` cannot capture →
``CaptureError``. Every model is put in training mode (with one frozen parameter) before the call,
and its training flags, ``requires_grad`` flags and parameter values must be bitwise the same
afterwards (DESIGN.md 4).
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable

import pytest
import torch
import torch.nn as nn

from dlbacktrace import (
    Backtrace,
    CaptureError,
    DLBacktraceError,
    InputError,
    TargetError,
    UnsupportedOperationError,
)


def make_mlp() -> nn.Sequential:
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    return model


class CumprodModel(nn.Module):
    """A Linear followed by ``torch.cumprod`` on the data: one ATen op with no relevance rule."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc(x)
        y = torch.cumprod(h, dim=-1)  # UNSUPPORTED-OP-LINE
        return y


class DataDependentModel(nn.Module):
    """Python control flow on a data value: ``torch.export`` cannot capture it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.sum() > 0:
            return self.fc(x)
        return -self.fc(x)


def _line_of(marker: str, obj: object) -> int:
    lines, start = inspect.getsourcelines(obj)
    for offset, line in enumerate(lines):
        if marker in line:
            return start + offset
    raise AssertionError(f"marker {marker!r} not found")


def _prepare(model: nn.Module) -> dict:
    """Training mode and one frozen parameter, then a bitwise snapshot."""
    model.train()
    first = next(iter(model.parameters()))
    first.requires_grad_(False)
    return {
        "training": [(n, m.training) for n, m in model.named_modules()],
        "requires_grad": [(n, p.requires_grad) for n, p in model.named_parameters()],
        "values": [(n, p.detach().clone()) for n, p in model.named_parameters()],
        "buffers": [(n, b.detach().clone()) for n, b in model.named_buffers()],
    }


def _assert_untouched(model: nn.Module, before: dict) -> None:
    assert model.training, "training flag not restored"
    assert [(n, m.training) for n, m in model.named_modules()] == before["training"]
    assert [(n, p.requires_grad) for n, p in model.named_parameters()] == before["requires_grad"]
    now = [(n, p.detach()) for n, p in model.named_parameters()]
    assert [n for n, _ in now] == [n for n, _ in before["values"]]
    for (name, v0), (_, v1) in zip(before["values"], now, strict=True):
        assert torch.equal(v0, v1), f"parameter {name} changed"
    for (name, b0), (_, b1) in zip(before["buffers"], model.named_buffers(), strict=True):
        assert torch.equal(b0, b1), f"buffer {name} changed"


def _expect(
    model: nn.Module,
    call: Callable[[Backtrace], object],
    error: type[DLBacktraceError],
) -> pytest.ExceptionInfo:
    before = _prepare(model)
    bt = Backtrace(model)
    with pytest.raises(error) as info:
        call(bt)
    _assert_untouched(model, before)
    return info


# ------------------------------------------------------------------------------------------
# InputError
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")], ids=str)
def test_non_finite_input(bad: float) -> None:
    x = torch.randn(2, 4)
    x[1, 2] = bad
    info = _expect(make_mlp(), lambda bt: bt.explain(x, target=0), InputError)
    assert re.search(r"nan|inf|finite", str(info.value), re.IGNORECASE), str(info.value)


def test_non_finite_input_second_call() -> None:
    """Also after a good call has captured the graph for the same signature."""
    model = make_mlp()
    bt = Backtrace(model)
    bt.explain(torch.randn(2, 4), target=0)
    before = _prepare(model)
    x = torch.randn(2, 4)
    x[0, 0] = float("nan")
    with pytest.raises(InputError):
        bt.explain(x, target=0)
    _assert_untouched(model, before)


def test_wrong_shape() -> None:
    x = torch.randn(2, 5)  # Linear(4, 8) expects 4 features
    info = _expect(make_mlp(), lambda bt: bt.explain(x, target=0), InputError)
    msg = str(info.value)
    assert re.search(r"shape", msg, re.IGNORECASE), msg
    assert re.search(r"2\s*[x×,]\s*5", msg), f"message does not show the input shape: {msg}"


def test_wrong_dtype() -> None:
    x = torch.randint(0, 5, (2, 4))  # int64 into a float32 MLP
    info = _expect(make_mlp(), lambda bt: bt.explain(x, target=0), InputError)
    assert re.search(r"int64|long|dtype", str(info.value), re.IGNORECASE), str(info.value)


# ------------------------------------------------------------------------------------------
# TargetError
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", [10, 3, -1, [0, 3], [0, -1]], ids=str)
def test_target_out_of_range(target: object) -> None:
    x = torch.randn(2, 4)
    _expect(make_mlp(), lambda bt: bt.explain(x, target=target), TargetError)


def test_target_out_of_range_attribute() -> None:
    x = torch.randn(2, 4)
    _expect(make_mlp(), lambda bt: bt.attribute(x, target=10), TargetError)


# ------------------------------------------------------------------------------------------
# UnsupportedOperationError and CaptureError
# ------------------------------------------------------------------------------------------


def test_unsupported_op_names_op_and_source_line() -> None:
    x = torch.randn(2, 4)
    info = _expect(CumprodModel(), lambda bt: bt.explain(x, target=0), UnsupportedOperationError)
    msg = str(info.value)
    assert "cumprod" in msg, f"message does not name the ATen op: {msg}"
    assert "test_bad_input.py" in msg, f"message does not name the source file: {msg}"
    line = _line_of("UNSUPPORTED-OP-LINE", CumprodModel.forward)
    assert str(line) in msg or "torch.cumprod(h, dim=-1)" in msg, (
        f"message does not show the source line {line}: {msg}"
    )


def test_unexportable_model() -> None:
    x = torch.randn(2, 4)
    info = _expect(DataDependentModel(), lambda bt: bt.explain(x, target=0), CaptureError)
    assert str(info.value), "empty CaptureError message"


def test_errors_are_library_errors() -> None:
    """All of the above derive from DLBacktraceError, so one except clause catches them."""
    for cls in (InputError, TargetError, UnsupportedOperationError, CaptureError):
        assert issubclass(cls, DLBacktraceError)
