"""``dlbacktrace compare A.npz B.npz --out DIR``: what changed between two saved global
explanations (e.g. a model before and after retraining, on the same data)."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Annotated, Any

import typer

from dlbacktrace.apps.cli.common import console, reported_errors

__all__ = ["compare", "load_global"]


def load_global(path: Path) -> Any:
    """A saved :class:`~dlbacktrace.aggregate.GlobalExplanation`, or one clear ``AggregateError``.

    Parameters
    ----------
    path
        A ``.npz`` file written by ``dlbacktrace aggregate --out`` or ``GlobalExplanation.save``.
    """
    from dlbacktrace.aggregate import AggregateError, GlobalExplanation

    if not path.is_file():
        raise AggregateError(f"{path}: no such file")
    try:
        return GlobalExplanation.load(path)
    except AggregateError:
        raise
    except (ValueError, OSError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise AggregateError(
            f"{path.name} is not a saved global explanation ({type(exc).__name__}); write one "
            "with `dlbacktrace aggregate --out FILE.npz`"
        ) from exc


def compare(
    before: Annotated[Path, typer.Argument(help="The first global explanation (.npz).")],
    after: Annotated[Path, typer.Argument(help="The second global explanation (.npz).")],
    out: Annotated[Path, typer.Option(
        "--out", "-o", help="Folder for comparison.html and comparison.json (created).")],
    names: Annotated[str | None, typer.Option(
        help="What to call the two, comma-separated (default: the file names).")] = None,
    input: Annotated[str | None, typer.Option(
        "--input", help="The input to compare, for aggregates of several inputs.")] = None,
) -> None:
    """Compare two saved global explanations: importance shifts with standard errors."""
    from dlbacktrace.aggregate import compare as run_compare
    from dlbacktrace.report import write_html
    from dlbacktrace.report.results import comparison_report

    labels = (before.stem, after.stem) if names is None else tuple(
        n.strip() for n in names.split(","))
    if len(labels) != 2 or not all(labels):
        raise typer.BadParameter(f"--names needs two comma-separated names, got {names!r}")
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"--out {out} exists and is not a folder")
    with reported_errors():
        a, b = load_global(before), load_global(after)
        cmp = run_compare(a, b, input=input, names=labels)
        out.mkdir(parents=True, exist_ok=True)
        json_path, html_path = out / "comparison.json", out / "comparison.html"
        json_path.write_text(json.dumps(cmp.to_json(), indent=2) + "\n")
        write_html(comparison_report(cmp), html_path)
    console.print(cmp.summary(), soft_wrap=True, markup=False)
    console.print(f"Comparison written to [bold]{html_path}[/bold] and [bold]{json_path}[/bold]")
