"""``dlbacktrace benchmark``: ``evaluate`` on the bundled tasks (real data and models)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlbacktrace.apps.cli.common import console, reported_errors, third_party_warnings_silenced
from dlbacktrace.evaluation.benchmark.run import TASKS

__all__ = ["benchmark"]


def _check_tasks(tasks: list[str] | None) -> None:
    from dlbacktrace.evaluation.evaluate import EvaluationError

    unknown = [t for t in tasks or [] if t not in TASKS]
    if unknown:
        raise EvaluationError(
            f"unknown task {unknown[0]!r}; choose from {', '.join(TASKS)} (to evaluate your "
            "own model: dlbacktrace evaluate --model ... --data ...)"
        )


def benchmark(
    quick: Annotated[bool, typer.Option("--quick", help="Few instances (minutes).")] = False,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("benchmark-results"),
    tasks: Annotated[list[str] | None, typer.Option(
        "--task", help=f"Task (repeatable): {', '.join(TASKS)}. Default: all.")] = None,
    instances: Annotated[int | None, typer.Option(help="Instances per task.")] = None,
) -> None:
    """DLBacktrace against other attribution methods on the bundled tasks; writes tables,
    plots and an HTML report with ranked verdicts (report.html) into --out. For your own
    model and data use `dlbacktrace evaluate`."""
    from dlbacktrace.evaluation.benchmark import run_benchmark
    from dlbacktrace.report.evaluation import write_evaluation_report

    with reported_errors(), third_party_warnings_silenced():
        _check_tasks(tasks)
        with console.status("Benchmark starting...") as status:
            results = run_benchmark(quick, out, tasks, instances,
                                    lambda message: status.update(f"Benchmark: {message}"))
            path = write_evaluation_report(results, out)
    console.print(f"Results in [bold]{out}[/bold] (results.md, results.json); report: "
                  f"[bold]{path}[/bold]")
