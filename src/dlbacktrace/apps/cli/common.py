"""What every command shares: the consoles, error handling, option types and model loading.

The CLI is the only part of the package that prints; it prints through these consoles.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from dlbacktrace.engine.errors import DLBacktraceError

__all__ = [
    "DEFAULT_AUDIT",
    "AuditOpt",
    "DbOpt",
    "FactoryOpt",
    "ModelOpt",
    "TaskOpt",
    "WeightsOpt",
    "check_outputs",
    "console",
    "err_console",
    "load",
    "parse_target",
    "reported_errors",
    "write_json",
]

DEFAULT_AUDIT = Path("dlbacktrace-audit.db")
console = Console()
err_console = Console(stderr=True)


@contextmanager
def reported_errors() -> Iterator[None]:
    """Known errors become one red line and exit status 2 instead of a traceback."""
    try:
        yield
    except DLBacktraceError as exc:
        err_console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


def check_outputs(*paths: Path | None) -> None:
    """Fail before any computation if an output cannot be written (its folder is missing).

    Parameters
    ----------
    *paths
        Output files; ``None`` entries are skipped.
    """
    for path in paths:
        if path is not None and not path.parent.is_dir():
            raise typer.BadParameter(f"cannot write {path}: folder {path.parent} does not exist")


ModelOpt = Annotated[str, typer.Option(
    "--model", "-m",
    help="package.module:factory, file.py:factory, a .pt2 archive, a Hugging Face folder "
    "(with --task) or weights (.safetensors/.pt, with --factory).",
)]
TaskOpt = Annotated[str | None, typer.Option(
    help="Hugging Face task: sequence-classification, causal-lm, token-classification, ...")]
WeightsOpt = Annotated[Path | None, typer.Option(
    help="Weights for a factory: .safetensors, or a .pt state dict (loaded weights_only).")]
FactoryOpt = Annotated[str | None, typer.Option(
    help="package.module:factory that builds the model when --model is a weights file.")]
AuditOpt = Annotated[str, typer.Option(
    "--audit", help="Audit log: a SQLite path or an SQLAlchemy URL.")]
DbOpt = Annotated[str, typer.Option("--db", help="Audit log: a SQLite path or SQLAlchemy URL.")]


def load(model: str, task: str | None, weights: Path | None, factory: str | None) -> Any:
    """The model named by the ``--model/--task/--weights/--factory`` options.

    Parameters
    ----------
    model, task, weights, factory
        As for :func:`~dlbacktrace.io.loading.load_model`.
    """
    from dlbacktrace.io.loading import load_model

    return load_model(model, task=task, weights=str(weights) if weights else None,
                      factory=factory)


def parse_target(text: str | None) -> Any:
    """``--target``: a class index, a comma list of indices (one per row), or
    ``positive``/``negative``.

    Parameters
    ----------
    text
        The option's value (``None``: the predicted class).
    """
    if text is None:
        return None
    if text in ("positive", "negative"):
        return text
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise typer.BadParameter(
            f"target must be a class index, a comma list of indices, positive or negative; "
            f"got {text!r}"
        ) from None
    return values[0] if len(values) == 1 else values


def write_json(items: list[Any], out: Path | None) -> None:
    """One item as a JSON object (several as a list) to ``out``, or to stdout.

    Parameters
    ----------
    items
        JSON-ready results.
    out
        The file to write, or ``None`` for stdout.
    """
    payload = json.dumps(items[0] if len(items) == 1 else items, indent=2) + "\n"
    if out:
        out.write_text(payload, encoding="utf-8")
    else:
        sys.stdout.write(payload)
