"""``seeded``: reproducible streams inside, the caller's streams untouched outside."""

from __future__ import annotations

import torch

from dlbacktrace.engine.state import seeded


def test_seeded_is_reproducible_and_restores_the_callers_stream():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with seeded(7):
        a = torch.rand(4)
    with seeded(7):
        b = torch.rand(4)
    assert torch.equal(a, b)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream went on unchanged
    g = torch.Generator().manual_seed(7)
    assert torch.equal(a, torch.rand(4, generator=g))  # exactly torch.manual_seed's CPU stream


def test_seeded_on_cpu_queues_no_gpu_seeding():
    tracker = getattr(torch.cuda, "_lazy_seed_tracker", None)
    if tracker is None or torch.cuda.is_initialized():
        return  # nothing queued lazily on this build
    before = list(tracker.get_calls())
    with seeded(3):
        torch.rand(1)
    # torch.manual_seed would queue a seed of every GPU, applied whenever CUDA starts later
    assert list(tracker.get_calls()) == before
