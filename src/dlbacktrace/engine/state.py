"""Seeded randomness that leaves the caller's random streams as they were.

``torch.manual_seed`` also seeds every CUDA device (lazily, if CUDA is not yet initialised),
while ``fork_rng`` restores only the devices it is given: seeding with it inside ``fork_rng``
would still change the caller's GPU streams. Here only the CPU generator and, for a CUDA
device, that device's generator are seeded, and both are restored afterwards.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Seed the CPU generator (and ``device``'s, if it is a GPU) for the duration only."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    gpus = []
    if device.type == "cuda":
        gpus = [device.index if device.index is not None else torch.cuda.current_device()]
    with torch.random.fork_rng(devices=gpus):
        torch.default_generator.manual_seed(seed)
        for index in gpus:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield


__all__ = ["seeded"]
