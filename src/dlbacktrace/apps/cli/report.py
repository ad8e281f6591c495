"""``dlbacktrace report``: an HTML report for an audit record or a saved JSON result."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from dlbacktrace.apps.cli.common import (
    DEFAULT_AUDIT,
    DbOpt,
    check_outputs,
    console,
    reported_errors,
)

__all__ = ["report"]


def report(
    record: Annotated[int | None, typer.Option(help="Audit record id to report on.")] = None,
    db: DbOpt = str(DEFAULT_AUDIT),
    source: Annotated[Path | None, typer.Option(
        "--from", help="A JSON result of 'benchmark', 'aggregate' or 'explain --format json'.")
    ] = None,
    out: Annotated[Path, typer.Option("--out", "-o")] = Path("report.html"),
) -> None:
    """Write a self-contained HTML report for an audit record or a saved JSON result."""
    from dlbacktrace.report import write_html
    from dlbacktrace.report.results import report_from_json

    if (record is None) == (source is None):
        raise typer.BadParameter("give exactly one of --record or --from")
    check_outputs(out)
    with reported_errors():
        if record is not None:
            from dlbacktrace.apps.server.service import record_report
            from dlbacktrace.audit import AuditStore

            with AuditStore(db, create=False) as store:
                html = record_report(store.get(record))
        else:
            html = report_from_json(json.loads(source.read_text(encoding="utf-8")))
        write_html(html, out)
    console.print(f"Report written to [bold]{out}[/bold]")
