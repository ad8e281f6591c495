"""``aggregate()``: dataset-level relevance in constant memory, locally or on Ray, resumable."""

from __future__ import annotations

import hashlib
import logging
import zipfile
from collections.abc import Mapping, Sequence
from contextlib import ExitStack, closing
from pathlib import Path
from typing import Any

import torch

from dlbacktrace.aggregate.backends import local_partials, ray_partials
from dlbacktrace.aggregate.bias import BiasLensError, resolve_sensitive
from dlbacktrace.aggregate.compute import AggSpec, layer_unit_rule
from dlbacktrace.aggregate.result import AggregateError, GlobalExplanation
from dlbacktrace.aggregate.sources import DataSource
from dlbacktrace.aggregate.text import TextSpec
from dlbacktrace.engine.backtrace import Backtrace
from dlbacktrace.io.digests import weights_digest

log = logging.getLogger(__name__)
BACKENDS = ("local", "ray")


def _dtype_device(model: torch.nn.Module) -> tuple[torch.dtype, torch.device | None]:
    for p in model.parameters():
        if p.is_floating_point():
            return p.dtype, p.device
    return torch.float32, None


def aggregate(
    model: torch.nn.Module | Backtrace,
    data: Any,
    *,
    target: Any = None,
    mode: str = "default",
    labels: Any = None,
    batch_size: int = 256,
    feature_names: Sequence[str] | None = None,
    class_names: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
    layer_units: dict[str, str] | None = None,
    tokenizer: Any = None,
    sample_size: int = 1024,
    groups: Any = None,
    sensitive: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
    backend: str = "local",
    num_workers: int = 2,
    address: str | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 10,
    progress: bool = False,
    **explain_kwargs: Any,
) -> GlobalExplanation:
    """Explain every row of ``data`` with ``model`` and keep per-class relevance statistics.

    Rows are grouped by the class explained. The result is the same for either backend.

    Parameters
    ----------
    model
        The model, or a ``Backtrace`` (its capture cache is then reused, locally).
    data
        A DataLoader, an iterable of batches (tensors, ``(x, y)`` tuples or mappings of keyword
        inputs), a NumPy array, a tensor or a DataFrame.
    target
        None (each row's predicted class), ``"label"`` (its true class), a class index, or
        ``"positive"``/``"negative"`` for a single-logit model.
    mode
        ``"default"`` or ``"contrast"``.
    labels
        For array or DataFrame data: an array of labels, or a label column name of the
        DataFrame. Iterables carry their own labels.
    batch_size
        Rows per batch for array data (default 256).
    feature_names
        Names of the features of the one ``[rows, features]`` input (a DataFrame's columns by
        default).
    class_names
        One name per class of the model.
    layers
        Module names whose units (channels for conv-like outputs, last dim otherwise) are
        aggregated too.
    layer_units
        ``{name: rule}`` overriding the unit rule of a layer: ``"channel"``, ``"last"``,
        ``"heads:N"`` (one unit per attention head) or ``"total"`` (one per module, e.g. per
        expert).
    tokenizer
        A Hugging Face tokenizer; turns on per-token and per-word statistics of ``input_ids``.
    sample_size
        Rows kept in the fixed-size sample of per-row values, for quantiles and beeswarm plots
        (default 1024; 0 keeps none).
    groups
        The bias lens: one group value per row (array, list, Series), or for a DataFrame the
        name of a column holding them (left out of the features, like a label column). Keeps
        per-group relevance statistics of the one ``[rows, features]`` input
        (:meth:`GlobalExplanation.group_table`).
    sensitive
        With ``groups``: features whose share of each row's total |relevance| is kept, per
        group and overall (:meth:`GlobalExplanation.sensitive_shares`: the mean of the per-row
        shares ± its standard error over rows). A name is a column, or every one-hot column
        ``name=...``; ``{name: [columns or one-hot prefixes]}`` combines several.
    backend
        ``"local"`` or ``"ray"``.
    num_workers
        Ray workers explaining batches at once (``backend="ray"`` only).
    address
        The Ray cluster to connect to; a local Ray is started when None and none is running.
    checkpoint
        A ``.npz`` path saved atomically every ``checkpoint_every`` batches; if it exists,
        finished batches are skipped (resume).
    checkpoint_every
        Batches between checkpoints (default 10).
    progress
        Show a progress bar (needs ``rich``).
    **explain_kwargs
        Passed on to ``Backtrace.explain``.

    Returns
    -------
    The :class:`GlobalExplanation` over all rows.
    """
    bt = model if isinstance(model, Backtrace) else Backtrace(model)
    model = bt.model
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if mode not in ("default", "contrast"):
        raise ValueError(f"mode must be 'default' or 'contrast', got {mode!r}")
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be positive, got {checkpoint_every}")
    dtype, device = _dtype_device(model)
    source = DataSource(data, batch_size, labels, dtype,
                        list(feature_names) if feature_names is not None else None, device,
                        groups)
    if sensitive is not None and source.groups is None:
        raise BiasLensError("sensitive= needs groups= (the rows' groups, e.g. a column name)")
    resolved = _sensitive_columns(source, sensitive) if sensitive is not None else {}
    units = {name: layer_unit_rule(model, name) for name in layers or ()}
    units.update(layer_units or {})
    bad = {k: v for k, v in units.items() if not _valid_rule(v)}
    if bad:
        raise ValueError(
            f"layer_units values must be 'channel', 'last', 'total' or 'heads:N', got {bad}"
        )
    spec = AggSpec(
        mode=mode, target=target, layers=list(layers) if layers else None, layer_units=units,
        sample_size=sample_size,
        text=TextSpec.from_tokenizer(tokenizer) if tokenizer is not None else None,
        explain_kwargs=explain_kwargs, sensitive=resolved,
        pad_to=batch_size if source.is_array else getattr(data, "batch_size", None),
    )
    fingerprint = {
        "model": weights_digest(model), "mode": mode, "target": repr(target),
        "batch_size": batch_size, "layers": spec.layers, "layer_units": units,
        "sample_size": sample_size, "explain": repr(sorted(explain_kwargs.items())),
        "text": tokenizer is not None,
        "rows": len(source.data) if source.is_array else None,
    }
    if source.groups is not None:  # only then: earlier checkpoints keep their fingerprint
        digest = hashlib.sha256("\x00".join(source.groups.tolist()).encode()).hexdigest()
        fingerprint.update(groups=digest[:16], sensitive=resolved)
    state = _resume(checkpoint, fingerprint)
    start = state.batches if state is not None else 0
    if backend == "local":
        partials = local_partials(bt, source, start, spec)
    else:
        partials = ray_partials(model, fingerprint["model"], source, start, spec, num_workers,
                                address)
    with ExitStack() as stack:
        stack.enter_context(closing(partials))  # stops Ray workers promptly on errors
        advance = _progress(stack, progress, source.n_batches, start)
        for part in partials:
            if state is None:  # a fresh state: partials may be read-only (Ray's object store)
                state = GlobalExplanation(
                    mode=part.mode, target=part.target, n_classes=part.n_classes,
                    class_names=part.class_names, text_spec=spec.text,
                )
            state.merge(part)
            advance()
            if checkpoint is not None and state.batches % checkpoint_every == 0:
                _finish(state, source, fingerprint, feature_names, class_names).save(checkpoint)
    if state is None:
        raise AggregateError("the data yielded no batches: nothing to aggregate")
    _finish(state, source, fingerprint, feature_names, class_names)
    if checkpoint is not None:
        state.save(checkpoint)
    return state


def _sensitive_columns(source: DataSource, sensitive: Any) -> dict[str, list[int]]:
    """Sensitive features -> column indices of the one ``[rows, features]`` input."""
    names = source.feature_names
    if names is None:
        if not (source.is_array and source.data.ndim == 2):
            raise BiasLensError("sensitive= needs [rows, features] data or feature_names=")
        names = [f"x{i}" for i in range(source.data.shape[1])]
    return resolve_sensitive(sensitive, names)


def _valid_rule(rule: str) -> bool:
    if rule in ("channel", "last", "total"):
        return True
    head, _, count = rule.partition(":")
    return head == "heads" and count.isdigit() and int(count) > 0


def _finish(state, source, fingerprint, feature_names, class_names) -> GlobalExplanation:
    """Attach names and the fingerprint (idempotent; also done before each checkpoint)."""
    state.fingerprint = dict(fingerprint)
    names = source.feature_names
    if names is not None:
        flat = [n for n, m in state.inputs.items() if m.sums["sum"].ndim == 2]
        if len(flat) != 1:
            raise AggregateError("feature_names= needs exactly one [rows, features] input")
        size = state.inputs[flat[0]].sums["sum"].shape[1]
        if len(names) != size:
            raise AggregateError(f"{len(names)} feature names for {size} features")
        state.feature_names = {flat[0]: list(names)}
    if class_names is not None:
        if len(class_names) != state.n_classes:
            raise AggregateError(
                f"{len(class_names)} class names for a model with {state.n_classes} classes"
            )
        state.class_names = [str(c) for c in class_names]
    return state


def _resume(checkpoint: str | Path | None, fingerprint: dict) -> GlobalExplanation | None:
    if checkpoint is None:
        return None
    path = Path(checkpoint)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")
    if not path.exists():
        return None
    try:
        state = GlobalExplanation.load(path)
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise AggregateError(
            f"checkpoint {path.name} is not readable ({type(exc).__name__}: {exc}); delete it "
            "or pass another checkpoint path"
        ) from exc
    if state.fingerprint != fingerprint:
        diff = sorted(k for k in fingerprint if state.fingerprint.get(k) != fingerprint[k])
        raise AggregateError(
            f"checkpoint {path.name} was written by a different run (differs in: "
            f"{', '.join(diff)}); delete it or pass another checkpoint path"
        )
    log.info("resuming from %s after %d batches (%d rows)", path, state.batches, state.rows)
    return state


def _progress(stack: ExitStack, enabled: bool, total: int | None, done: int):
    if not enabled:
        return lambda: None
    try:
        from rich.progress import Progress
    except ImportError as exc:
        raise ImportError("progress=True needs rich: pip install rich") from exc
    bar = stack.enter_context(Progress(transient=True))
    task = bar.add_task("explaining batches", total=total, completed=done)
    return lambda: bar.advance(task)


__all__ = ["aggregate"]
