"""``dlbacktrace demo``: train a small CNN on the 8x8 digits, explain it, write a report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from dlbacktrace.apps.cli.common import console

__all__ = ["demo"]


def demo(
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for the figures, report and summary.")
    ] = Path("demo-output"),
    examples: Annotated[
        int, typer.Option("--examples", "-n", min=1, help="How many held-out digits to explain.")
    ] = 8,
    seed: Annotated[int, typer.Option(help="Seed for the data split and the training.")] = 0,
) -> None:
    """Train a small CNN on the 8x8 digits, backtrace its predictions, write an HTML report."""
    from dlbacktrace.examples.demo import run_demo

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
    if "report" in summary["files"]:
        console.print(
            f"Open [bold]{out / summary['files']['report']}[/bold] in a browser. Re-verify a "
            f"stored explanation with: dlbacktrace audit verify 1 --db {out / 'audit.db'}"
        )
