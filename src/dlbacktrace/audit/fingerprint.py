"""What identifies a model and an environment: graph hash, weights hash, library versions."""

from __future__ import annotations

import hashlib
import json
import platform
from typing import Any

import numpy as np
import torch

from dlbacktrace.io.digests import weights_digest

__all__ = ["model_fingerprint", "module_fingerprint", "versions"]


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


def _architecture(model: torch.nn.Module) -> str:
    """The model's class and configuration: a Hugging Face config (less the fields naming where
    it was loaded from and which library wrote it), else the module tree's ``repr``."""
    config = getattr(model, "config", None)
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    if config is not None and hasattr(config, "to_dict"):
        fields = {k: v for k, v in config.to_dict().items()
                  if k not in ("_name_or_path", "transformers_version")}
        text = json.dumps(fields, sort_keys=True, default=str)
    else:
        text = repr(model)
    return hashlib.sha256(f"{kind}|{text}".encode()).hexdigest()


def module_fingerprint(model: torch.nn.Module, *, weights: str | None = None) -> dict[str, str]:
    """Hashes of the model's architecture and weights, for records that span many captures.

    Generations and aggregates run the model on many input shapes, so no single captured
    graph stands for them; the architecture (class and configuration) takes the graph's place.

    Parameters
    ----------
    model
        The module.
    weights
        A known digest of its weights, reused instead of hashing them again.
    """
    architecture = _architecture(model)
    weights = weights or weights_digest(model)
    combined = hashlib.sha256(f"{architecture}|{weights}".encode()).hexdigest()
    return {"architecture": architecture, "weights": weights, "digest": combined}
