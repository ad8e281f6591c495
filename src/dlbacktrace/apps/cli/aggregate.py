"""``dlbacktrace aggregate``: a data set's global explanation (per-class relevance
statistics per feature)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlbacktrace.apps.cli.common import (
    DEFAULT_AUDIT,
    AuditOpt,
    FactoryOpt,
    ModelOpt,
    TaskOpt,
    WeightsOpt,
    check_outputs,
    console,
    err_console,
    load,
    parse_target,
    reported_errors,
)

__all__ = ["aggregate", "feature_table", "read_data"]


def aggregate(
    data: Annotated[Path, typer.Argument(help="A table (.csv/.parquet) or a tensor (.npy).")],
    model: ModelOpt = ...,
    task: TaskOpt = None,
    weights: WeightsOpt = None,
    factory: FactoryOpt = None,
    label_column: Annotated[str | None, typer.Option(
        help="Column with the true class (left out of the features).")] = None,
    drop: Annotated[list[str] | None, typer.Option("--drop", help="Column to leave out.")]
    = None,
    target: Annotated[str | None, typer.Option(
        help="None: predicted class; 'label': the true class; or a class index.")] = None,
    mode: Annotated[str, typer.Option(help="default or contrast.")] = "default",
    batch_size: Annotated[int, typer.Option(min=1)] = 256,
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Save the global explanation (.npz).")] = None,
    report_path: Annotated[Path | None, typer.Option("--report", help="Write an HTML report.")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the JSON summary.")] = False,
    audit: AuditOpt = str(DEFAULT_AUDIT),
    no_audit: Annotated[bool, typer.Option("--no-audit", help="Do not record.")] = False,
) -> None:
    """Global explanation of a data set: per-class relevance statistics per feature."""
    from dlbacktrace.aggregate import aggregate as run_aggregate

    check_outputs(out, report_path)
    with reported_errors():
        store = None if no_audit else _open_audit(audit)  # a bad location fails first
        loaded = load(model, task, weights, factory)
        batch, labels = read_data(data, loaded, label_column, drop)
        parsed = target if target in (None, "label") else parse_target(target)
        g = run_aggregate(loaded.model, batch.args[0], target=parsed, mode=mode, labels=labels,
                          batch_size=batch_size, feature_names=batch.feature_names,
                          class_names=loaded.labels, progress=True)
        if store is not None:
            record_id = _record(store, loaded, g, batch.args[0], labels, data, target=parsed,
                                mode=mode, batch_size=batch_size,
                                feature_names=batch.feature_names, class_names=loaded.labels)
            err_console.print(f"Audit record {record_id} in {audit}")
        if out:
            g.save(out)
        if report_path:
            from dlbacktrace.report import write_html
            from dlbacktrace.report.results import global_report

            write_html(global_report(g), report_path)
    if as_json:
        sys.stdout.write(json.dumps(g.to_json(), indent=2) + "\n")
        return
    console.print(feature_table(g, mode))
    for path, what in ((out, "Global explanation"), (report_path, "Report")):
        if path:
            console.print(f"{what} written to [bold]{path}[/bold]")


def _open_audit(location: str) -> Any:
    from dlbacktrace.audit import AuditStore

    return AuditStore(location)


def _record(store: Any, loaded: Any, g: Any, x: Any, labels: Any, data: Path,
            **options: Any) -> int:
    """The aggregate's audit record: the data read, its file's digest, the options used."""
    try:
        return store.record_aggregate(loaded.model, g, x, labels=labels, options=options,
                                      spec=loaded.spec, source="cli", data_file=data)
    finally:
        store.close()


def read_data(data: Path, loaded: Any, label_column: str | None,
              drop: list[str] | None) -> tuple[Any, Any]:
    """The data set as one input batch, and the true classes when a table names them.

    Parameters
    ----------
    data
        A table or tensor file.
    loaded
        The model the data is for.
    label_column
        A table column holding the true class (left out of the features).
    drop
        Table columns to leave out.
    """
    from dlbacktrace.io.batch import InputFileError
    from dlbacktrace.io.inputs import read_input
    from dlbacktrace.io.kinds import detect_kind
    from dlbacktrace.io.kinds.table import read_frame, table_batch

    if detect_kind(data) != "table":
        return read_input(data, loaded), None
    frame = read_frame(data)
    labels = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise InputFileError(f"label column {label_column!r} not found")
        labels = frame[label_column].to_numpy()
    left_out = [*(drop or []), *([label_column] if label_column else [])]
    return table_batch(frame, drop=left_out), labels


def feature_table(g: Any, mode: str) -> Table:
    """Mean relevance per feature and class, the features with the largest overall mean first.

    Parameters
    ----------
    g
        A :class:`~dlbacktrace.aggregate.GlobalExplanation`.
    mode
        The explanation mode (for the title).
    """
    table = Table(title=f"Mean relevance per feature ({g.rows} rows, {mode} mode)")
    table.add_column("feature")
    for cls in ["all", *g.class_names]:
        table.add_column(str(cls), justify="right")
    features = g.to_json().get("features") or []
    by_feature: dict[str, dict[str, float]] = {}
    for f in features:
        by_feature.setdefault(f["feature"], {})[str(f["class"])] = f["mean"]
    for name, values in sorted(by_feature.items(), key=lambda kv: -abs(kv[1].get("all", 0))):
        table.add_row(name, *(f"{values[str(c)]:.4g}" if str(c) in values else "-"
                              for c in ["all", *g.class_names]))
    return table
