"""Every bridge has one shape: a torch module, an input adapter and input names.

A new framework needs only a :class:`Bridge`; :class:`BridgedBacktrace` adapts its inputs,
explains, names the relevance after its inputs and translates unsupported-op errors.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dlbacktrace import Backtrace, InputError, UnsupportedOperationError
from dlbacktrace.bridges.base import Bridge, BridgedBacktrace


class ColumnsBridge(Bridge):
    """A toy framework whose inputs are dicts of named feature columns (Python lists)."""

    def __init__(self, module: nn.Module, columns: list[str]) -> None:
        self.module = module
        self.columns = columns
        self.input_names = ["table"]
        self.translated: list[str] = []

    def adapt(self, inputs):
        (table,) = inputs
        if set(table) != set(self.columns):
            raise InputError(f"columns must be {self.columns}")
        return (torch.tensor([table[c] for c in self.columns], dtype=torch.float64).T,)

    def translate(self, exc):
        self.translated.append(str(exc))
        return InputError(f"the toy framework cannot explain this model: {exc}")


class Cumprod(nn.Module):
    def forward(self, x):
        return torch.cumprod(x, dim=1)


def test_a_new_bridge_is_adapted_explained_and_named() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 2)).double()
    bridged = BridgedBacktrace(ColumnsBridge(model, ["a", "b"]))
    table = {"b": [1.0, -2.0], "a": [0.5, 3.0]}
    exp = bridged.explain(table, target=1)
    x = torch.tensor([[0.5, 1.0], [3.0, -2.0]], dtype=torch.float64)
    direct = Backtrace(model).explain(x, target=1)
    assert torch.equal(exp.relevance, direct.relevance)
    assert exp.input_names == ["table"] and list(exp.total_by_name) == ["table"]
    assert torch.equal(bridged.predict(table), model(x).detach())
    with pytest.raises(InputError, match="columns must be"):
        bridged.explain({"a": [1.0]})


def test_unsupported_ops_are_translated_by_the_bridge() -> None:
    bridge = ColumnsBridge(Cumprod(), ["a", "b"])
    with pytest.raises(InputError, match="toy framework") as info:
        BridgedBacktrace(bridge).explain({"a": [1.0], "b": [2.0]}, target=0)
    assert isinstance(info.value.__cause__, UnsupportedOperationError)
    assert bridge.translated and "cumprod" in bridge.translated[0]
