"""The benchmark: :func:`~dlbacktrace.evaluation.evaluate.evaluate_tasks` on the bundled tasks.

The tasks (:mod:`.tasks`) are real data and models trained in the run with fixed seeds; the
metric loop, the verdicts and the result files are the ones ``evaluate`` uses on a user's
own model and data.

``run_benchmark(quick, out)`` writes ``results.json``, ``results.csv``, ``results.md``,
``curves_<task>.png`` and ``machine.json`` to ``out`` and returns the results dictionary.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dlbacktrace.evaluation.benchmark import tasks as T
from dlbacktrace.evaluation.evaluate import EvaluationError, evaluate_tasks, machine
from dlbacktrace.evaluation.runner import TaskRunner

__all__ = ["TASKS", "TaskRunner", "build_task", "machine", "run_benchmark"]

logger = logging.getLogger(__name__)

TASKS = ("tabular", "image", "text", "generation", "resnet18-cost")
# LIME and KernelSHAP on the transformers run on fewer instances (Task.limits; the tables say
# how many): each instance costs hundreds of full forward passes.
FULL_INSTANCES = {"tabular": 200, "image": 200, "text": 100, "generation": 100}
QUICK_INSTANCES = {"tabular": 16, "image": 16, "text": 4, "generation": 2}


def build_task(name: str, n: int, quick: bool, models: dict[str, Any]) -> T.Task:
    """The benchmark task ``name`` (one of :data:`TASKS`) on ``n`` instances.

    Parameters
    ----------
    name
        The task.
    n
        Instances to explain.
    quick
        Smaller training runs and sample counts.
    models
        Already loaded models (see :func:`run_benchmark`).
    """
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
    raise EvaluationError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")


def run_benchmark(
    quick: bool,
    out: Path,
    tasks: list[str] | tuple[str, ...] | None = None,
    instances: int | None = None,
    progress: Callable[[str], None] | None = None,
    models: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the benchmark and write its tables and plots to ``out``.

    Parameters
    ----------
    quick
        Few instances and samples (minutes); full mode: ≥100 instances per task where cost
        allows.
    out
        Folder for ``results.json``, ``results.csv``, ``results.md``, the curve plots and
        ``machine.json`` (created if missing; rewritten after every method).
    tasks
        Names from :data:`TASKS` (None: all).
    instances
        Instances per task, overriding the mode's count.
    progress
        Called with a line of text as the run proceeds (default: logged at INFO).
    models
        Already loaded models: ``{"text": (model, tokenizer, info), "generation": (model,
        tokenizer)}``.

    Returns
    -------
    dict
        The results: per task, per method the metrics' mean, std, se and n (and the
        per-instance values), the methods left out with the reason (``"skipped"``), the
        ranking and the verdicts.
    """
    chosen = tuple(tasks) if tasks else TASKS
    for name in chosen:
        if name not in TASKS:
            raise EvaluationError(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    say = progress or (lambda message: logger.info(message))
    counts = QUICK_INSTANCES if quick else FULL_INSTANCES

    def built() -> Iterator[T.Task]:
        for name in chosen:
            n = instances or counts.get(name, 1)
            say(f"{name}: preparing ({n} instances)")
            yield build_task(name, n, quick, models or {})

    return evaluate_tasks(built(), out, quick=quick, mode="quick" if quick else "full",
                          progress=say)
