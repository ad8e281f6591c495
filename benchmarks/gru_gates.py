"""GRU update gates: ``1 − z`` as a gate or as data, measured on a task with a known answer.

A GRU's new state is ``(1 − z) ⊙ n + z ⊙ h``. The gate rule (DESIGN.md 2.2) sends all of a
product's relevance to its non-gate operand. ``1 − z`` exports as ``rsub(z, 1)``, which capture
did not recognise as a gate until rule set 4, so ``(1 − z) ⊙ n`` was split 50/50 between the
gate and ``n`` as a product of two data tensors. This script explains a GRU trained on a
task whose answer sits at one position, with the gate recognised (rule set 4) and, for
comparison, as before (the old check restored for the run), and prints the faithfulness
metrics with standard errors on two independent instance sets.

Task: sequences of 16 tokens (fillers 4…15) with two or three markers from {1, 2, 3} at
random positions; the class is the first marker. Removal replaces a token with 0 (unused in
training). Metrics per instance set (n rows each): ABPC (LeRF − MoRF deletion areas, higher is
better), faithfulness correlation (Bhatt et al., 50 subsets of 10%) and the share of |relevance|
on the first marker (the answer's position). Run ``python benchmarks/gru_gates.py``; about a
minute on 2 CPU cores.
"""

from __future__ import annotations

import math
import sys

import torch
import torch.nn as nn

from dlbacktrace import Backtrace
from dlbacktrace.engine import capture
from dlbacktrace.engine.errors import ConservationError
from dlbacktrace.evaluation.metrics.faithfulness import curves, faithfulness_correlation

VOCAB, LENGTH, CLASSES = 16, 16, 3


def batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Token ids [n, LENGTH], labels [n] and the first marker's position [n]."""
    ids = torch.randint(4, VOCAB, (n, LENGTH), generator=gen)
    markers = torch.randint(2, 4, (n,), generator=gen)
    first = torch.empty(n, dtype=torch.long)
    labels = torch.empty(n, dtype=torch.long)
    for row in range(n):  # data generation only, not the explanation path
        places = torch.randperm(LENGTH, generator=gen)[: int(markers[row])].sort().values
        kinds = torch.randint(1, 4, (len(places),), generator=gen)
        ids[row, places] = kinds
        first[row], labels[row] = places[0], kinds[0] - 1
    return ids, labels, first


class GRUClassifier(nn.Module):
    """``nn.GRU`` (PyTorch decomposes its cell as ``n + z ⊙ (h − n)``: no ``1 − z``)."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.rnn = nn.GRU(16, 32, batch_first=True)
        self.fc = nn.Linear(32, CLASSES)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.emb(ids))
        return self.fc(h[:, -1])


class TextbookGRU(nn.Module):
    """The GRU cell as textbooks and much user code write it: ``h = (1 − z) ⊙ n + z ⊙ h``."""

    def __init__(self, hidden: int = 32) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, 16)
        self.inp = nn.Linear(16, 3 * hidden)
        self.rec = nn.Linear(hidden, 3 * hidden)
        self.fc = nn.Linear(hidden, CLASSES)
        self.hidden = hidden

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        h = x.new_zeros(x.shape[0], self.hidden)
        for step in range(x.shape[1]):
            xr, xz, xn = self.inp(x[:, step]).chunk(3, dim=-1)
            hr, hz, hn = self.rec(h).chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            n = torch.tanh(xn + r * hn)
            h = (1 - z) * n + z * h
        return self.fc(h)


def train(kind: type[nn.Module], seed: int = 0, steps: int = 600) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = kind()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        ids, labels, _ = batch(64, gen)
        loss = nn.functional.cross_entropy(model(ids), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ids, labels, _ = batch(1000, gen)
    with torch.no_grad():
        accuracy = float((model(ids).argmax(1) == labels).float().mean())
    return model, accuracy


def _old_keeps_gate(node, gates, data):
    """The check before rule set 4: the first operand was looked at before the complement."""
    spec = capture._spec(node)
    first = node.args[0] if node.args else None
    if not isinstance(first, capture.fx.Node) or first not in gates:
        return spec.is_complement(node) and any(i in gates for i in node.all_input_nodes)
    if node.target is capture.operator.getitem:
        return True
    passage = spec.gate_passage
    if passage == "constant":
        return not any(isinstance(a, capture.fx.Node) and a in data for a in node.args[1:])
    return passage == "any"


def explain(model: nn.Module, ids: torch.Tensor, mode: str, old: bool) -> torch.Tensor:
    current = capture._keeps_gate
    capture._keeps_gate = _old_keeps_gate if old else current
    try:
        bt = Backtrace(model, mode=mode)
        bt.forget_captures()  # the gates are marked at capture: no capture of the other rule
        with torch.no_grad():
            target = model(ids).argmax(1)
        maps = bt.attribute(ids, target=target.tolist())
    finally:
        capture._keeps_gate = current
    return maps.to(torch.float64)


def _mean_se(values: torch.Tensor) -> str:
    values = values[torch.isfinite(values)]
    se = float(values.std(unbiased=True)) / math.sqrt(len(values))
    return f"{float(values.mean()):.3f} ± {se:.3f}"


def main() -> None:
    print("# GRU update gates: `1 − z` as a gate (rule set 4) or as data (before)\n")
    print("Mean ± standard error over the rows of each instance set (n = 200 each).\n")
    for kind in (TextbookGRU, GRUClassifier):
        report(kind)


def report(kind: type[nn.Module]) -> None:
    model, accuracy = train(kind)
    print(f"## {kind.__name__}: {kind.__doc__.splitlines()[0]}\n")
    print(f"Hidden size 32, trained 600 steps; held-out accuracy {accuracy:.3f}.\n")
    print("| instance set | mode | `1 − z` | ABPC ↑ | faithfulness correlation ↑ | "
          "share of \\|R\\| on the answer ↑ |")
    print("|---|---|---|---|---|---|")
    for set_seed in (101, 202):
        ids, _, first = batch(200, torch.Generator().manual_seed(set_seed))
        with torch.no_grad():
            target = model(ids).argmax(1)

        def forward(x: torch.Tensor) -> torch.Tensor:
            return model(x)

        for mode in ("default", "contrast"):
            for old in (True, False):
                label = "data (before)" if old else "gate (rule set 4)"
                try:
                    maps = explain(model, ids, mode, old)
                except ConservationError as exc:  # the old rule can fail outright
                    error = str(exc).split(":")[0]
                    print(f"| seed {set_seed}, n={len(ids)} | {mode} | {label} | fails: {error} "
                          "| – | – |")
                    continue
                c = curves(forward, ids, maps, target, steps=16, removal=0)
                fc = faithfulness_correlation(forward, ids, maps, target, removal=0,
                                              n_samples=50, subset_fraction=0.1)
                share = maps.abs().gather(1, first[:, None])[:, 0] / maps.abs().sum(1)
                print(f"| seed {set_seed}, n={len(ids)} | {mode} | {label} | {_mean_se(c.abpc)} "
                      f"| {_mean_se(fc)} | {_mean_se(share)} |")
    print()
    sys.stdout.flush()


if __name__ == "__main__":
    main()
