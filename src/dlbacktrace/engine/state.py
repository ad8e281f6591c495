"""State the library borrows from the caller and gives back: eval mode and random streams.

``inference_state`` puts a model in eval mode and restores every module's training flag and
every parameter's ``requires_grad`` afterwards.

``seeded`` gives seeded randomness that leaves the caller's random streams as they were.

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
def inference_state(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode for the duration; every module's flag and every requires_grad restored.

    Parameters
    ----------
    model
        The module to put in eval mode; nothing else about it is changed.
    """
    training = {m: m.training for m in model.modules()}
    grads = {p: p.requires_grad for p in model.parameters()}
    try:
        model.eval()
        yield
    finally:
        for module, flag in training.items():
            module.training = flag
        for param, flag in grads.items():
            if param.requires_grad != flag:
                param.requires_grad_(flag)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device | str | None = None) -> Iterator[None]:
    """Seed the CPU generator (and ``device``'s, if it is a GPU) for the duration only.

    Parameters
    ----------
    seed
        The seed.
    device
        The device whose generator is seeded besides the CPU's (a CUDA device; others add
        nothing). Default: the CPU only.
    """
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


__all__ = ["inference_state", "seeded"]
