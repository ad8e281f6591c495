"""What identifies a model and an environment: graph hash, weights hash, library versions."""

from __future__ import annotations

import hashlib
import platform
from typing import Any

import numpy as np
import torch

from dlbacktrace.io.digests import weights_digest

__all__ = ["model_fingerprint", "versions"]


def versions() -> dict[str, str]:
    """Versions that can change an explanation's bits: the rule set, dlbacktrace, torch, numpy,
    Python."""
    from dlbacktrace import __version__
    from dlbacktrace.engine.backtrace import RULE_SET

    return {
        "rule_set": RULE_SET,
        "dlbacktrace": __version__,
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
    }


def model_fingerprint(
    bt: Any, args: tuple, kwargs: dict, *, weights: str | None = None
) -> dict[str, str]:
    """Hashes of the captured graph text (the exact ATen program) and of the weights.

    ``bt`` is the :class:`~dlbacktrace.Backtrace` that explained ``args``/``kwargs``: its
    capture is cached, so this costs a hash, not an export. ``weights`` reuses a known digest.
    """
    graph = bt.capture(*args, **kwargs).graph
    graph_digest = hashlib.sha256(str(graph).encode()).hexdigest()
    weights = weights or weights_digest(bt.model)
    combined = hashlib.sha256(f"{graph_digest}|{weights}".encode()).hexdigest()
    return {"graph": graph_digest, "weights": weights, "digest": combined}
