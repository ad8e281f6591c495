"""Command line interface: ``dlbacktrace COMMAND ...``.

One typer app with one function per sub-command, so more commands (explain, report, ...) can be
added next to ``demo`` without changing how the existing ones are called. This is the only
module of the package that prints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(
    name="dlbacktrace",
    help="DLBacktrace: deterministic relevance backtracing for PyTorch models.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def _root() -> None:
    """DLBacktrace: deterministic relevance backtracing for PyTorch models."""
    # An explicit callback keeps sub-command syntax (``dlbacktrace demo``) even while ``demo``
    # is the only command; without it typer would run the single command directly.


@app.command()
def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the figures and summary.json.")
    ] = Path("demo-output"),
    examples: Annotated[
        int, typer.Option("--examples", "-n", min=1, help="How many held-out digits to explain.")
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed for the data split and the training.")] = 0,
) -> None:
    """Train a small CNN on the 8x8 digits and backtrace its predictions (a few seconds)."""
    from dlbacktrace.demo import run_demo

    console = Console()
    with console.status("Training a small CNN on scikit-learn's digits and explaining it..."):
        summary = run_demo(out, n_examples=examples, seed=seed)

    console.print(
        f"Test accuracy: [bold]{summary['accuracy']:.1%}[/bold] "
        f"({summary['n_test']} held-out digits, trained in {summary['train_seconds']:.1f}s)"
    )
    table = Table(
        title="Explained digits (target = predicted class)",
        caption="cons. err.: relative conservation error of the relevance (0 = exact)",
    )
    table.add_column("#", justify="right")
    table.add_column("true", justify="right")
    table.add_column("predicted", justify="right")
    table.add_column("cons. err. (default)", justify="right")
    table.add_column("cons. err. (contrast)", justify="right")
    for k, ex in enumerate(summary["examples"]):
        mark = "" if ex["correct"] else " [red]x[/red]"
        table.add_row(
            str(k),
            str(ex["true_label"]),
            f"{ex['predicted']}{mark}",
            f"{ex['conservation_error']:.2e}",
            f"{ex['conservation_error_contrast']:.2e}",
        )
    console.print(table)
    console.print(f"Files written to [bold]{out}[/bold]:")
    for name in summary["files"].values():
        console.print(f"  {out / name}")


def main() -> None:
    """Entry point of the ``dlbacktrace`` console script."""
    app()


if __name__ == "__main__":
    main()
