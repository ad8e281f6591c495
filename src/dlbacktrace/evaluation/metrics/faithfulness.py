"""Faithfulness: does removing what the map calls relevant change the prediction?

- deletion / insertion curves (Petsiuk et al., RISE; Samek et al.): the target probability as
  features are removed most-relevant-first (MoRF, lower area is better), least-relevant-first
  (LeRF, higher is better), or inserted most-relevant-first into a fully removed input
  (higher is better); ABPC = AUC(LeRF) − AUC(MoRF) (higher is better);
- ERASER comprehensiveness and sufficiency (DeYoung et al.), averaged over top-k bins;
- faithfulness correlation (Bhatt et al.);
- infidelity (Yeh et al.), optionally with the optimal scale (Captum's ``normalize``).

All perturbed copies of one input go through the model in batches.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dlbacktrace.evaluation.metrics._perturb import (
    Forward,
    MetricError,
    apply_removed,
    counts,
    default_feature_mask,
    evaluate,
    expand_extra,
    feature_scores,
    feature_valid,
    ranks,
    removal_value,
)


@dataclass
class Curves:
    """Curves over ``fractions`` (``[S]``) per input (``[B, S]``), and their areas."""

    fractions: torch.Tensor
    morf: torch.Tensor
    lerf: torch.Tensor
    insertion: torch.Tensor

    @staticmethod
    def _auc(values: torch.Tensor, fractions: torch.Tensor) -> torch.Tensor:
        return torch.trapezoid(values, fractions.to(values.dtype), dim=-1)

    @property
    def deletion_auc(self) -> torch.Tensor:
        return self._auc(self.morf, self.fractions)

    @property
    def lerf_auc(self) -> torch.Tensor:
        return self._auc(self.lerf, self.fractions)

    @property
    def insertion_auc(self) -> torch.Tensor:
        return self._auc(self.insertion, self.fractions)

    @property
    def abpc(self) -> torch.Tensor:
        return self.lerf_auc - self.deletion_auc

    def numpy(self) -> dict[str, np.ndarray]:
        """The curves and their areas as NumPy arrays (``fractions`` ``[S]``, curves
        ``[B, S]``, areas ``[B]``)."""
        names = ("fractions", "morf", "lerf", "insertion", "deletion_auc", "lerf_auc",
                 "insertion_auc", "abpc")  # fmt: skip
        return {name: getattr(self, name).detach().cpu().numpy() for name in names}

    def eraser(self, bins: tuple[float, ...]) -> dict[str, torch.Tensor]:
        """ERASER comprehensiveness / sufficiency read off the curves (no extra forwards):
        every bin must be one of the curve's fractions."""
        idx = []
        for b in bins:
            hit = torch.nonzero((self.fractions - b).abs() < 1e-9).flatten()
            if hit.numel() == 0:
                raise MetricError(f"bin {b} is not one of the curve fractions")
            idx.append(int(hit[0]))
        full = self.morf[:, :1]
        return {
            "comprehensiveness": (full - self.morf[:, idx]).mean(1),
            "sufficiency": (full - self.insertion[:, idx]).mean(1),
        }


def _setup(x, attributions, feature_mask, valid_elements, removal):
    if attributions.shape != x.shape:
        raise MetricError(
            f"attributions {tuple(attributions.shape)} must be shaped like the inputs "
            f"{tuple(x.shape)}"
        )
    mask = default_feature_mask(x) if feature_mask is None else feature_mask.expand(x.shape)
    scores = feature_scores(attributions, mask)
    valid = feature_valid(mask, valid_elements)
    return mask, scores, valid, removal_value(x, removal)


def _removed(scores, valid, fractions, descending: bool, inserted: bool = False):
    r = ranks(scores, valid, descending)
    k = counts(fractions, valid)
    chosen = r[:, None, :] < k[:, :, None]
    if inserted:  # everything valid is removed except the first k
        return valid[:, None, :] & ~chosen
    return chosen & valid[:, None, :]


def _scores_without(
    forward: Forward,
    x: torch.Tensor,
    removed: torch.Tensor,
    mask: torch.Tensor,
    base: torch.Tensor,
    target: torch.Tensor,
    additional_forward_args: tuple[torch.Tensor, ...],
    output: str,
    batch_size: int,
) -> torch.Tensor:
    """``[B, S]`` target scores of each input with the features ``removed[:, s]`` replaced by
    ``base``, all ``B·S`` perturbed copies in batches."""
    copies = removed.shape[1]
    perturbed = apply_removed(x, removed, mask, base)
    extra = expand_extra(tuple(additional_forward_args), copies)
    tgt = target.repeat_interleave(copies)
    values = evaluate(forward, perturbed, extra, tgt, output, batch_size)
    return values.reshape(x.shape[0], copies)


def curves(
    forward: Forward,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    *,
    steps: int = 20,
    fractions: torch.Tensor | None = None,
    feature_mask: torch.Tensor | None = None,
    removal: Any = "zero",
    additional_forward_args: tuple[torch.Tensor, ...] = (),
    valid_elements: torch.Tensor | None = None,
    output: str = "prob",
    batch_size: int = 256,
) -> Curves:
    """MoRF, LeRF deletion and MoRF insertion curves at ``steps + 1`` equally spaced
    fractions of the features (or the given ``fractions``), for every input row.

    Parameters
    ----------
    forward
        The model as ``forward(x, *additional_forward_args) -> [N, C]`` scores.
    x
        ``[B, ...]`` the inputs (float, or token ids).
    attributions
        ``[B, ...]`` the maps, shaped like ``x``.
    target
        ``[B]`` the explained class per row.
    steps
        Equal steps from 0 to 1 (when ``fractions`` is None).
    fractions
        The fractions of features removed, ascending from 0 to 1.
    feature_mask
        Elements → feature index (−1: none); default one feature per element (per pixel
        for images).
    removal
        What a removed element becomes (:func:`~._perturb.removal_value`).
    additional_forward_args
        Batch-aligned tensors passed on to ``forward`` (e.g. an attention mask).
    valid_elements
        Elements that count as features (text: real tokens); None for all.
    output
        Score the ``"prob"`` (softmax probability) or the ``"logit"`` of the target.
    batch_size
        Perturbed copies per forward call.
    """
    mask, scores, valid, base = _setup(x, attributions, feature_mask, valid_elements, removal)
    fr = (
        torch.linspace(0, 1, steps + 1, dtype=torch.float64)
        if fractions is None
        else torch.as_tensor(fractions, dtype=torch.float64)
    )
    removed = torch.cat(
        [
            _removed(scores, valid, fr, descending=True),
            _removed(scores, valid, fr, descending=False),
            _removed(scores, valid, fr, descending=True, inserted=True),
        ],
        dim=1,
    )
    values = _scores_without(forward, x, removed, mask, base, target, additional_forward_args,
                             output, batch_size)  # fmt: skip
    s = fr.numel()
    return Curves(fr, values[:, :s], values[:, s : 2 * s], values[:, 2 * s :])


def eraser(
    forward: Forward,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    *,
    bins: tuple[float, ...] = (0.01, 0.05, 0.1, 0.2, 0.5),
    feature_mask: torch.Tensor | None = None,
    removal: Any = "zero",
    additional_forward_args: tuple[torch.Tensor, ...] = (),
    valid_elements: torch.Tensor | None = None,
    output: str = "prob",
    batch_size: int = 256,
) -> dict[str, torch.Tensor]:
    """ERASER comprehensiveness (p(x) − p(x without the top k%), higher is better) and
    sufficiency (p(x) − p(only the top k%), lower is better), averaged over ``bins``.
    At least one feature is moved in every bin.

    Parameters
    ----------
    forward, x, attributions, target
        As for :func:`curves`.
    bins
        Fractions of the features in the top-k bins.
    feature_mask, removal, additional_forward_args, valid_elements, output, batch_size
        As for :func:`curves`.
    """
    fr = torch.tensor((0.0, *bins), dtype=torch.float64)
    mask, scores, valid, base = _setup(x, attributions, feature_mask, valid_elements, removal)
    r = ranks(scores, valid, descending=True)
    k = counts(fr, valid)
    k[:, 1:] = k[:, 1:].clamp_min(1)
    top = (r[:, None, :] < k[:, :, None]) & valid[:, None, :]
    removed = torch.cat([top, valid[:, None, :] & ~top[:, 1:]], dim=1)
    values = _scores_without(forward, x, removed, mask, base, target, additional_forward_args,
                             output, batch_size)  # fmt: skip
    full = values[:, :1]
    n = len(bins)
    return {
        "comprehensiveness": (full - values[:, 1 : 1 + n]).mean(1),
        "sufficiency": (full - values[:, 1 + n :]).mean(1),
    }


def _pearson(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    den = (a.pow(2).sum(-1) * b.pow(2).sum(-1)).sqrt()
    return torch.where(den > 0, (a * b).sum(-1) / den.clamp_min(1e-300), torch.zeros_like(den))


def faithfulness_correlation(
    forward: Forward,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    *,
    n_samples: int = 50,
    subset_fraction: float = 0.1,
    feature_mask: torch.Tensor | None = None,
    removal: Any = "zero",
    additional_forward_args: tuple[torch.Tensor, ...] = (),
    valid_elements: torch.Tensor | None = None,
    output: str = "prob",
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """Pearson correlation, over ``n_samples`` random feature subsets (``subset_fraction`` of
    the features, at least one), between the attribution summed over the subset and the drop
    of the target score when the subset is removed (Bhatt et al., 2020). ``[B]``.

    Parameters
    ----------
    forward, x, attributions, target
        As for :func:`curves`.
    n_samples
        Random subsets per input.
    subset_fraction
        Fraction of the features in each subset.
    seed
        Seed of the local generator drawing the subsets.
    feature_mask, removal, additional_forward_args, valid_elements, output, batch_size
        As for :func:`curves`.
    """
    mask, scores, valid, base = _setup(x, attributions, feature_mask, valid_elements, removal)
    b, f = scores.shape
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(b, n_samples, f, generator=gen, dtype=torch.float64)
    noise = torch.where(valid[:, None, :].cpu(), noise, torch.full_like(noise, 2.0))
    r = torch.argsort(torch.argsort(noise, dim=2), dim=2).to(scores.device)
    k = (valid.sum(1) * subset_fraction).round().long().clamp_min(1)
    subset = r < k[:, None, None]
    removed = torch.cat([subset[:, :1] & False, subset], 1)  # first: the input itself
    values = _scores_without(forward, x, removed, mask, base, target, additional_forward_args,
                             output, batch_size)  # fmt: skip
    drop = values[:, :1] - values[:, 1:]
    attr_sum = (subset.to(torch.float64) * scores[:, None, :]).sum(-1)
    return _pearson(attr_sum, drop)


def infidelity(
    forward: Forward,
    x: torch.Tensor,
    attributions: torch.Tensor,
    target: torch.Tensor,
    *,
    n_samples: int = 32,
    noise_std: float = 0.1,
    perturbations: torch.Tensor | None = None,
    normalize: bool = True,
    additional_forward_args: tuple[torch.Tensor, ...] = (),
    output: str = "logit",
    seed: int = 0,
    batch_size: int = 256,
) -> torch.Tensor:
    """``E[(Iᵀa·β − (f(x) − f(x − I)))²]`` with Gaussian noise ``I`` (std ``noise_std``) or the
    given ``perturbations`` ``[B, n, ...]``; β is the least-squares optimal scale when
    ``normalize`` (so the score does not depend on the map's units), else 1. ``[B]``."""
    if attributions.shape != x.shape or not x.is_floating_point():
        raise MetricError("infidelity needs float inputs and attributions shaped like them")
    b = x.shape[0]
    if perturbations is None:
        gen = torch.Generator().manual_seed(seed)
        perturbations = noise_std * torch.randn(
            (b, n_samples, *x.shape[1:]), generator=gen, dtype=x.dtype
        ).to(x.device)
    n = perturbations.shape[1]
    perturbed = (x[:, None] - perturbations).reshape(b * n, *x.shape[1:])
    extra = expand_extra(tuple(additional_forward_args), n + 1)
    both = torch.cat([x[:, None], perturbed.reshape(b, n, *x.shape[1:])], 1).flatten(0, 1)
    values = evaluate(
        forward, both, extra, target.repeat_interleave(n + 1), output, batch_size
    ).reshape(b, n + 1)
    diff = values[:, :1] - values[:, 1:]
    dot = (perturbations.flatten(2).to(torch.float64) * attributions.flatten(1)[:, None].to(
        torch.float64
    )).sum(-1)
    if normalize:
        beta = (dot * diff).mean(1) / (dot * dot).mean(1).clamp_min(1e-300)
        dot = dot * beta[:, None]
    return (dot - diff).pow(2).mean(1)
