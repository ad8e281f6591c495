"""``dlbacktrace audit list|show|verify|verify-chain|export``: the audit log."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlbacktrace.apps.cli.common import (
    DEFAULT_AUDIT,
    DbOpt,
    FactoryOpt,
    TaskOpt,
    WeightsOpt,
    console,
    err_console,
    load,
    reported_errors,
)

__all__ = ["app"]

app = typer.Typer(help="The audit log: list, show, verify and export records.",
                  no_args_is_help=True)


@app.command("list")
def audit_list(
    db: DbOpt = str(DEFAULT_AUDIT),
    limit: Annotated[int, typer.Option(min=1)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """The newest records."""
    from dlbacktrace.audit import AuditStore

    with reported_errors(), AuditStore(db, create=False) as store:
        records = store.list(limit, offset)
        total = store.count()
    table = Table(title=f"Audit log ({total} records)")
    for col in ("id", "time", "source", "model", "input", "mode", "target", "cons. err."):
        table.add_column(col)
    for rec in records:
        s = rec.summary()
        error = s["conservation_error"]
        # generations and aggregates say so where an explanation names its input kind
        what = s["input_kind"] if s["kind"] == "explanation" else s["kind"]
        table.add_row(str(s["id"]), s["created_at"][:19], str(s["source"]), str(s["model"]),
                      f"{what or '-'} {', '.join(s['input_names'] or [])[:40]}",
                      str(s["mode"]), str(s["target"])[:30],
                      "-" if error is None else f"{error:.1e}")
    console.print(table)


@app.command("show")
def audit_show(record: int, db: DbOpt = str(DEFAULT_AUDIT)) -> None:
    """One record's full content (JSON) and chain hashes."""
    from dlbacktrace.audit import AuditStore

    with reported_errors(), AuditStore(db, create=False) as store:
        rec = store.get(record)
    sys.stdout.write(json.dumps({"id": rec.id, "hash": rec.hash, "prev_hash": rec.prev_hash,
                                 "content": rec.content}, indent=2) + "\n")


@app.command("verify")
def audit_verify(
    record: int,
    db: DbOpt = str(DEFAULT_AUDIT),
    model: Annotated[str | None, typer.Option(
        "--model", "-m", help="Override the model spec stored in the record.")] = None,
    task: TaskOpt = None,
    weights: WeightsOpt = None,
    factory: FactoryOpt = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Recompute a record and compare bit for bit (exit 1 if it differs).

    A generation is replayed by teacher forcing its recorded tokens, an aggregate by
    aggregating the data stored in the record again.
    """
    from dlbacktrace.audit import AuditStore, verify_record

    with reported_errors(), AuditStore(db, create=False) as store:
        loaded = load(model, task, weights, factory) if model else None
        with console.status(f"Recomputing record {record}..."):
            result = verify_record(store, record, loaded)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        style = "green" if result.identical and result.fingerprint_match else "red"
        console.print(f"[{style}]{result.message}[/{style}]")
    if not (result.identical and result.fingerprint_match):
        raise typer.Exit(1)


@app.command("verify-chain")
def audit_verify_chain(
    db: DbOpt = str(DEFAULT_AUDIT),
    expect_head: Annotated[str | None, typer.Option(
        help="Head hash kept elsewhere: detects records removed from the end.")] = None,
) -> None:
    """Check every record's hash and the links between records (exit 1 on tampering)."""
    from dlbacktrace.audit import AuditStore, verify_chain

    with reported_errors(), AuditStore(db, create=False) as store:
        report_ = verify_chain(store, expect_head)
    if report_.ok:
        console.print(f"[green]chain ok[/green]: {report_.count} records, head {report_.head}")
        return
    for record_id, problem in report_.problems:
        console.print(f"[red]record {record_id}[/red]: {problem}")
    raise typer.Exit(1)


@app.command("export")
def audit_export(
    db: DbOpt = str(DEFAULT_AUDIT),
    out: Annotated[Path | None, typer.Option("--out", "-o", help="JSONL file (default stdout).")]
    = None,
    blobs: Annotated[bool, typer.Option(help="Include the stored relevance and inputs "
                                             "(base64 .npz).")] = False,
) -> None:
    """Every record as one JSON line (content, hashes; optionally the blobs)."""
    import base64

    from dlbacktrace.audit import AuditStore

    with reported_errors(), AuditStore(db, create=False) as store:
        lines = []
        for rec in store.iter_records():
            item: dict[str, Any] = {"id": rec.id, "created_at": rec.created_at,
                                    "prev_hash": rec.prev_hash, "hash": rec.hash,
                                    "content": rec.content}
            if blobs:
                item["explanation_npz"] = base64.b64encode(rec.explanation_blob).decode()
                item["inputs_npz"] = base64.b64encode(rec.inputs_blob).decode()
            lines.append(json.dumps(item, sort_keys=True))
    text = "\n".join(lines) + ("\n" if lines else "")
    if out:
        out.write_text(text, encoding="utf-8")
        err_console.print(f"{len(lines)} records written to {out}")
    else:
        sys.stdout.write(text)
