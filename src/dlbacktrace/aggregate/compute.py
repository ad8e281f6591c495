"""One batch → one partial ``GlobalExplanation``: the unit of work of every backend.

One batched ``explain`` call per batch (never a loop over rows); its relevance is reduced to
per-class sums on the spot, so nothing per-row outlives the batch except the fixed-size sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dlbacktrace.aggregate.bias import GroupStats
from dlbacktrace.aggregate.result import AggregateError, GlobalExplanation
from dlbacktrace.aggregate.sketch import RowSample
from dlbacktrace.aggregate.sources import Batch
from dlbacktrace.aggregate.stats import ClassMoments
from dlbacktrace.aggregate.text import TextSpec, text_partial
from dlbacktrace.engine.backtrace import Backtrace
from dlbacktrace.engine.explanation import Explanation

_CHANNEL_MODULES = ("Conv", "BatchNorm", "InstanceNorm", "GroupNorm", "Pool", "Upsample")


@dataclass
class AggSpec:
    """Everything a worker needs besides the model and the batch (plain, picklable data).

    Parameters
    ----------
    mode
        ``"default"`` or ``"contrast"``.
    target
        None (predicted class), ``"label"``, a class index, or ``"positive"``/``"negative"``.
    layers
        Module names whose relevance is aggregated too.
    layer_units
        ``{module name: rule}`` for :func:`reduce_units` (layers not named use ``"last"``).
    sample_size
        Rows kept in the per-row sample (0: none).
    text
        The tokenizer description for per-token and per-word statistics, if any.
    text_input
        The input holding the token ids (default ``"input_ids"``).
    pad_to
        Pad short (last) batches to this many rows, so they reuse the capture.
    sensitive
        ``{sensitive feature: column indices}`` whose per-row shares the bias lens keeps for
        batches that carry groups.
    explain_kwargs
        Further keywords of ``Backtrace.explain``.
    """

    mode: str = "default"
    target: Any = None  # None (predicted class), "label", an int, or "positive"/"negative"
    layers: list[str] | None = None
    layer_units: dict[str, str] = field(default_factory=dict)  # name -> a reduce_units rule
    sample_size: int = 1024
    text: TextSpec | None = None
    text_input: str = "input_ids"
    pad_to: int | None = None  # pad short (last) batches to this size: one capture, not two
    sensitive: dict[str, list[int]] = field(default_factory=dict)
    explain_kwargs: dict[str, Any] = field(default_factory=dict)


def layer_unit_rule(model: torch.nn.Module, name: str) -> str:
    """How a module's output reduces to units: channels for conv-like modules, last dim else.

    Parameters
    ----------
    model
        The model holding the module.
    name
        The module's name in ``model`` (raises ``AggregateError`` if there is none).

    Returns
    -------
    ``"channel"`` or ``"last"``.
    """
    try:
        module = model.get_submodule(name)
    except AttributeError as exc:
        raise AggregateError(f"model has no module named {name!r}") from exc
    kind = type(module).__name__
    return "channel" if any(k in kind for k in _CHANNEL_MODULES) else "last"


def reduce_units(relevance: torch.Tensor, rule: str) -> torch.Tensor:
    """``[B, ...]`` module-output relevance → ``[B, units]`` (sums, so relevance is conserved).

    ``"last"``: per hidden unit (last dim; ``[B, T, D]`` sums over tokens); ``"channel"``: per
    channel (dim 1; spatial dims summed; also used for any ``[B, C, H, W]`` output);
    ``"heads:H"``: the last dim split into ``H`` equal heads, one unit per head; ``"total"``:
    one unit, the module's whole relevance (e.g. one expert of a mixture-of-experts).

    Parameters
    ----------
    relevance
        ``[B, ...]`` relevance of a module's output.
    rule
        ``"last"``, ``"channel"``, ``"heads:H"`` or ``"total"``.
    """
    if rule == "total":
        return relevance.flatten(1).sum(1, keepdim=True)
    if rule.startswith("heads:"):
        heads = int(rule.split(":", 1)[1])
        per_unit = reduce_units(relevance, "last")
        if per_unit.shape[1] % heads:
            raise AggregateError(f"{per_unit.shape[1]} units do not split into {heads} heads")
        return per_unit.reshape(per_unit.shape[0], heads, -1).sum(2)
    if relevance.dim() == 2:
        return relevance
    if relevance.dim() >= 4 or rule == "channel":
        return relevance.flatten(2).sum(2)
    return relevance.flatten(1, -2).sum(1)


def n_classes_of(output: torch.Tensor) -> int:
    """The number of classes of a model output: its last dim, or 1 for a single logit.

    Parameters
    ----------
    output
        The model output, ``[B, K]`` (or ``[B]``/``[B, 1]`` for one logit).
    """
    if output.dim() >= 2 and output.shape[-1] > 1:
        return int(output.shape[-1])
    return 1


def explain_batch(bt: Backtrace, batch: Batch, spec: AggSpec) -> GlobalExplanation:
    """Explain one batch in one call and reduce it to a partial aggregate.

    Parameters
    ----------
    bt
        The ``Backtrace`` that explains the batch.
    batch
        The batch (inputs, labels and its global row offset).
    spec
        What to aggregate.

    Returns
    -------
    A :class:`GlobalExplanation` of this batch alone, to be merged with the others.
    """
    target = spec.target
    if target == "label":
        if batch.labels is None:
            raise AggregateError(f"target='label' but batch {batch.index} has no labels")
        target = batch.labels
    size = batch.size
    args, kwargs, target = _padded(batch, target, spec.pad_to)
    exp = bt.explain(
        *args, target=target, mode=spec.mode, layers=spec.layers or None,
        **kwargs, **spec.explain_kwargs,
    )
    if len(exp.output) != size:  # drop the padding rows (explanations are row-independent)
        exp = _rows(exp, size)
    out = exp.output
    if out.dim() == 3:  # [B, T, V]: explained at one position, classes are the vocabulary
        out = out[:, -1]
    n_classes = n_classes_of(out)
    classes = exp.target if exp.target is not None else torch.zeros(size, dtype=torch.long)
    classes = classes.detach().cpu().long()
    part = GlobalExplanation(
        mode=spec.mode, target=repr(spec.target), n_classes=n_classes,
        class_names=[str(c) for c in range(n_classes)], batches=1, rows=size,
    )
    inputs = dict(zip(exp.input_names, _values(batch, exp), strict=True))
    sample_values: dict[str, np.ndarray] = {}
    for name in exp.input_names:
        value = inputs[name]
        if spec.text is not None and name == spec.text_input:
            mask = inputs.get("attention_mask")
            part.tokens, part.words = text_partial(
                value, mask, exp.total_by_name[name] if spec.mode == "default"
                else exp.net_by_name[name], classes, spec.text, n_classes,
            )
            continue
        if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            continue  # masks, ids without a text spec, positions
        rel, pos, neg = _streams(exp, name, exp.total_by_name, exp.net_by_name)
        part.inputs[name] = ClassMoments.from_batch(rel, classes, n_classes, pos, neg)
        if spec.sample_size > 0 and value.dim() == 2:
            sample_values[f"rel:{name}"] = rel.detach().cpu().double().numpy()
            sample_values[f"x:{name}"] = value.detach().cpu().double().numpy()
    for name in exp.layers:
        rule = spec.layer_units.get(name, "last")
        net = exp.layers_net if spec.mode == "contrast" else None
        rel, pos, neg = _streams(exp, name, exp.layers, net)
        rel, pos, neg = (None if t is None else reduce_units(t, rule) for t in (rel, pos, neg))
        part.layers[name] = ClassMoments.from_batch(rel, classes, n_classes, pos, neg)
    if batch.groups is not None:
        flat = [n for n, m in part.inputs.items() if m.sums["sum"].ndim == 2]
        if len(flat) != 1:
            raise AggregateError(f"groups= needs exactly one [rows, features] input, got "
                                 f"{sorted(flat)}")
        rel = _streams(exp, flat[0], exp.total_by_name, exp.net_by_name)[0]
        part.groups = GroupStats.from_batch(flat[0], rel.detach().cpu().double().numpy(),
                                            batch.groups, spec.sensitive)
    if sample_values:
        rows = np.arange(batch.offset, batch.offset + size, dtype=np.int64)
        part.sample = RowSample.from_batch(spec.sample_size, rows, classes.numpy(), sample_values)
    return part


def _values(batch: Batch, exp: Explanation) -> list[Any]:
    values = list(batch.args) + list(batch.kwargs.values())
    if len(values) != len(exp.input_names):
        values = [v for v in values if isinstance(v, torch.Tensor)]
    return values


def _streams(exp: Explanation, name: str, total: dict, net: dict | None):
    """(relevance, positive, negative): the signed net map and its halves in contrast mode."""
    if exp.mode != "contrast" or net is None:
        return total[name], None, None
    t, n = total[name], net[name]
    return n, ((t + n) / 2).clamp_min(0), ((t - n) / 2).clamp_min(0)


def _padded(batch: Batch, target: Any, pad_to: int | None) -> tuple[tuple, dict, Any]:
    """Repeat the last row up to ``pad_to`` rows, so a short last batch reuses the capture."""
    size = batch.size
    values = list(batch.args) + list(batch.kwargs.values())
    if (pad_to is None or size >= pad_to or size == 0 or not all(
            isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == size for v in values)):
        return batch.args, batch.kwargs, target
    extra = pad_to - size

    def pad(t: torch.Tensor) -> torch.Tensor:
        return torch.cat([t, t[-1:].expand(extra, *t.shape[1:])])

    if isinstance(target, torch.Tensor) and target.dim() == 1 and target.shape[0] == size:
        target = pad(target)
    elif isinstance(target, (list, tuple, np.ndarray)):
        target = pad(torch.as_tensor(np.asarray(target)))
    return (tuple(pad(a) for a in batch.args),
            {k: pad(v) for k, v in batch.kwargs.items()}, target)


def _rows(exp: Explanation, n: int) -> Explanation:
    """The first ``n`` rows of a batched explanation."""
    def cut(maps: dict | None) -> dict | None:
        return None if maps is None else {k: v[:n] for k, v in maps.items()}

    return Explanation(
        mode=exp.mode, input_names=exp.input_names, total_by_name=cut(exp.total_by_name),
        net_by_name=cut(exp.net_by_name), absorbed=exp.absorbed, seed=exp.seed[:n],
        target=None if exp.target is None else exp.target[:n], output=exp.output[:n],
        layers=cut(exp.layers), layers_net=cut(exp.layers_net), single_input=exp.single_input,
    )
