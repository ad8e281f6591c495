"""Run every applicable method × metric on the benchmark's tasks and write the results.

``run_benchmark(quick, out)`` writes ``results.json``, ``results.csv``, ``results.md``,
``curves_<task>.png`` and ``machine.json`` to ``out`` and returns the results dictionary.
"""

from __future__ import annotations

import logging
import os
import platform
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dlbacktrace.engine.backtrace import Backtrace
from dlbacktrace.evaluation import metrics as M
from dlbacktrace.evaluation.baselines import SAMPLING, SIGNED, applicable, explain
from dlbacktrace.evaluation.benchmark import tasks as T
from dlbacktrace.evaluation.benchmark.report import write_outputs

logger = logging.getLogger(__name__)

TASKS = ("tabular", "image", "text", "generation", "resnet18-cost")
# LIME and KernelSHAP on the transformers run on fewer instances (Task.limits; the tables say
# how many): each instance costs hundreds of full forward passes.
FULL_INSTANCES = {"tabular": 200, "image": 200, "text": 100, "generation": 100}
# Metrics also computed with tokens deleted through the attention mask (Task.mask_deletion).
MASK_METRICS = ("deletion_auc", "lerf_auc", "insertion_auc", "abpc", "faithfulness_correlation")
QUICK_INSTANCES = {"tabular": 16, "image": 16, "text": 4, "generation": 2}


def machine() -> dict[str, Any]:
    """Where the numbers came from."""
    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "note": "shared machine: other jobs ran at the same time, so times are contended",
    }


def _stats(values: torch.Tensor) -> dict[str, float]:
    v = values.detach().to(torch.float64).flatten()
    v = v[torch.isfinite(v)]
    if v.numel() == 0:
        return {"mean": float("nan"), "std": float("nan"), "n": 0}
    std = float(v.std()) if v.numel() > 1 else 0.0
    return {"mean": float(v.mean()), "std": std, "n": int(v.numel())}


def _first_or_rerun(runs: Any, runner: _Runner, method: str, count: int) -> torch.Tensor:
    first = next(runs, None)
    return first if first is not None else runner.explain_all(method, count)[0]


class _Runner:
    def __init__(self, task: T.Task, quick: bool, progress: Callable[[str], None]) -> None:
        self.task = task
        self.quick = quick
        self.progress = progress
        self.bt = Backtrace(task.model)
        self._other: tuple[nn.Module, Backtrace] | None = None  # the randomised copy's

    def _backtrace(self, model: nn.Module) -> Backtrace:
        """One Backtrace per model: the randomisation cascade changes its copy's weights in
        place, and the engine reads live parameters, so one capture serves every step."""
        if model is self.task.model:
            return self.bt
        if self._other is None or self._other[0] is not model:
            self._other = (model, Backtrace(model))
        return self._other[1]

    # ---- explanation -----------------------------------------------------------------------
    def _map(self, method: str, inputs: Any, target: torch.Tensor, model=None, **extra) -> Any:
        task = self.task
        model = task.model if model is None else model
        opts = dict(task.options.get(method, {}))
        opts.update(extra)
        if method.startswith("dlb"):
            opts["backtrace"] = self._backtrace(model)
        exp = explain(model, inputs, method=method, target=target, **opts)
        if task.tokens:
            return exp.relevance_by_name["input_ids"].detach(), exp
        rel = exp.relevance
        return (rel if isinstance(rel, torch.Tensor) else rel[0]).detach(), exp

    def explain_all(
        self, method: str, count: int, model: Any = None, **extra: Any
    ) -> tuple[torch.Tensor, list]:
        """Maps for the first ``count`` instances in fixed-size chunks (the last one padded, so
        DLBacktrace captures one input signature)."""
        task = self.task
        inputs, target = task.subset(count)
        # DLBacktrace captures once per input shape: keep every chunk the same size
        size = min(task.chunk, self.count(method) if method.startswith("dlb") else count)
        maps, exps = [], []
        for start in range(0, count, size):
            idx = torch.arange(start, start + size).clamp_max(count - 1)
            part = {k: v[idx] for k, v in inputs.items()} if task.tokens else inputs[idx]
            m, exp = self._map(method, part, target[idx], model=model, **extra)
            keep = min(size, count - start)
            maps.append(m[:keep])
            exps.append(exp)
        return torch.cat(maps), exps

    def count(self, method: str) -> int:
        """Instances explained with ``method`` (fewer for the costly sampling methods)."""
        return min(self.task.n, self.task.limits.get(method, self.task.n))

    # ---- one method ------------------------------------------------------------------------
    def run_method(self, method: str) -> dict[str, Any]:
        task = self.task
        n = self.count(method)
        # warm-up: capture for DLBacktrace, first-call overheads for the others
        t0 = time.perf_counter()
        self.explain_all(method, min(n, task.chunk) if method.startswith("dlb") else 1)
        warm = time.perf_counter() - t0
        cost = M.measure(lambda: self.explain_all(method, n))
        maps, exps = cost.result
        res: dict[str, Any] = {
            "map": "signed" if method in SIGNED else "unsigned",
            "instances": n,
            "metrics": {},
        }
        if method == "dlb-contrast":
            res["map"] = "signed (contrast net = positive - negative)"
        elif method == "dlb":
            res["map"] = "unsigned (default mode)"
        out = res["metrics"]
        out["time_per_instance_ms"] = {"mean": 1000 * cost.seconds / n, "std": 0.0, "n": n}
        out["peak_memory_mb"] = {"mean": cost.peak_memory_mb, "std": 0.0, "n": 1}
        if method.startswith("dlb"):
            res["first_call_s"] = warm
        if task.metrics == ("cost",):
            return res
        x = task.perturb_x[:n]
        target = task.target[:n]
        extra = tuple(e[:n] for e in task.extra)
        valid = None if task.valid_elements is None else task.valid_elements[:n]
        batch = 64 if task.tokens else 512
        common = dict(removal=task.removal, additional_forward_args=extra,
                      valid_elements=valid, batch_size=batch)  # fmt: skip
        if "curves" in task.metrics:
            c = M.curves(task.forward, x, maps, target, steps=task.steps,
                         fractions=task.fractions, **common)
            for name in ("deletion_auc", "lerf_auc", "insertion_auc", "abpc"):
                out[name] = _stats(getattr(c, name))
            res["curves"] = {
                "fractions": c.fractions.tolist(),
                "morf": c.morf.mean(0).tolist(),
                "lerf": c.lerf.mean(0).tolist(),
                "insertion": c.insertion.mean(0).tolist(),
            }
        if task.mask_deletion and "curves" in task.metrics:
            masked = dict(common, removal=T.MASK_DELETED)
            cm = M.curves(task.forward_masked, x, maps, target, steps=task.steps,
                          fractions=task.fractions, **masked)
            for name in ("deletion_auc", "lerf_auc", "insertion_auc", "abpc"):
                out[f"{name}_mask"] = _stats(getattr(cm, name))
            if "faithfulness_correlation" in task.metrics:
                v = M.faithfulness_correlation(task.forward_masked, x, maps, target,
                                               n_samples=12, **masked)
                out["faithfulness_correlation_mask"] = _stats(v)
        if "eraser" in task.metrics:
            if task.eraser_bins is not None and "curves" in task.metrics:
                scores = c.eraser(task.eraser_bins)
            else:
                scores = M.eraser(task.forward, x, maps, target, **common)
            for name, v in scores.items():
                out[name] = _stats(v)
        if "faithfulness_correlation" in task.metrics:
            samples = 12 if task.tokens else (20 if self.quick else 50)
            v = M.faithfulness_correlation(task.forward, x, maps, target, n_samples=samples,
                                           **common)
            out["faithfulness_correlation"] = _stats(v)
        if "infidelity" in task.metrics:
            v = M.infidelity(task.forward, x, maps, target, n_samples=16 if self.quick else 32,
                             batch_size=batch, noise_std=0.1 * float(x.std()))
            out["infidelity"] = _stats(v)
        if "complexity" in task.metrics:
            masked = maps if valid is None else maps * valid.to(maps.dtype)
            out["sparseness"] = _stats(M.sparseness(masked))
            out["entropy"] = _stats(M.entropy(masked))
        if "conservation" in task.metrics and method.startswith("dlb"):
            out["conservation_error"] = _stats(
                torch.tensor([M.conservation_error(e) for e in exps])
            )
        small = min(n, 4 if self.quick else (8 if method in SAMPLING else 16))
        if "stability" in task.metrics:
            # the first run is the measured one (default seed 0): one rerun / two more seeds
            runs = iter([maps[:small]])
            out["determinism"] = _stats(M.determinism(
                lambda: _first_or_rerun(runs, self, method, small),
                runs=2,
            ))
            if method in SAMPLING:
                out["run_variance"] = _stats(M.run_variance(
                    lambda s: maps[:small] if s == 0 else self.explain_all(method, small, seed=s)[0]
                ))
        if "sensitivity" in task.metrics:
            xs = x[:small]
            ts = target[:small]
            samples = 3 if self.quick else 5
            radius = 0.02 * float(x.max() - x.min())

            def explain_fn(z: torch.Tensor) -> torch.Tensor:
                reps = z.shape[0] // xs.shape[0]
                return self._map(method, z, ts.repeat_interleave(reps))[0]

            s = M.sensitivities(explain_fn, xs, n_samples=samples, radius=radius,
                                reference=maps[:small])  # fmt: skip
            out["max_sensitivity"] = _stats(s.amax(1))
            out["avg_sensitivity"] = _stats(s.mean(1))
        # DLBacktrace distributes a unit seed (relevance as shares of the output, with bias
        # absorption in its ledger), so completeness against f(x) - f(x0) does not apply to it
        if "completeness" in task.metrics and method in SIGNED and not method.startswith("dlb"):
            out["completeness_error"] = _stats(self.completeness(maps, x, target))
        if "randomisation" in task.metrics:
            xs, ts = task.subset(small)

            def explain_model(model: nn.Module) -> torch.Tensor:
                return self._map(method, xs, ts, model=model)[0]

            sims = M.cascading_randomisation(
                task.model, explain_model, layers=task.randomise_layers, seed=0
            )
            self._other = None
            out["randomisation_similarity"] = _stats(M.randomisation_score(sims))
            res["randomisation_layers"] = {k: float(v.mean()) for k, v in sims.items()}
        return res

    def completeness(self, maps: torch.Tensor, x: torch.Tensor, target: torch.Tensor):
        """``|Σ map − (f(x) − f(x₀))| / |f(x) − f(x₀)|`` on the target score, with x₀ every
        feature removed: the reference IG and DeepLift use here (float inputs)."""
        reference = M.removal_value(x, self.task.removal)
        with torch.no_grad():
            fx = self.task.forward(x).gather(1, target[:, None])[:, 0]
            f0 = self.task.forward(reference).gather(1, target[:, None])[:, 0]
        return M.completeness_error(maps, fx, f0)

    def run(self, on_method: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        task = self.task
        result: dict[str, Any] = {
            "description": task.description,
            "instances": task.n,
            "removal": task.removal_note,
            "info": task.info,
            "methods": {},
        }
        probe = task.subset(1)[0]
        for method in task.methods:
            if not applicable(method, probe, task.model):
                continue
            self.progress(f"{task.name}: {method}")
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    result["methods"][method] = self.run_method(method)
            except Exception as exc:  # a failing method is reported, the rest still run
                logger.warning("%s / %s failed: %s", task.name, method, exc)
                result["methods"][method] = {"error": f"{type(exc).__name__}: {exc}"}
            result["methods"][method]["wall_s"] = time.perf_counter() - t0
            if on_method is not None:
                on_method(result)
        return result


def _build(name: str, n: int, quick: bool, models: dict[str, Any]) -> T.Task:
    if name == "tabular":
        return T.tabular_task(n, quick)
    if name == "image":
        return T.image_task(n, quick)
    if name == "text":
        return T.text_task(n, quick, models.get("text"))
    if name == "generation":
        return T.generation_task(n, quick, models.get("generation"))
    if name == "resnet18-cost":
        return T.cost_task(quick)
    raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")


def run_benchmark(
    quick: bool,
    out: Path,
    tasks: list[str] | tuple[str, ...] | None = None,
    instances: int | None = None,
    progress: Callable[[str], None] | None = None,
    models: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write its tables and plots to ``out``.

    ``quick``: few instances and samples (minutes); full mode: ≥100 instances per task where
    cost allows. ``instances`` overrides the per-task count. ``models`` may hold already
    loaded models: ``{"text": (model, tokenizer, info), "generation": (model, tokenizer)}``.
    """
    chosen = tuple(tasks) if tasks else TASKS
    for name in chosen:
        if name not in TASKS:
            raise ValueError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    progress = progress or (lambda message: logger.info(message))
    counts = QUICK_INSTANCES if quick else FULL_INSTANCES
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "mode": "quick" if quick else "full",
        "machine": machine(),
        "higher_is_better": {
            **M.HIGHER_IS_BETTER,
            **{f"{k}_mask": M.HIGHER_IS_BETTER[k] for k in MASK_METRICS},
        },
        "tasks": {},
    }
    started = time.perf_counter()
    for name in chosen:
        n = instances or counts.get(name, 1)
        progress(f"{name}: preparing ({n} instances)")
        t0 = time.perf_counter()
        task = _build(name, n, quick, models or {})

        def partial(task_result: dict[str, Any], name: str = name) -> None:
            results["tasks"][name] = task_result  # every finished method is on disk at once
            write_outputs(results, out)

        results["tasks"][name] = _Runner(task, quick, progress).run(partial)
        results["tasks"][name]["wall_s"] = time.perf_counter() - t0
        results["wall_s"] = time.perf_counter() - started
        write_outputs(results, out)  # partial results survive an interrupted run
    return results
