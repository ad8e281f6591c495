"""Contrast mode is faithful on a small trained transformer (DESIGN.md 2.1, revised).

A one-block encoder (embedding, layer norm, single-head softmax attention, layer norm, mean
pooling, linear head) is trained in a few seconds on a synthetic sentiment task: the label is
whether a sequence holds more "positive" than "negative" words. Token deletion (a neutral
token) scores each map by ABPC (LeRF AUC − MoRF AUC of the predicted class's probability).

- dlb-contrast must reach gradient × input's ABPC (minus a small margin) and beat random by far;
- the negative control proves that the check can fail: the retired contrast rule (absolute
  denominators Σ|z| + |b| with layer norm as identity), patched in for the duration of the
  control, falls below the same bar.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import dlbacktrace.engine.backtrace as backtrace_module
from dlbacktrace import Backtrace
from dlbacktrace.engine.rules import affine
from dlbacktrace.engine.rules.base import safe_reciprocal, total
from dlbacktrace.evaluation import metrics as M

VOCAB, LENGTH, DIM = 24, 10, 16
POSITIVE, NEGATIVE = range(4, 10), range(10, 16)  # other ids are neutral; 0 = the removal id
FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)
MARGIN = 0.03


class TinyEncoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(VOCAB, DIM)
        self.norm1 = nn.LayerNorm(DIM)
        self.qkv = nn.Linear(DIM, 3 * DIM)
        self.norm2 = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, 2)

    def encode(self, e: torch.Tensor) -> torch.Tensor:
        h = self.norm1(e)
        q, k, v = self.qkv(h).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(-2, -1) / DIM**0.5, dim=-1)
        h = self.norm2(h + attn @ v)
        return self.head(h.mean(dim=1))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.encode(self.embed(ids))


def _data(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, VOCAB, (n, LENGTH), generator=g)
    pos = torch.isin(ids, torch.tensor(list(POSITIVE))).sum(1)
    neg = torch.isin(ids, torch.tensor(list(NEGATIVE))).sum(1)
    keep = pos != neg
    return ids[keep], (pos > neg)[keep].long()


@pytest.fixture(scope="module")
def trained() -> tuple[TinyEncoder, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyEncoder()
    x, y = _data(3000, g)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    xt, yt = _data(200, torch.Generator().manual_seed(1))
    with torch.no_grad():
        accuracy = float((model(xt).argmax(1) == yt).double().mean())
    assert accuracy > 0.9, f"the tiny encoder did not learn the task ({accuracy:.2f})"
    xt = xt[:64]
    with torch.no_grad():
        target = model(xt).argmax(1)
    return model, xt, target


def _abpc(model: nn.Module, x: torch.Tensor, maps: torch.Tensor, target: torch.Tensor) -> float:
    c = M.curves(model, x, maps, target, fractions=FRACTIONS, removal=0)
    return float(c.abpc.double().mean())


def _gradient_x_input(model: TinyEncoder, x: torch.Tensor, target: torch.Tensor):
    e = model.embed(x).detach().requires_grad_(True)
    score = model.encode(e).gather(1, target[:, None]).sum()
    (grad,) = torch.autograd.grad(score, e)
    return (grad * e).sum(-1).detach()


def _absolute_shares(call, R, y, bias, positive_negative, magnitude=None, own_magnitude=False):
    """The retired contrast rule: shares ``z/(Σ|z| + |b|)`` (no saturation, for the control)."""
    P, N = positive_negative()
    b = bias if bias is not None else torch.zeros((), dtype=y.dtype)
    G = R * safe_reciprocal(P + N + b.abs())
    return affine.SignedShares(G=G, alpha=None, beta=None, absorbed=total(G * b.abs()))


def test_contrast_reaches_gradient_x_input_and_the_retired_rule_does_not(trained, monkeypatch):
    model, x, target = trained
    contrast = Backtrace(model, mode="contrast").explain(x, target=target).relevance
    gxi = _gradient_x_input(model, x, target)
    random = torch.rand(x.shape, generator=torch.Generator().manual_seed(2))
    ours, theirs = _abpc(model, x, contrast, target), _abpc(model, x, gxi, target)
    chance = _abpc(model, x, random, target)
    assert ours >= theirs - MARGIN, f"dlb-contrast ABPC {ours:.3f} < gradient×input {theirs:.3f}"
    assert ours > chance + 0.2, f"dlb-contrast ABPC {ours:.3f} is near random {chance:.3f}"

    # negative control: the same check fails for the retired rule (whose signed stream never
    # balanced a ledger of its own, so the ledger check is switched off for the control)
    monkeypatch.setattr(affine, "signed_shares", _absolute_shares)
    monkeypatch.setattr(backtrace_module, "_check_ledger", lambda exp: None)
    retired = Backtrace(model, mode="contrast", norm="identity").explain(x, target=target)
    old = _abpc(model, x, retired.relevance, target)
    assert old < theirs - MARGIN, f"control: the retired rule scored {old:.3f} vs {theirs:.3f}"
