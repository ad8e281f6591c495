"""``dlbacktrace evaluate``: attribution methods compared on your own model and data.

The command is :func:`dlbacktrace.evaluation.evaluate.evaluate` (same numbers for the same
seed): it loads the model as ``explain`` does, reads ``--data`` through the input kinds, and
writes ``report.html`` (ranked table and verdicts first), ``results.json``, ``results.csv``
and ``results.md`` into ``--out``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from dlbacktrace.apps.cli.common import (
    FactoryOpt,
    ModelOpt,
    TaskOpt,
    WeightsOpt,
    console,
    load,
    parse_target,
    reported_errors,
    third_party_warnings_silenced,
)
from dlbacktrace.evaluation.baselines import METHODS

__all__ = ["evaluate", "parse_removal", "ranked_table"]

DEFAULT_METHODS = "dlb,dlb-contrast,integrated-gradients,kernel-shap,saliency,random"


def parse_removal(text: str | None) -> Any:
    """``--removal``: ``zero``, ``mean``, ``blur`` or a number (a token id for text).

    Parameters
    ----------
    text
        The option's value (None: the data's default).
    """
    if text is None or text in ("zero", "mean", "blur"):
        return text
    try:
        value = float(text)
    except ValueError:
        raise typer.BadParameter(
            f"--removal must be zero, mean, blur or a number; got {text!r}"
        ) from None
    return int(value) if value.is_integer() else value


def ranked_table(result: Any) -> Table:
    """The terminal summary: the methods ranked, with their verdicts.

    Parameters
    ----------
    result
        An :class:`~dlbacktrace.evaluation.evaluate.EvaluationResult`.
    """
    from dlbacktrace.report.evaluation import metric_label

    metric = result.ranked_by
    label = metric_label(metric) if metric else "score"
    table = Table(title=f"Methods ranked by {label}" if metric else "Methods")
    for col in ("#", "method", f"{label} ± SE", "n", "verdict"):
        table.add_column(col)
    for place, method in enumerate(result.ranking, start=1):
        entry = (result.methods[method].get("metrics") or {}).get(metric) if metric else None
        score = "–" if not entry else f"{entry['mean']:.3g} ± {entry.get('se', 0.0):.2g}"
        n = "–" if not entry else str(entry["n"])
        table.add_row(str(place), method, score, n, "; ".join(result.verdicts.get(method, [])))
    return table


def evaluate(
    model: ModelOpt = ...,
    data: Annotated[Path, typer.Option(
        "--data", "-d", help="A table (.csv/.parquet), an image folder, texts (.jsonl/.txt) "
        "or a tensor file (.npy/.safetensors).")] = ...,
    task: TaskOpt = None,
    weights: WeightsOpt = None,
    factory: FactoryOpt = None,
    label_column: Annotated[str | None, typer.Option(
        help="A table's column of true labels (left out of the features).")] = None,
    methods: Annotated[str, typer.Option(
        help=f"Comma list of methods: {', '.join(METHODS)}.")]
    = DEFAULT_METHODS,
    metrics: Annotated[str | None, typer.Option(
        help="Comma list of metrics (default: all that apply).")] = None,
    instances: Annotated[int, typer.Option(min=1, help="Rows of --data to explain.")] = 32,
    seed: Annotated[int, typer.Option(help="Seed of sampling methods and metrics.")] = 0,
    target: Annotated[str | None, typer.Option(
        help="Class index or comma list (one per row); default the predicted class.")] = None,
    removal: Annotated[str | None, typer.Option(
        help="What a removed feature becomes: zero, mean, blur or a number (default: "
        "tables the column means, images zero, text the mask/pad token).")] = None,
    quick: Annotated[bool, typer.Option("--quick", help="Fewer metric samples.")] = False,
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the results.")]
    = Path("evaluation-results"),
) -> None:
    """Compare attribution methods on your own model and data: faithfulness, stability,
    determinism, randomisation check, time and memory, ranked with plain-language verdicts
    (report.html, results.json, results.csv in --out)."""
    from dlbacktrace.evaluation.evaluate import evaluate as run_evaluation

    parsed_removal = parse_removal(removal)
    parsed_target = parse_target(target)
    with reported_errors(), third_party_warnings_silenced():
        loaded = load(model, task, weights, factory)
        result = run_evaluation(
            loaded, data, methods=methods, metrics=metrics, instances=instances, seed=seed,
            target=parsed_target, removal=parsed_removal, label_column=label_column,
            quick=quick, out=out, progress=True,
        )
    console.print(ranked_table(result))
    if result.skipped:
        console.print("Not run: " + "; ".join(f"{m} ({why})" for m, why in result.skipped.items()))
    console.print(f"Report: [bold]{out / 'report.html'}[/bold]; numbers: results.json, "
                  "results.csv")
