"""``dlbacktrace explain``: explain a model's predictions on input files or texts.

The command reads the inputs through the registered input kinds, explains them batch by
batch with the :class:`~dlbacktrace.apps.server.service.ExplainService` the server uses
(so the audit records match), and shows the results as a table, JSON or an HTML report.
Causal language models go to :mod:`.generation` instead.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlbacktrace.apps.cli.common import (
    DEFAULT_AUDIT,
    MODEL_HELP,
    AuditOpt,
    FactoryOpt,
    GgufOpt,
    TaskOpt,
    WeightsOpt,
    check_outputs,
    console,
    err_console,
    load,
    parse_class_names,
    parse_target,
    reported_errors,
    write_json,
)
from dlbacktrace.apps.cli.generation import explain_prompts
from dlbacktrace.engine.errors import InputError
from dlbacktrace.io.kinds import kind_names, registered_kinds

__all__ = ["explain", "merged_report", "results_table", "write_results"]

FORMATS = ("summary", "json", "report")
_SUFFIXES = ", ".join(s for kind in registered_kinds().values() for s in kind.suffixes)


def results_table(results: list[Any]) -> Table:
    """The terminal summary: one line per explained input.

    Parameters
    ----------
    results
        :class:`~dlbacktrace.apps.server.service.ExplainResult` objects.
    """
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


def merged_report(results: list[Any]) -> str:
    """Several explanation calls in one HTML report: one row section per input.

    Parameters
    ----------
    results
        :class:`~dlbacktrace.apps.server.service.ExplainResult` objects of one input kind.
    """
    from dlbacktrace.report.render import explanation_report

    if len(results) == 1:
        return results[0].report_html()
    rows = [row for r in results for row in r.rows(True)]
    for k, row in enumerate(rows):
        row["index"] = k
    first = results[0]
    return explanation_report(first.explanation, first.batch.kind, rows=rows,
                              model=first.model_info, config=first.options,
                              title=f"DLBacktrace batch of {len(rows)}")


def write_results(results: list[Any], fmt: str, out: Path | None) -> None:
    """Show ``results`` as a table (``summary``), JSON or an HTML report.

    Parameters
    ----------
    results
        :class:`~dlbacktrace.apps.server.service.ExplainResult` objects.
    fmt
        ``summary``, ``json`` or ``report``.
    out
        Where to write JSON (default stdout) or the report (default ``report.html``).
    """
    if fmt == "summary":
        console.print(results_table(results))
    elif fmt == "json":
        write_json([r.to_json() for r in results], out)
        if out:
            err_console.print(f"JSON written to {out}")
    else:
        from dlbacktrace.report import write_html

        path = write_html(merged_report(results), out or Path("report.html"))
        console.print(f"Report written to [bold]{path}[/bold]")


def _check_choices(fmt: str, mode: str) -> None:
    if fmt not in FORMATS:
        raise typer.BadParameter("--format must be summary, json or report")
    if mode not in ("default", "contrast"):
        raise typer.BadParameter("--mode must be default or contrast")


def _open_audit(location: str) -> Any:
    from dlbacktrace.audit import AuditStore

    return AuditStore(location)


def _check_class_count(names: list[str], results: list[Any]) -> None:
    classes = results[0].explanation.output.shape[-1] if results else len(names)
    if results and results[0].explanation.output.dim() == 1:
        classes = 1
    if len(names) != classes and not (classes == 1 and len(names) == 2):
        raise InputError(
            f"--class-names gives {len(names)} names for a model with {classes} outputs"
        )


def _record_generations(store: Any, loaded: Any, gens: list[Any], mode: str,
                        max_new_tokens: int) -> list[str]:
    """One audit record per prompt, with the settings ``explain_prompts`` generated with."""
    from dlbacktrace.io.digests import weights_digest

    options = {"mode": mode, "max_new_tokens": max_new_tokens, "do_sample": False, "seed": 0}
    weights = weights_digest(loaded.model)
    return [str(store.record_generation(loaded.model, g, options=options, spec=loaded.spec,
                                        source="cli", weights=weights)) for g in gens]


def _explain_batches(service: Any, batches: list[Any], target: Any, mode: str) -> list[Any]:
    from rich.progress import Progress

    results = []
    with Progress(console=err_console, transient=True) as progress:
        task_id = progress.add_task("Explaining", total=sum(b.size for b in batches))
        for batch in batches:
            results.append(service.explain(batch, target=target, mode=mode))
            progress.advance(task_id, batch.size)
    return results


def explain(
    inputs: Annotated[list[Path] | None, typer.Argument(
        help=f"Input files ({_SUFFIXES}).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help=MODEL_HELP)] = None,
    task: TaskOpt = None,
    weights: WeightsOpt = None,
    factory: FactoryOpt = None,
    gguf_file: GgufOpt = None,
    text: Annotated[list[str] | None, typer.Option(
        "--text", "-t", help="A text to explain (repeatable).")] = None,
    kind: Annotated[str | None, typer.Option(
        help=f"{', '.join(kind_names())} (default: from the file suffix).")] = None,
    target: Annotated[str | None, typer.Option(
        help="Class index or class name (the model's id2label/labels or --class-names), a "
        "comma list of them (one per row), or positive/negative for a single-logit model; "
        "a class named 'positive' wins over the single-logit meaning. Default: predicted."
    )] = None,
    class_names: Annotated[str | None, typer.Option(
        "--class-names", help="Comma list of class names in index order (replaces the "
        "model's own); usable in --target and shown in the results.")] = None,
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
    from dlbacktrace.apps.server.service import ExplainService
    from dlbacktrace.io.inputs import read_batches
    from dlbacktrace.io.kinds import ReadOptions

    _check_choices(fmt, mode)
    check_outputs(out)
    with reported_errors():
        names = parse_class_names(class_names)
        # Opened first: a bad audit location fails before any computation.
        store = None if no_audit else _open_audit(audit)
        loaded = load(model, task, weights, factory, gguf_file)
        if names is not None:
            loaded.labels = names
        if loaded.task == "causal-lm":
            gens = explain_prompts(loaded, list(text or []), list(inputs or []), mode=mode,
                                   fmt=fmt, out=out, max_new_tokens=max_new_tokens)
            if store is not None:
                ids = _record_generations(store, loaded, gens, mode, max_new_tokens)
                err_console.print(f"Audit records {', '.join(ids)} in {audit}")
            return
        batches = read_batches(list(inputs or []), loaded, inline=list(text or []), kind=kind,
                               options=ReadOptions(image_mode=image_mode, columns=columns,
                                                   drop=drop),
                               batch_size=batch_size)
        service = ExplainService(loaded, audit=store, source="cli")
        results = _explain_batches(service, batches, parse_target(target, loaded.labels), mode)
        if names is not None:
            _check_class_count(names, results)
    write_results(results, fmt, out)
    if store is not None:
        ids = [str(r.record_id) for r in results]
        err_console.print(f"Audit records {', '.join(ids)} in {audit}")
