"""Command line interface: ``dlbacktrace COMMAND ...``.

One typer app with one function per sub-command: ``explain``, ``report``, ``serve``,
``audit list|show|verify|verify-chain|export``, ``aggregate``, ``benchmark`` and ``demo``.
Explanations made here are recorded in the audit log (``--audit``, on by default). This is the
only module of the package that prints.
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
from rich.table import Table

from dlbacktrace.engine.errors import DLBacktraceError

app = typer.Typer(
    name="dlbacktrace",
    help="DLBacktrace: deterministic relevance backtracing for PyTorch models.",
    no_args_is_help=True,
    add_completion=False,
)
audit_app = typer.Typer(help="The audit log: list, show, verify and export records.",
                        no_args_is_help=True)
app.add_typer(audit_app, name="audit")

DEFAULT_AUDIT = Path("dlbacktrace-audit.db")
console = Console()
err_console = Console(stderr=True)


@app.callback()
def _root() -> None:
    """DLBacktrace: deterministic relevance backtracing for PyTorch models."""


@contextmanager
def _errors() -> Iterator[None]:
    """Known errors become one red line and exit status 2 instead of a traceback."""
    try:
        yield
    except DLBacktraceError as exc:
        err_console.print(f"[red]error:[/red] {type(exc).__name__}: {exc}", soft_wrap=True)
        raise typer.Exit(2) from None


def _check_outputs(*paths: Path | None) -> None:
    """Fail before any computation if an output cannot be written (its folder is missing)."""
    for path in paths:
        if path is not None and not path.parent.is_dir():
            raise typer.BadParameter(f"cannot write {path}: folder {path.parent} does not exist")


# ---- shared options ------------------------------------------------------------------------

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


def _load(model: str, task: str | None, weights: Path | None, factory: str | None) -> Any:
    from dlbacktrace.io.loading import load_model

    return load_model(model, task=task, weights=str(weights) if weights else None,
                      factory=factory)


def _parse_target(text: str | None) -> Any:
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


def _read_batches(loaded: Any, inputs: list[Path], texts: list[str], *, kind: str | None,
                  image_mode: str | None, columns: list[str] | None, drop: list[str] | None,
                  batch_size: int) -> list[Any]:
    """Inputs as batches of at most ``batch_size`` rows (images and texts are grouped)."""
    from dlbacktrace.io.inputs import (
        InputFileError,
        detect_kind,
        image_batch,
        load_image,
        read_input,
        text_batch,
        texts_from_file,
    )

    if not inputs and not texts:
        raise InputFileError("nothing to explain: give input files or --text")
    kinds = {kind or detect_kind(p) for p in inputs} | ({"text"} if texts else set())
    if len(kinds) > 1:
        raise InputFileError(f"mixed input kinds {sorted(kinds)}; explain one kind per call")
    the_kind = kinds.pop()
    chunks = lambda items: [items[i : i + batch_size]  # noqa: E731
                            for i in range(0, len(items), batch_size)]
    if the_kind == "image":
        for p in inputs:
            if not p.is_file():
                raise InputFileError(f"input file not found: {p}")
        return [
            image_batch([load_image(p, p.name) for p in group], [p.name for p in group],
                        preprocess=loaded.preprocess, mode=image_mode)
            for group in chunks(inputs)
        ]
    if the_kind == "text":
        all_texts = list(texts)
        for p in inputs:
            all_texts += texts_from_file(p)
        return [text_batch(group, loaded.tokenizer) for group in chunks(all_texts)]
    batches = []
    for p in inputs:
        batch = read_input(p, loaded, kind=the_kind, image_mode=image_mode, columns=columns,
                           drop=drop)
        n = batch.size
        if n <= batch_size:
            batches.append(batch)
            continue
        for start in range(0, n, batch_size):
            rows = [batch.row(i) for i in range(start, min(n, start + batch_size))]
            batches.append(_concat(rows))
    return batches


def _concat(rows: list[Any]) -> Any:
    import numpy as np
    import torch

    from dlbacktrace.io.inputs import InputBatch

    first = rows[0]
    return InputBatch(
        first.kind,
        tuple(torch.cat([r.args[i] for r in rows]) for i in range(len(first.args))),
        {k: torch.cat([r.kwargs[k] for r in rows]) for k in first.kwargs},
        [n for r in rows for n in r.names],
        None if first.display is None else np.concatenate([r.display for r in rows]),
        first.feature_names,
    )


def _summary_table(results: list[Any]) -> Table:
    table = Table(title="Explanations", caption="cons. err.: relative conservation error")
    for col in ("input", "prediction", "p", "target", "top features", "cons. err.", "record"):
        table.add_column(col)
    for res in results:
        for row in res.rows(figures=False):
            pred = row["prediction"]
            top = ", ".join(f"{f['feature']} ({f['relevance']:.3g})"
                            for f in row["top_features"][:3])
            table.add_row(
                row["name"], pred["label"], f"{pred['probabilities'][0]['p']:.3f}",
                str(row["target"]), top, f"{res.explanation.conservation_error:.1e}",
                str(res.record_id or "-"),
            )
    return table


# ---- explain -------------------------------------------------------------------------------


@app.command()
def explain(
    inputs: Annotated[list[Path] | None, typer.Argument(
        help="Input files: PNG/JPEG, .txt/.jsonl, .csv/.parquet, .npy/.safetensors.")] = None,
    model: ModelOpt = ...,
    task: TaskOpt = None,
    weights: WeightsOpt = None,
    factory: FactoryOpt = None,
    text: Annotated[list[str] | None, typer.Option(
        "--text", "-t", help="A text to explain (repeatable).")] = None,
    kind: Annotated[str | None, typer.Option(
        help="image, text, table or tensor (default: from the file suffix).")] = None,
    target: Annotated[str | None, typer.Option(
        help="Class index, comma list (one per row), positive/negative; default predicted."
    )] = None,
    mode: Annotated[str, typer.Option(help="default or contrast.")] = "default",
    fmt: Annotated[str, typer.Option(
        "--format", "-f", help="summary (terminal), json or report (HTML).")] = "summary",
    out: Annotated[Path | None, typer.Option(
        "--out", "-o", help="Where to write the JSON or HTML report.")] = None,
    audit: AuditOpt = str(DEFAULT_AUDIT),
    no_audit: Annotated[bool, typer.Option("--no-audit", help="Do not record.")] = False,
    image_mode: Annotated[str | None, typer.Option(help="L or RGB (default: keep).")] = None,
    columns: Annotated[list[str] | None, typer.Option(
        "--column", help="Feature column to use (repeatable; default all).")] = None,
    drop: Annotated[list[str] | None, typer.Option(
        "--drop", help="Column to leave out, e.g. a label (repeatable).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per explanation call.")] = 32,
    max_new_tokens: Annotated[int, typer.Option(
        min=1, help="causal-lm: tokens to generate and explain.")] = 16,
) -> None:
    """Explain a model's predictions on input files or texts.

    With a causal language model (--task causal-lm) each --text is a prompt: the model
    generates --max-new-tokens greedily and every generated token is explained.
    """
    from rich.progress import Progress

    from dlbacktrace.apps.server.service import ExplainService

    if fmt not in ("summary", "json", "report"):
        raise typer.BadParameter("--format must be summary, json or report")
    if mode not in ("default", "contrast"):
        raise typer.BadParameter("--mode must be default or contrast")
    _check_outputs(out)
    with _errors():
        store = None
        if not no_audit:  # opened first: a bad audit location fails before any computation
            from dlbacktrace.audit import AuditStore

            store = AuditStore(audit)
        loaded = _load(model, task, weights, factory)
        if loaded.task == "causal-lm":
            _explain_generation(loaded, list(text or []), list(inputs or []), mode=mode,
                                fmt=fmt, out=out, max_new_tokens=max_new_tokens)
            return
        batches = _read_batches(loaded, list(inputs or []), list(text or []), kind=kind,
                                image_mode=image_mode, columns=columns, drop=drop,
                                batch_size=batch_size)
        service = ExplainService(loaded, audit=store, source="cli")
        results = []
        with Progress(console=err_console, transient=True) as progress:
            task_id = progress.add_task("Explaining", total=sum(b.size for b in batches))
            for batch in batches:
                results.append(service.explain(batch, target=_parse_target(target), mode=mode))
                progress.advance(task_id, batch.size)
    if fmt == "summary":
        console.print(_summary_table(results))
    elif fmt == "json":
        data = [r.to_json() for r in results]
        payload = json.dumps(data[0] if len(data) == 1 else data, indent=2)
        if out:
            out.write_text(payload + "\n", encoding="utf-8")
            err_console.print(f"JSON written to {out}")
        else:
            sys.stdout.write(payload + "\n")
    else:
        from dlbacktrace.report import write_html

        path = out or Path("report.html")
        if len(results) == 1:
            html = results[0].report_html()
        else:
            html = _merged_report(results)
        write_html(html, path)
        console.print(f"Report written to [bold]{path}[/bold]")
    if store is not None:
        ids = [str(r.record_id) for r in results]
        err_console.print(f"Audit records {', '.join(ids)} in {audit}")


def _explain_generation(loaded: Any, texts: list[str], files: list[Path], *, mode: str,
                        fmt: str, out: Path | None, max_new_tokens: int) -> None:
    """Generate from each prompt and explain every generated token (dlbacktrace.tasks.text)."""
    from dlbacktrace.io.inputs import texts_from_file
    from dlbacktrace.report import write_html
    from dlbacktrace.report.results import generation_report
    from dlbacktrace.tasks.text import explain_generation

    prompts = texts + [t for p in files for t in texts_from_file(p)]
    if not prompts:
        raise typer.BadParameter("give a prompt with --text or a .txt/.jsonl file")
    results = []
    with console.status(f"Generating and explaining {len(prompts)} prompt(s)..."):
        for prompt in prompts:
            results.append(explain_generation(loaded.model, loaded.tokenizer, prompt,
                                              max_new_tokens=max_new_tokens, mode=mode))
    if fmt == "report":
        path = out or Path("report.html")
        write_html(generation_report(results), path)
        console.print(f"Report written to [bold]{path}[/bold]")
        return
    data = [{
        "prompt": g.prompt_text, "generated": g.generated_text, "mode": g.mode,
        "conservation_error": g.conservation_error,
        "steps": [{"token": tok, "p": float(g.probabilities[k]),
                   "top": [{"token": t.token, "relevance": t.relevance}
                           for t in g.top_contributors(k, 5)]}
                  for k, tok in enumerate(g.generated_tokens)],
    } for g in results]
    if fmt == "json":
        payload = json.dumps(data[0] if len(data) == 1 else data, indent=2)
        if out:
            out.write_text(payload + "\n", encoding="utf-8")
        else:
            sys.stdout.write(payload + "\n")
        return
    table = Table(title="Generated tokens and their top contributors")
    for col in ("prompt", "step", "token", "p", "top contributors"):
        table.add_column(col)
    for item in data:
        for k, step in enumerate(item["steps"]):
            top = ", ".join(f"{t['token']} ({t['relevance']:.3g})" for t in step["top"][:3])
            table.add_row(item["prompt"][:30] if k == 0 else "", str(k), step["token"],
                          f"{step['p']:.3f}", top)
    console.print(table)


def _merged_report(results: list[Any]) -> str:
    """Several explanation calls in one report: one row section per input."""
    from dlbacktrace.report.render import explanation_report

    rows = [row for r in results for row in r.rows(True)]
    for k, row in enumerate(rows):
        row["index"] = k
    first = results[0]
    return explanation_report(first.explanation, first.batch.kind, rows=rows,
                              model=first.model_info, config=first.options,
                              title=f"DLBacktrace batch of {len(rows)}")


# ---- report --------------------------------------------------------------------------------


@app.command()
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
    _check_outputs(out)
    with _errors():
        if record is not None:
            from dlbacktrace.apps.server.service import record_report
            from dlbacktrace.audit import AuditStore

            with AuditStore(db, create=False) as store:
                html = record_report(store.get(record))
        else:
            html = report_from_json(json.loads(source.read_text(encoding="utf-8")))
        write_html(html, out)
    console.print(f"Report written to [bold]{out}[/bold]")


# ---- serve ---------------------------------------------------------------------------------


@app.command()
def serve(
    model: ModelOpt = ...,
    task: TaskOpt = None,
    weights: WeightsOpt = None,
    factory: FactoryOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind; not loopback needs --token.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option()] = 8000,
    token: Annotated[str | None, typer.Option(
        envvar="DLBACKTRACE_TOKEN", help="Bearer token required on every API call.")] = None,
    audit: AuditOpt = str(DEFAULT_AUDIT),
    max_upload_mb: Annotated[float, typer.Option(help="Largest accepted request body.")] = 10.0,
) -> None:
    """Serve one model: REST API, OpenAPI docs at /docs and a dashboard at /."""
    import uvicorn

    from dlbacktrace.apps.server.app import ServerConfig, create_app
    from dlbacktrace.apps.server.service import ExplainService
    from dlbacktrace.audit import AuditStore

    with _errors():
        loaded = _load(model, task, weights, factory)
        store = AuditStore(audit)
        config = ServerConfig(host=host, token=token, max_body=int(max_upload_mb * 2**20))
        application = create_app(ExplainService(loaded, audit=store, source="server"), config)
    console.print(f"Serving {loaded.spec.describe() if loaded.spec else model} on "
                  f"http://{host}:{port}/ (API docs at /docs)")
    uvicorn.run(application, host=host, port=port, log_level="warning")


# ---- audit ---------------------------------------------------------------------------------


@audit_app.command("list")
def audit_list(
    db: DbOpt = str(DEFAULT_AUDIT),
    limit: Annotated[int, typer.Option(min=1)] = 20,
    offset: Annotated[int, typer.Option(min=0)] = 0,
) -> None:
    """The newest records."""
    from dlbacktrace.audit import AuditStore

    with _errors(), AuditStore(db, create=False) as store:
        records = store.list(limit, offset)
        total = store.count()
    table = Table(title=f"Audit log ({total} records)")
    for col in ("id", "time", "source", "model", "input", "mode", "target", "cons. err."):
        table.add_column(col)
    for rec in records:
        s = rec.summary()
        table.add_row(str(s["id"]), s["created_at"][:19], str(s["source"]), str(s["model"]),
                      f"{s['input_kind'] or '-'} {', '.join(s['input_names'] or [])[:40]}",
                      str(s["mode"]), str(s["target"]), f"{s['conservation_error']:.1e}")
    console.print(table)


@audit_app.command("show")
def audit_show(record: int, db: DbOpt = str(DEFAULT_AUDIT)) -> None:
    """One record's full content (JSON) and chain hashes."""
    from dlbacktrace.audit import AuditStore

    with _errors(), AuditStore(db, create=False) as store:
        rec = store.get(record)
    sys.stdout.write(json.dumps({"id": rec.id, "hash": rec.hash, "prev_hash": rec.prev_hash,
                                 "content": rec.content}, indent=2) + "\n")


@audit_app.command("verify")
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
    """Recompute a record and compare bit for bit (exit 1 if it differs)."""
    from dlbacktrace.audit import AuditStore, verify_record

    with _errors(), AuditStore(db, create=False) as store:
        loaded = _load(model, task, weights, factory) if model else None
        with console.status(f"Recomputing record {record}..."):
            result = verify_record(store, record, loaded)
    if as_json:
        sys.stdout.write(json.dumps(result.to_dict(), indent=2) + "\n")
    else:
        style = "green" if result.identical and result.fingerprint_match else "red"
        console.print(f"[{style}]{result.message}[/{style}]")
    if not (result.identical and result.fingerprint_match):
        raise typer.Exit(1)


@audit_app.command("verify-chain")
def audit_verify_chain(
    db: DbOpt = str(DEFAULT_AUDIT),
    expect_head: Annotated[str | None, typer.Option(
        help="Head hash kept elsewhere: detects records removed from the end.")] = None,
) -> None:
    """Check every record's hash and the links between records (exit 1 on tampering)."""
    from dlbacktrace.audit import AuditStore, verify_chain

    with _errors(), AuditStore(db, create=False) as store:
        report_ = verify_chain(store, expect_head)
    if report_.ok:
        console.print(f"[green]chain ok[/green]: {report_.count} records, head {report_.head}")
        return
    for record_id, problem in report_.problems:
        console.print(f"[red]record {record_id}[/red]: {problem}")
    raise typer.Exit(1)


@audit_app.command("export")
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

    with _errors(), AuditStore(db, create=False) as store:
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


# ---- aggregate -----------------------------------------------------------------------------


@app.command()
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
) -> None:
    """Global explanation of a data set: per-class relevance statistics per feature."""
    from dlbacktrace.aggregate import aggregate as run_aggregate
    from dlbacktrace.io.inputs import InputFileError, read_input

    _check_outputs(out, report_path)
    with _errors():
        loaded = _load(model, task, weights, factory)
        labels = None
        if data.suffix.lower() in (".csv", ".parquet"):
            from dlbacktrace.io.inputs import read_frame

            frame = read_frame(data)
            if label_column is not None:
                if label_column not in frame.columns:
                    raise InputFileError(f"label column {label_column!r} not found")
                labels = frame[label_column].to_numpy()
            batch = read_input(data, loaded, kind="table",
                               drop=[*(drop or []), *([label_column] if label_column else [])])
        else:
            batch = read_input(data, loaded)
        parsed = target if target in (None, "label") else _parse_target(target)
        g = run_aggregate(loaded.model, batch.args[0], target=parsed, mode=mode, labels=labels,
                          batch_size=batch_size, feature_names=batch.feature_names,
                          class_names=loaded.labels, progress=True)
        if out:
            g.save(out)
        if report_path:
            from dlbacktrace.report import write_html
            from dlbacktrace.report.results import global_report

            write_html(global_report(g), report_path)
    if as_json:
        sys.stdout.write(json.dumps(g.to_json(), indent=2) + "\n")
        return
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
    console.print(table)
    for path, what in ((out, "Global explanation"), (report_path, "Report")):
        if path:
            console.print(f"{what} written to [bold]{path}[/bold]")


# ---- benchmark -----------------------------------------------------------------------------


@app.command()
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

    with _errors(), console.status("Benchmark starting...") as status:
        results = run_benchmark(quick, out, tasks, instances,
                                lambda message: status.update(f"Benchmark: {message}"))
        path = write_html(benchmark_report(results, str(out)), out / "report.html")
    console.print(f"Results in [bold]{out}[/bold] (results.md, results.json); report: "
                  f"[bold]{path}[/bold]")


# ---- demo ----------------------------------------------------------------------------------


@app.command()
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


def main() -> None:
    """Entry point of the ``dlbacktrace`` console script."""
    app()


if __name__ == "__main__":
    main()
