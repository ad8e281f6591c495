"""``dlbacktrace aggregate``: a data set's global explanation (per-class relevance
statistics per feature), optionally with the bias lens (``--group-column``/``--sensitive``)."""

from __future__ import annotations

import importlib.util
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
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

__all__ = ["aggregate", "feature_table", "read_data", "share_table", "torch_threads"]


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
    group_column: Annotated[str | None, typer.Option(
        help="Bias lens: column with each row's group, e.g. sex (left out of the features).")]
    = None,
    sensitive: Annotated[str | None, typer.Option(
        help="Bias lens: comma-separated sensitive features (a column, or a one-hot group "
        "'name=...'), e.g. age,status_sex; their share of |relevance| per group.")] = None,
    backend: Annotated[str, typer.Option(help="local or ray.")] = "local",
    num_workers: Annotated[int, typer.Option(min=1, help="Ray workers (--backend ray).")] = 2,
    checkpoint: Annotated[Path | None, typer.Option(
        help="Checkpoint (.npz) written while running; an existing one is resumed.")] = None,
    layers: Annotated[list[str] | None, typer.Option(
        "--layers", help="Module names whose units are aggregated too (comma-separated or "
        "repeated).")] = None,
    threads: Annotated[int | None, typer.Option(
        min=1, help="Torch CPU threads for this run (restored afterwards).")] = None,
    audit: AuditOpt = str(DEFAULT_AUDIT),
    no_audit: Annotated[bool, typer.Option("--no-audit", help="Do not record.")] = False,
) -> None:
    """Global explanation of a data set: per-class relevance statistics per feature."""
    from dlbacktrace.aggregate import aggregate as run_aggregate

    check_outputs(out, report_path, checkpoint)
    if backend not in ("local", "ray"):
        raise typer.BadParameter(f"--backend must be local or ray, got {backend!r}")
    if backend == "ray" and importlib.util.find_spec("ray") is None:
        raise typer.BadParameter("--backend ray needs Ray: pip install 'dlbacktrace[ray]'")
    if sensitive is not None and group_column is None:
        raise typer.BadParameter("--sensitive needs --group-column (the rows' groups)")
    layer_names = [n.strip() for item in layers or [] for n in item.split(",") if n.strip()]
    with reported_errors(), torch_threads(threads):
        store = None if no_audit else _open_audit(audit)  # a bad location fails first
        loaded = load(model, task, weights, factory)
        batch, labels, groups = read_data(data, loaded, label_column, drop, group_column)
        parsed = target if target in (None, "label") else parse_target(target, loaded.labels)
        g = run_aggregate(loaded.model, batch.args[0], target=parsed, mode=mode, labels=labels,
                          batch_size=batch_size, feature_names=batch.feature_names,
                          class_names=loaded.labels, progress=True, groups=groups,
                          sensitive=sensitive.split(",") if sensitive else None,
                          backend=backend, num_workers=num_workers, checkpoint=checkpoint,
                          layers=layer_names or None)
        if store is not None:
            record_id = _record(store, loaded, g, batch.args[0], labels, data, target=parsed,
                                mode=mode, batch_size=batch_size,
                                feature_names=batch.feature_names, class_names=loaded.labels,
                                layers=layer_names or None,
                                groups=None if groups is None else _as_list(groups),
                                sensitive=sensitive.split(",") if sensitive else None)
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
    if g.groups is not None and g.groups.sensitive:
        console.print(share_table(g))
    for path, what in ((out, "Global explanation"), (report_path, "Report")):
        if path:
            console.print(f"{what} written to [bold]{path}[/bold]")


@contextmanager
def torch_threads(threads: int | None) -> Iterator[None]:
    """``torch.set_num_threads(threads)`` for the block, the previous value restored after.

    Parameters
    ----------
    threads
        Threads to use, or None to leave the setting alone.
    """
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _open_audit(location: str) -> Any:
    from dlbacktrace.audit import AuditStore

    return AuditStore(location)


def _record(store: Any, loaded: Any, g: Any, x: Any, labels: Any, data: Path,
            **options: Any) -> int:
    """The aggregate's audit record: the data read, its file's digest, the options used."""
    options = {k: v for k, v in options.items() if v is not None}
    try:
        return store.record_aggregate(loaded.model, g, x, labels=labels, options=options,
                                      spec=loaded.spec, source="cli", data_file=data)
    finally:
        store.close()


def _as_list(values: Any) -> list[Any]:
    """Per-row values as a JSON-ready list (for the audit record)."""
    return values.tolist() if hasattr(values, "tolist") else list(values)


def read_data(data: Path, loaded: Any, label_column: str | None, drop: list[str] | None,
              group_column: str | None = None) -> tuple[Any, Any, Any]:
    """The data set as one input batch, and the true classes and groups when a table names them.

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
    group_column
        A table column holding each row's group (left out of the features).
    """
    from dlbacktrace.io.batch import InputFileError
    from dlbacktrace.io.inputs import read_input
    from dlbacktrace.io.kinds import detect_kind
    from dlbacktrace.io.kinds.table import read_frame, table_batch

    if detect_kind(data) != "table":
        if group_column is not None:
            raise InputFileError("--group-column needs a table (.csv/.parquet)")
        return read_input(data, loaded), None, None
    frame = read_frame(data)
    labels = groups = None
    if label_column is not None:
        if label_column not in frame.columns:
            raise InputFileError(f"label column {label_column!r} not found")
        labels = frame[label_column].to_numpy()
    if group_column is not None:
        if group_column not in frame.columns:
            raise InputFileError(f"group column {group_column!r} not found")
        groups = frame[group_column].to_numpy()
    left_out = [*(drop or []), *([label_column] if label_column else [])]
    if group_column is not None and group_column not in left_out:
        left_out.append(group_column)
    return table_batch(frame, drop=left_out), labels, groups


def share_table(g: Any) -> Table:
    """The bias lens: each sensitive feature's share of |relevance| per group, ± its SE.

    Parameters
    ----------
    g
        A :class:`~dlbacktrace.aggregate.GlobalExplanation` with sensitive features.
    """
    table = Table(title="Share of |relevance| on sensitive features (mean of per-row shares "
                  "± standard error)")
    for column in ("sensitive", "group", "rows", "share"):
        table.add_column(column, justify="right" if column in ("rows", "share") else "left")
    for row in g.sensitive_shares().itertuples():
        table.add_row(str(row.sensitive), str(row.group), str(row.rows),
                      f"{row.share:.4f} ± {row.stderr:.4f}")
    return table


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
