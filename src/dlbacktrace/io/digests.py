"""SHA-256 fingerprints of tensors: the model's weights and the exact inputs explained.

One hashing of a tensor (key, dtype, shape, raw bytes) serves both, so a record's weights and
inputs are identified the same way everywhere (audit records, aggregate checkpoints, the
server's model card).
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch

__all__ = ["tensor_digest", "weights_digest"]


def _update(digest: Any, key: str, value: Any) -> None:
    if not isinstance(value, torch.Tensor):
        digest.update(f"{key}|const|{value!r}|".encode())
        return
    t = value.detach().cpu().contiguous()
    digest.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
    digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())


def weights_digest(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and persistent buffer (name, dtype, shape, bytes).

    Parameters
    ----------
    model
        The module; its ``state_dict`` is hashed in name order (non-tensor entries skipped).
    """
    digest = hashlib.sha256()
    state = model.state_dict(keep_vars=False)
    for name in sorted(state):
        if isinstance(state[name], torch.Tensor):
            _update(digest, name, state[name])
    return digest.hexdigest()


def tensor_digest(args: tuple[Any, ...] = (), kwargs: dict[str, Any] | None = None) -> str:
    """SHA-256 over the exact input tensors (position/name, dtype, shape, bytes).

    Parameters
    ----------
    args
        Positional inputs; non-tensors are hashed by their ``repr``.
    kwargs
        Keyword inputs, hashed in name order.
    """
    digest = hashlib.sha256()
    items = [(str(i), a) for i, a in enumerate(args)]
    items += sorted((kwargs or {}).items())
    for key, value in items:
        _update(digest, key, value)
    return digest.hexdigest()
