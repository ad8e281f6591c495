"""``evaluate(model, data)``: a proof of concept of the attribution methods on your own model.

Every registered method that applies (default: :data:`DEFAULT_METHODS`) explains the first
``instances`` rows of ``data``; every registered metric that applies scores the maps
(deletion/insertion/ABPC with the removal stated, faithfulness correlation, max-sensitivity,
determinism, the randomisation sanity check, time and peak memory per instance). The result
ranks the methods by faithfulness and says in plain words what the numbers show
(:mod:`~dlbacktrace.evaluation.verdicts`); with ``out=`` it writes ``report.html``,
``results.json``, ``results.csv`` and ``results.md`` there.

The built-in benchmark (:func:`~dlbacktrace.evaluation.benchmark.run_benchmark`) is
:func:`evaluate_tasks` on the bundled tasks: the same metric loop and the same files.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlbacktrace.engine.errors import DLBacktraceError
from dlbacktrace.evaluation import metrics as M
from dlbacktrace.evaluation.baselines import METHODS
from dlbacktrace.evaluation.metrics import METRICS
from dlbacktrace.evaluation.outputs import write_outputs
from dlbacktrace.evaluation.runner import TaskRunner
from dlbacktrace.evaluation.task import Task
from dlbacktrace.evaluation.user_data import user_task
from dlbacktrace.evaluation.verdicts import THRESHOLDS, verdicts

__all__ = [
    "DEFAULT_METHODS",
    "EvaluationError",
    "EvaluationResult",
    "evaluate",
    "evaluate_tasks",
    "machine",
]

logger = logging.getLogger(__name__)

DEFAULT_METHODS = ("dlb", "dlb-contrast", "integrated-gradients", "kernel-shap", "saliency",
                   "random")  # fmt: skip
DEFAULT_INSTANCES = 32


class EvaluationError(DLBacktraceError, ValueError):
    """An evaluation asked for something that does not exist (a method, metric or task)."""


def machine() -> dict[str, Any]:
    """Where the numbers came from."""
    import os
    import platform

    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "processor": platform.processor() or platform.machine(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "note": "shared machine: other jobs ran at the same time, so times are contended",
    }


def _judge(task_result: dict[str, Any]) -> None:
    """Add the ranking and the verdicts to one task's results (in place)."""
    labels = {name: metric.header for name, metric in METRICS.items()}
    judged = verdicts(task_result.get("methods", {}), M.higher_is_better(), labels)
    task_result["ranking"] = judged["ranking"]
    task_result["verdicts"] = judged["verdicts"]


def evaluate_tasks(
    tasks: Iterable[Task],
    out: str | Path | None = None,
    *,
    quick: bool = False,
    seed: int = 0,
    mode: str = "evaluate",
    progress: Callable[[str], None] | None = None,
    on_method: Callable[[str, int, int], None] | None = None,
    report: bool = False,
) -> dict[str, Any]:
    """Run every applicable method and metric on each task; the results and their files.

    Parameters
    ----------
    tasks
        The tasks (an iterator is consumed lazily, so each task's model loads in turn).
    out
        Folder for ``results.json``, ``results.csv``, ``results.md``, ``machine.json`` and
        the curve plots (rewritten after every method, so partial results survive), or None.
    quick
        Fewer samples in the sampled metrics and fewer instances for the re-explaining ones.
    seed
        Seed of the metrics' random draws and of the sampling methods.
    mode
        What the results call the run (``evaluate``, ``quick``, ``full``).
    progress
        Called with a line of text as the run proceeds (default: logged at INFO).
    on_method
        Called with ``(method, done, total)`` after each method of a task.
    report
        Also write ``report.html`` (needs jinja2).

    Returns
    -------
    dict
        ``mode``, ``seed``, ``machine``, ``higher_is_better``, ``thresholds`` and per task the
        methods' metrics (mean, std, se, n and the per-instance values), the methods left out
        with the reason, the ranking and the verdicts.
    """
    say = progress or (lambda message: logger.info(message))
    folder = None if out is None else Path(out)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "mode": mode,
        "seed": int(seed),
        "machine": machine(),
        "higher_is_better": M.higher_is_better(),
        "thresholds": dict(THRESHOLDS),
        "tasks": {},
    }
    started = time.perf_counter()
    iterator = iter(tasks)
    while True:
        t0 = time.perf_counter()
        task = next(iterator, None)
        if task is None:
            break
        runner = TaskRunner(task, quick, say, seed=seed)
        total = len(runner.methods()[0])

        def partial(task_result: dict[str, Any], name: str = task.name,
                    total: int = total) -> None:
            _judge(task_result)
            results["tasks"][name] = task_result  # every finished method is on disk at once
            if folder is not None:
                write_outputs(results, folder)
            if on_method is not None:
                done = list(task_result["methods"])
                on_method(done[-1], len(done), total)

        results["tasks"][task.name] = runner.run(partial)
        _judge(results["tasks"][task.name])
        results["tasks"][task.name]["wall_s"] = time.perf_counter() - t0
        results["wall_s"] = time.perf_counter() - started
        if folder is not None:
            write_outputs(results, folder)
    results["wall_s"] = time.perf_counter() - started
    if folder is not None and report:
        from dlbacktrace.report.evaluation import write_evaluation_report

        write_evaluation_report(results, folder)
    return results


@dataclass
class EvaluationResult:
    """What :func:`evaluate` found: plain floats and NumPy arrays, and a pandas table.

    Parameters
    ----------
    results
        The JSON-ready results (as written to ``results.json``).
    task
        The evaluated task's name in ``results["tasks"]``.
    out
        The folder the files were written to, or None.
    """

    results: dict[str, Any]
    task: str = "data"
    out: Path | None = None

    @property
    def methods(self) -> dict[str, Any]:
        """``{method: result}``: ``metrics`` (mean, std, se, n), ``values``, ``map``, ..."""
        return self.results["tasks"][self.task]["methods"]

    @property
    def ranking(self) -> list[str]:
        """The methods, most faithful first (by :attr:`ranked_by`)."""
        return list(self.results["tasks"][self.task]["ranking"]["order"])

    @property
    def ranked_by(self) -> str | None:
        """The metric the ranking uses (ABPC where it exists)."""
        return self.results["tasks"][self.task]["ranking"]["metric"]

    @property
    def verdicts(self) -> dict[str, list[str]]:
        """``{method: [plain-language verdict, ...]}``."""
        return self.results["tasks"][self.task]["verdicts"]

    @property
    def skipped(self) -> dict[str, str]:
        """``{method: reason}`` of the methods that did not apply."""
        return dict(self.results["tasks"][self.task].get("skipped") or {})

    def score(self, method: str, metric: str) -> float:
        """The mean of ``metric`` for ``method`` (NaN if it was not computed).

        Parameters
        ----------
        method, metric
            Registered names.
        """
        entry = (self.methods.get(method, {}).get("metrics") or {}).get(metric)
        return float("nan") if entry is None else float(entry["mean"])

    def values(self, method: str, metric: str) -> np.ndarray:
        """The per-instance values of ``metric`` for ``method`` (empty if not computed).

        Parameters
        ----------
        method, metric
            Registered names.
        """
        row = self.methods.get(method, {})
        return np.asarray((row.get("values") or {}).get(metric, []), dtype=np.float64)

    def to_dataframe(self) -> Any:
        """One row per method and metric: ``method, map, metric, mean, std, se, n,
        higher_is_better`` (a pandas DataFrame)."""
        import pandas as pd

        from dlbacktrace.evaluation.outputs import csv_rows

        rows = [r for r in csv_rows(self.results) if r["task"] == self.task]
        return pd.DataFrame([{k: v for k, v in r.items() if k != "task"} for r in rows])

    def __repr__(self) -> str:
        metric = self.ranked_by
        parts = [f"{m}={self.score(m, metric):.3g}" for m in self.ranking] if metric else []
        return f"EvaluationResult(ranked by {metric}: {', '.join(parts)})"


def _chosen(names: Sequence[str] | str | None, registry: Any, default: Sequence[str] | None,
            what: str) -> list[str] | None:
    if names is None:
        return None if default is None else list(default)
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in registry]
    if unknown or not names:
        raise EvaluationError(f"unknown {what} {', '.join(map(repr, unknown)) or '(none)'}; "
                              f"choose from {', '.join(registry)}")
    return list(dict.fromkeys(names))


@contextmanager
def _progress_bar(enabled: bool) -> Any:
    """A rich progress bar on stderr when asked for; yields ``(progress, on_method)``."""
    if not enabled:
        yield None, None
        return
    from rich.console import Console
    from rich.progress import Progress

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task_id = bar.add_task("Evaluating", total=None)

        def on_method(method: str, done: int, total: int) -> None:
            bar.update(task_id, completed=done, total=total)

        yield (lambda message: bar.update(task_id, description=message)), on_method


def evaluate(
    model: Any,
    data: Any,
    *,
    methods: Sequence[str] | str | None = None,
    metrics: Sequence[str] | str | None = None,
    instances: int | None = DEFAULT_INSTANCES,
    seed: int = 0,
    target: Any = None,
    removal: Any = None,
    feature_names: list[str] | None = None,
    label_column: str | None = None,
    quick: bool = False,
    options: dict[str, dict[str, Any]] | None = None,
    out: str | Path | None = None,
    progress: bool | Callable[[str], None] = False,
) -> EvaluationResult:
    """Compare attribution methods on ``model`` and ``data``: faithfulness, stability,
    determinism, randomisation, time and memory per method, ranked, with verdicts.

    Parameters
    ----------
    model
        An ``nn.Module`` returning class scores, or a
        :class:`~dlbacktrace.io.loading.LoadedModel` (its tokenizer reads texts).
    data
        A tensor or array (``[N, F]`` tables, ``[N, C, H, W]`` images), a DataFrame, a dict
        of token tensors, a list of texts, or a file/folder (CSV/parquet, image folder,
        JSONL, ``.npy``); see :mod:`~dlbacktrace.evaluation.user_data`.
    methods
        Names in :data:`~dlbacktrace.evaluation.baselines.METHODS` (a list or ``"a,b"``;
        default :data:`DEFAULT_METHODS`). Methods that do not apply to the model are left
        out with the reason (:attr:`EvaluationResult.skipped`).
    metrics
        Names in :data:`~dlbacktrace.evaluation.metrics.METRICS` (default: all that apply).
    instances
        Explain the first this many rows of ``data`` (None: all).
    seed
        Seed of the sampling methods and of the metrics' random draws: the same seed gives
        the same numbers (times and memory aside).
    target
        The explained class: None (the predicted one), an index, or one per row.
    removal
        What a removed feature becomes in the perturbation metrics (default: tables the
        column means of ``data``, images zero, text the mask or pad token); see
        :func:`~dlbacktrace.evaluation.user_data.user_task`.
    feature_names
        One name per feature (default: a table's columns).
    label_column
        A table's true-label column: left out of the features, gives the accuracy.
    quick
        Fewer samples in the sampled metrics.
    options
        ``{method: {option: value}}`` on top of the defaults (e.g. ``{"kernel-shap":
        {"n_samples": 500}}``).
    out
        Folder to write ``report.html``, ``results.json``, ``results.csv`` and ``results.md``
        to (None: nothing is written).
    progress
        True: a progress bar on stderr; a callable: called with a line of text per step.

    Returns
    -------
    EvaluationResult
        The numbers (plain floats, arrays, ``.to_dataframe()``), ranking and verdicts.
    """
    chosen_methods = _chosen(methods, METHODS, DEFAULT_METHODS, "method")
    chosen_metrics = _chosen(metrics, METRICS, None, "metric")
    task = user_task(model, data, instances=instances, target=target, removal=removal,
                     feature_names=feature_names, label_column=label_column)
    task.methods = tuple(chosen_methods)
    if chosen_metrics is not None:
        task.skip_metrics = {m: "not requested" for m in METRICS if m not in chosen_metrics}
    for name, opts in (options or {}).items():
        if name not in METHODS:
            raise EvaluationError(f"options for unknown method {name!r}")
        task.options[name] = {**task.options.get(name, {}), **opts}
    with _progress_bar(progress is True) as (bar_message, on_method):
        say = progress if callable(progress) else bar_message
        results = evaluate_tasks([task], out, quick=quick, seed=seed, mode="evaluate",
                                 progress=say, on_method=on_method, report=out is not None)
    return EvaluationResult(results, task.name, None if out is None else Path(out))
