"""Command line interface: ``dlbacktrace COMMAND ...``.

One module per command group (``explain``, ``report``, ``serve``, ``audit``, ``aggregate``,
``compare``, ``evaluate``, ``benchmark``, ``demo``); this package assembles them into one
typer app. Adding a command is one module and two lines below (its import and registration).
Explanations made here are recorded in the audit log (``--audit``, on by default). The CLI
is the only part of the package that prints.
"""

from __future__ import annotations

import typer

from dlbacktrace.apps.cli import aggregate as aggregate_command
from dlbacktrace.apps.cli import audit as audit_commands
from dlbacktrace.apps.cli import benchmark as benchmark_command
from dlbacktrace.apps.cli import compare as compare_command
from dlbacktrace.apps.cli import demo as demo_command
from dlbacktrace.apps.cli import evaluate as evaluate_command
from dlbacktrace.apps.cli import explain as explain_command
from dlbacktrace.apps.cli import report as report_command
from dlbacktrace.apps.cli import serve as serve_command

__all__ = ["app", "main"]

app = typer.Typer(
    name="dlbacktrace",
    help="DLBacktrace: deterministic relevance backtracing for PyTorch models.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """DLBacktrace: deterministic relevance backtracing for PyTorch models."""


app.command()(explain_command.explain)
app.command()(report_command.report)
app.command()(serve_command.serve)
app.add_typer(audit_commands.app, name="audit")
app.command()(aggregate_command.aggregate)
app.command()(compare_command.compare)
app.command()(evaluate_command.evaluate)
app.command()(benchmark_command.benchmark)
app.command()(demo_command.demo)


def main() -> None:
    """Entry point of the ``dlbacktrace`` console script."""
    app()
