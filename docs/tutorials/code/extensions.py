"""Architecture page: one working example of each extension point."""

# ruff: noqa: E402  (each section imports what it introduces, as the page shows it)

# --8<-- [start:rule]
import torch
from torch import nn

import dlbacktrace
from dlbacktrace import Backtrace, UnsupportedOperationError
from dlbacktrace.engine.rules import movement


@torch.library.custom_op("mylib::squash", mutates_args=())
def squash(x: torch.Tensor) -> torch.Tensor:
    """x / (1 + |x|): an elementwise activation torch.export keeps as one op."""
    return x / (1 + x.abs())


@squash.register_fake
def _(x):
    return torch.empty_like(x)


class Squashed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return squash(self.linear(x))


model, x = Squashed(), torch.randn(2, 4)
try:
    Backtrace(model).explain(x)
except UnsupportedOperationError as err:       # names the op, the node and the source line
    print(type(err).__name__)
# Elementwise ops pass relevance unchanged (DESIGN 2.3); movement.identity does exactly that.
dlbacktrace.register_rule(torch.ops.mylib.squash, movement.identity, family="elementwise")
exp = Backtrace(model).explain(x)
print(exp.conservation_error)                 # the ledger balances with the user's op too
# --8<-- [end:rule]
assert exp.conservation_error < 1e-5

# --8<-- [start:method]
from dlbacktrace.evaluation.baselines import METHODS, MapMethod, explain


def gradient_sign(prepared, target, **options):
    """sign(∂ logit / ∂ x): a toy signed map, shaped like prepared.x."""
    x = prepared.x.detach().requires_grad_(True)
    logits = prepared.forward(x, *prepared.extra)
    picked = logits.gather(1, target.view(-1, 1)).sum()
    (grad,) = torch.autograd.grad(picked, x)
    return grad.sign()


METHODS.register(MapMethod(name="gradient-sign", signed=True, map_fn=gradient_sign))
mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3))
mine = explain(mlp, x, method="gradient-sign")   # the benchmark now runs it too
print(mine.mode, mine.relevance.shape)             # contrast torch.Size([2, 4])
# --8<-- [end:method]
assert mine.relevance.shape == x.shape

# --8<-- [start:metric]
from dlbacktrace.evaluation import metrics as M
from dlbacktrace.evaluation.metrics import METRICS, Category, Metric

METRICS.register(Metric(
    name="mean-abs-attribution", higher_is_better=False, category=Category.COMPLEXITY,
    score=lambda ctx: ctx.attributions.abs().flatten(1).mean(1).double(),
))
ctx = M.EvaluationContext(model=mlp, inputs=x, targets=mine.target,
                          attributions=mine.relevance, method=METHODS["gradient-sign"],
                          forward=mlp)
print(M.evaluate(ctx)["mean-abs-attribution"])     # every evaluation now reports it
# --8<-- [end:metric]

# --8<-- [start:kind]
from pathlib import Path

import numpy as np

from dlbacktrace.io.batch import InputBatch
from dlbacktrace.io.inputs import read_input
from dlbacktrace.io.kinds import InputKind, register_kind


class WhitespaceTableKind(InputKind):
    """Rows of numbers separated by spaces, one row per line (``.ssv``)."""

    name = "ssv"
    suffixes = (".ssv",)

    def from_file(self, path, loaded=None, options=None):
        rows = np.loadtxt(path, dtype=np.float32, ndmin=2)
        return InputBatch(kind=self.name, args=(torch.from_numpy(rows),),
                          names=[f"row {i}" for i in range(len(rows))], display=rows)


register_kind(WhitespaceTableKind())           # the CLI, the server and reports now read .ssv
Path("rows.ssv").write_text("0.1 0.2 0.3 0.4\n1 2 3 4\n")
batch = read_input("rows.ssv")
print(batch.kind, batch.args[0].shape)         # ssv torch.Size([2, 4])
# --8<-- [end:kind]
assert batch.args[0].shape == (2, 4)

# --8<-- [start:bridge]
from dlbacktrace.bridges.base import Bridge, BridgedBacktrace


class NumpyLinearBridge(Bridge):
    """A "foreign" model given as NumPy weights, explained as an nn.Linear."""

    def __init__(self, weight: np.ndarray, bias: np.ndarray) -> None:
        self.module = nn.Linear(weight.shape[1], weight.shape[0]).double()
        with torch.no_grad():
            self.module.weight.copy_(torch.from_numpy(weight))
            self.module.bias.copy_(torch.from_numpy(bias))
        self.input_names = ["features"]

    def adapt(self, inputs):
        return tuple(torch.as_tensor(np.asarray(a), dtype=torch.float64) for a in inputs)


rng = np.random.default_rng(0)
bb = BridgedBacktrace(NumpyLinearBridge(rng.normal(size=(3, 4)), rng.normal(size=3)))
bridged = bb.explain(rng.normal(size=(2, 4)))
print(bridged.input_names, bridged.relevance.shape)   # ['features'] torch.Size([2, 4])
# --8<-- [end:bridge]
