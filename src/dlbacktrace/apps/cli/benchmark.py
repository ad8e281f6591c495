"""``dlbacktrace benchmark``: DLBacktrace against other attribution methods on real data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from dlbacktrace.apps.cli.common import console, reported_errors

__all__ = ["benchmark"]


def benchmark(
    quick: Annotated[bool, typer.Option("--quick", help="Few instances (minutes).")] = False,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("benchmark-results"),
    tasks: Annotated[list[str] | None, typer.Option("--task", help="Task (repeatable).")]
    = None,
    instances: Annotated[int | None, typer.Option(help="Instances per task.")] = None,
) -> None:
    """DLBacktrace against other attribution methods on real data; writes tables, plots and
    an HTML report (report.html) into --out."""
    from dlbacktrace.evaluation.benchmark import run_benchmark
    from dlbacktrace.report import write_html
    from dlbacktrace.report.results import benchmark_report

    with reported_errors(), console.status("Benchmark starting...") as status:
        results = run_benchmark(quick, out, tasks, instances,
                                lambda message: status.update(f"Benchmark: {message}"))
        path = write_html(benchmark_report(results, str(out)), out / "report.html")
    console.print(f"Results in [bold]{out}[/bold] (results.md, results.json); report: "
                  f"[bold]{path}[/bold]")
