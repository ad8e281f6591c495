"""The metric loop: every registered method that applies, scored with every metric that applies.

Methods and metrics describe themselves (:data:`~dlbacktrace.evaluation.baselines.METHODS`,
:data:`~dlbacktrace.evaluation.metrics.METRICS`): per task the runner takes the registered
methods that apply, and for each method's maps builds one
:class:`~dlbacktrace.evaluation.metrics.EvaluationContext` and computes every registered metric
whose needs it meets. Registering a method or a metric is all it takes to evaluate it, on a
user's own model and data (:func:`~dlbacktrace.evaluation.evaluate.evaluate`) as on the
benchmark's bundled tasks.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.evaluation import metrics as M
from dlbacktrace.evaluation.baselines import METHODS, Method, get_method
from dlbacktrace.evaluation.metrics import METRICS, Metric
from dlbacktrace.evaluation.task import MASK_DELETED, Task

logger = logging.getLogger(__name__)


def finite_values(values: torch.Tensor) -> list[float]:
    """The finite per-instance values as plain floats (what result files and verdicts read).

    Parameters
    ----------
    values
        A metric's values, ``[B]`` (or ``[1]`` for a value of the whole run).
    """
    v = values.detach().to(torch.float64).flatten().cpu()
    return [float(x) for x in v[torch.isfinite(v)]]


def stats(values: list[float]) -> dict[str, float]:
    """Mean, std, standard error of the mean and count of ``values`` (a constant series
    exactly: v, 0, 0); NaN and n = 0 when there are none.

    Parameters
    ----------
    values
        Finite values, one per instance.
    """
    n = len(values)
    if n == 0:
        return {"mean": float("nan"), "std": float("nan"), "se": float("nan"), "n": 0}
    if all(v == values[0] for v in values):
        return {"mean": float(values[0]), "std": 0.0, "se": 0.0, "n": n}
    t = torch.tensor(values, dtype=torch.float64)
    std = float(t.std())
    return {"mean": float(t.mean()), "std": std, "se": std / math.sqrt(n), "n": n}


def top_features(
    maps: torch.Tensor, names: list[str] | None, valid: torch.Tensor | None, k: int = 10
) -> list[dict[str, Any]]:
    """The ``k`` input elements with the largest mean |attribution| over the instances.

    Parameters
    ----------
    maps
        ``[B, ...]`` attributions.
    names
        One name per element of a map (None: the element's index).
    valid
        Elements that count (text: real tokens), or None for all.
    k
        How many.
    """
    a = maps.detach().to(torch.float64).abs()
    if valid is not None:
        a = a * valid[: a.shape[0]].to(a)
    mean = a.flatten(1).mean(0)
    order = torch.argsort(mean, descending=True, stable=True)[:k]
    label = (lambda j: names[j]) if names and len(names) == mean.numel() else str
    return [{"feature": label(int(j)), "mean_abs": float(mean[j])} for j in order]


class TaskRunner:
    """Runs the registered methods and metrics that apply on one task.

    Parameters
    ----------
    task
        The task.
    quick
        Fewer samples in the sampled metrics and fewer instances for the re-explaining ones.
    progress
        Called with a line of text before each method.
    seed
        Seed of the metrics' random draws and of the sampling methods.
    """

    def __init__(
        self, task: Task, quick: bool, progress: Callable[[str], None] | None = None,
        seed: int = 0,
    ) -> None:
        self.task = task
        self.quick = quick
        self.seed = int(seed)
        self.progress = progress or (lambda message: logger.info(message))
        # Method.setup per (method class, model): both DLBacktrace modes share one capture of
        # the task's model, and the randomisation cascade changes its copy's weights in place
        # (the engine reads live parameters), so one capture serves every step.
        self._setups: dict[tuple[type, bool], tuple[nn.Module, dict[str, Any]]] = {}

    def _setup(self, method: Method, model: nn.Module) -> dict[str, Any]:
        key = (type(method), model is self.task.model)
        held = self._setups.get(key)
        if held is None or held[0] is not model:
            held = (model, method.setup(model))
            self._setups[key] = held
        return held[1]

    # ---- explanation -----------------------------------------------------------------------
    def explain(
        self, method: Method, inputs: Any, target: torch.Tensor, model: nn.Module | None = None,
        **extra: Any,
    ) -> tuple[torch.Tensor, Explanation]:
        """The map (shaped like the perturbed inputs) and the Explanation of ``inputs``.

        Parameters
        ----------
        method
            The method.
        inputs
            Model inputs (a tensor, or a dict of token tensors).
        target
            The class per row.
        model
            Another model to explain (default: the task's), e.g. a randomised copy.
        **extra
            Options on top of the task's options for the method (e.g. ``seed``).
        """
        task = self.task
        model = task.model if model is None else model
        seeded = {"seed": self.seed} if method.sampling else {}
        opts = {**seeded, **self._setup(method, model), **task.options.get(method.name, {}),
                **extra}
        exp = method.attribute(model, inputs, target, **opts)
        if task.tokens:
            return exp.relevance_by_name["input_ids"].detach(), exp
        rel = exp.relevance
        return (rel if isinstance(rel, torch.Tensor) else rel[0]).detach(), exp

    def explain_all(
        self, method: Method, count: int, model: nn.Module | None = None, **extra: Any
    ) -> tuple[torch.Tensor, list[Explanation]]:
        """Maps for the first ``count`` instances in fixed-size chunks (the last one padded, so
        a method that captures the model sees one input signature), and the Explanations.

        Parameters
        ----------
        method
            The method.
        count
            How many instances, from the first.
        model
            Another model to explain (default: the task's).
        **extra
            Options on top of the task's options for the method.
        """
        task = self.task
        inputs, target = task.subset(count)
        # one batch shape for every call, reruns included: batched kernels may round
        # differently for another batch size, which determinism would count as a difference
        size = min(task.chunk, self.count(method))
        maps, exps = [], []
        for start in range(0, count, size):
            idx = torch.arange(start, start + size).clamp_max(count - 1)
            part = {k: v[idx] for k, v in inputs.items()} if task.tokens else inputs[idx]
            m, exp = self.explain(method, part, target[idx], model=model, **extra)
            keep = min(size, count - start)
            maps.append(m[:keep])
            exps.append(exp)
        return torch.cat(maps), exps

    def count(self, method: Method) -> int:
        """Instances explained with ``method`` (fewer for the costly sampling methods).

        Parameters
        ----------
        method
            The method.
        """
        return min(self.task.n, self.task.limits.get(method.name, self.task.n))

    # ---- selection -------------------------------------------------------------------------
    def methods(self) -> tuple[list[Method], dict[str, str]]:
        """The methods to run, and ``{name: reason}`` of those left out."""
        task = self.task
        names = list(METHODS) if task.methods is None else list(task.methods)
        probe = task.subset(1)[0]
        chosen, skipped = [], {}
        for name in names:
            method = get_method(name)
            if name in task.skip_methods:
                skipped[name] = task.skip_methods[name]
            elif not method.applies_to(task.model, probe):
                skipped[name] = "not applicable" + (
                    f": needs {method.requires}" if method.requires else ""
                )
            else:
                chosen.append(method)
        return chosen, skipped

    def metrics(self) -> list[Metric]:
        """The registered metrics this task evaluates (each still has to apply per method)."""
        task = self.task
        return [
            m for m in METRICS.values()
            if m.name not in task.skip_metrics
            and (task.categories is None or m.category in task.categories)
        ]  # fmt: skip

    # ---- one method ------------------------------------------------------------------------
    def context(
        self, method: Method, maps: torch.Tensor, exps: list[Explanation], cost: M.Cost
    ) -> M.EvaluationContext:
        """What the metrics may use for ``method``'s maps of the first ``len(maps)`` instances.

        Parameters
        ----------
        method
            The method that made the maps (re-explaining metrics call it again).
        maps
            The maps, shaped like the perturbed inputs.
        exps
            Their Explanations (ledgers).
        cost
            Time and memory of computing them.
        """
        task = self.task
        n = maps.shape[0]
        return M.EvaluationContext(
            model=task.model,
            inputs=task.perturb_x[:n],
            targets=task.target[:n],
            attributions=maps,
            method=method,
            forward=task.forward,
            additional_forward_args=tuple(e[:n] for e in task.extra),
            valid_elements=None if task.valid_elements is None else task.valid_elements[:n],
            feature_mask=None if task.feature_mask is None else task.feature_mask[:n],
            removal=task.removal,
            masked_forward=task.forward_masked if task.mask_deletion else None,
            masked_removal=MASK_DELETED,
            model_inputs=task.subset(n)[0],
            explain_instances=lambda count, **extra: self.explain_all(method, count, **extra)[0],
            explain_inputs=lambda inputs, targets, model=None: self.explain(
                method, inputs, targets, model=model
            )[0],
            explanations=exps,
            cost=cost,
            reexplain_count=4 if self.quick else (8 if method.sampling else 16),
            quick=self.quick,
            seed=self.seed,
            steps=task.steps,
            fractions=task.fractions,
            eraser_bins=task.eraser_bins,
            randomise_layers=task.randomise_layers,
            batch_size=64 if task.tokens else 512,
        )

    def run_method(self, method: Method) -> dict[str, Any]:
        """Explain the task's instances with ``method`` (timed) and score the maps with every
        metric that applies.

        Parameters
        ----------
        method
            The method.

        Returns
        -------
        dict
            ``map`` (how the map reads), ``instances``, ``metrics`` (mean, std, n per metric)
            and the metrics' details (mean curves, per-layer randomisation similarity).
        """
        task = self.task
        n = self.count(method)
        # warm-up: the capture of a capturing method, first-call overheads for the others
        t0 = time.perf_counter()
        if method.captures_graph:
            self.explain_all(method, min(n, task.chunk))
        else:
            self.explain(method, *task.subset(1))
        warm = time.perf_counter() - t0
        cost = M.measure(lambda: self.explain_all(method, n))
        maps, exps = cost.result
        res: dict[str, Any] = {"map": method.map_kind, "instances": n}
        if method.captures_graph:
            res["first_call_s"] = warm
        ctx = self.context(method, maps, exps, cost)
        scores = M.evaluate(ctx, self.metrics())
        values = {name: finite_values(v) for name, v in scores.items()}
        res["metrics"] = {name: stats(v) for name, v in values.items()}
        res["values"] = values  # per instance, for paired comparisons between methods
        if not task.tokens:  # token positions differ in meaning from text to text
            res["top_features"] = top_features(maps, task.feature_names, task.valid_elements)
        self._setups = {k: v for k, v in self._setups.items() if k[1]}  # randomised copies
        res.update(ctx.details)  # mean curves, per-layer randomisation similarities
        return res

    def run(self, on_method: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Every method that applies; a failing method is reported and the rest still run.

        Parameters
        ----------
        on_method
            Called with the task's results so far after each method (to write them).
        """
        task = self.task
        methods, skipped = self.methods()
        result: dict[str, Any] = {
            "description": task.description,
            "instances": task.n,
            "removal": task.removal_note,
            "info": task.info,
            "methods": {},
            "skipped": skipped,
        }
        for method in methods:
            self.progress(f"{task.name}: {method.name}")
            t0 = time.perf_counter()
            try:
                # the peers' own warnings (Captum's requires_grad notes, LIME's multi-input
                # advice) reach the caller's warning filters; the CLI silences them
                result["methods"][method.name] = self.run_method(method)
            except Exception as exc:  # a failing method is reported, the rest still run
                logger.warning("%s / %s failed: %s", task.name, method.name, exc)
                result["methods"][method.name] = {"error": f"{type(exc).__name__}: {exc}"}
            result["methods"][method.name]["wall_s"] = time.perf_counter() - t0
            if on_method is not None:
                on_method(result)
        return result


__all__ = ["TaskRunner", "finite_values", "stats", "top_features"]
