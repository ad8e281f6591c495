"""The HTML report of an evaluation (``dlbacktrace evaluate`` and the benchmark).

Its first screen is, per task, the methods ranked by faithfulness with a plain-language
verdict each (:mod:`dlbacktrace.evaluation.verdicts`); below come the thresholds behind the
verdicts, every metric with its n (from ``results.csv`` when the folder has it), the
deletion/insertion curves and the run's settings.
"""

from __future__ import annotations

import base64
import csv
import math
from pathlib import Path
from typing import Any

from dlbacktrace.report.render import sections_report, write_html

__all__ = ["evaluation_report", "metric_label", "ranked_rows", "write_evaluation_report"]

# The columns of the ranked table besides the ranking metric: (metric, header).
SUMMARY = (
    ("faithfulness_correlation", "faithf. corr."),
    ("max_sensitivity", "max-sens."),
    ("determinism", "determ."),
    ("randomisation_similarity", "rand. sim."),
    ("time_per_instance_ms", "ms/inst."),
    ("peak_memory_mb", "peak MB"),
)


def _fmt(value: float) -> str:
    if value is None or math.isnan(value):
        return "–"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
        return f"{value:.2e}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"


def _cell(score: dict[str, Any] | None) -> str:
    if not score:
        return "–"
    se = score.get("se", 0.0)
    text = _fmt(score["mean"]) if not se else f"{_fmt(score['mean'])} ± {_fmt(se)}"
    return text


def metric_label(name: str) -> str:
    """A metric's table header (its registered label, else its name).

    Parameters
    ----------
    name
        The metric's name.
    """
    from dlbacktrace.evaluation.metrics import METRICS

    return METRICS[name].header if name in METRICS else name


def ranked_rows(task: dict[str, Any]) -> list[dict[str, Any]]:
    """The ranked table of one task: rank, method, the ranking metric ± SE, its n, a few
    other metrics and the verdict.

    Parameters
    ----------
    task
        One task's results (with ``ranking`` and ``verdicts``).
    """
    methods = task.get("methods") or {}
    ranking = task.get("ranking") or {"metric": None, "order": list(methods)}
    metric = ranking.get("metric")
    said = task.get("verdicts") or {}
    rows = []
    for place, method in enumerate(ranking["order"], start=1):
        r = methods.get(method, {})
        scores = r.get("metrics") or {}
        row: dict[str, Any] = {"rank": place, "method": method}
        if metric:
            row[f"{metric_label(metric)} ± SE"] = _cell(scores.get(metric))
            row["n"] = (scores.get(metric) or {}).get("n", 0)
        for name, header in SUMMARY:
            row[header] = _cell(scores.get(name))
        row["verdict"] = "; ".join(said.get(method, [])) or "–"
        rows.append(row)
    return rows


def _number(text: str) -> Any:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text


def _csv_tables(folder: Path | None) -> dict[str, list[dict[str, Any]]]:
    table = folder / "results.csv" if folder else None
    if table is None or not table.is_file():
        return {}
    with table.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    out: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        out.setdefault(r["task"], []).append({k: _number(v) for k, v in r.items()
                                              if k != "task"})
    return out


def _dict_table(task: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {"method": m, "map": r.get("map"), "metric": k, "mean": v["mean"], "std": v["std"],
         "se": v.get("se"), "n": v["n"]}
        for m, r in (task.get("methods") or {}).items() for k, v in (r.get("metrics") or {}).items()
    ]  # fmt: skip


def evaluation_report(results: dict[str, Any], folder: str | Path | None = None) -> str:
    """HTML of an evaluation's results, the ranked table and verdicts first.

    Parameters
    ----------
    results
        As :func:`~dlbacktrace.evaluation.evaluate.evaluate_tasks` returns them (or read
        back from ``results.json``).
    folder
        The results folder: its ``results.csv`` and ``curves_<task>.png`` are included.
    """
    folder = Path(folder) if folder else None
    tasks = results.get("tasks") or {}
    sections: list[dict[str, Any]] = []
    for name, task in tasks.items():
        if not task.get("methods"):
            continue
        ranking = task.get("ranking") or {}
        metric = ranking.get("metric")
        direction = "higher is better" if ranking.get("higher_is_better", True) else (
            "lower is better")
        text = (f"{task.get('description', name)}. Ranked by {metric_label(metric)} "
                f"({direction}), "
                f"mean ± standard error over the instances (n). Removal: "
                f"{task.get('removal', 'zero')}.") if metric else task.get("description", "")
        sections.append({"title": f"Ranking: {name}", "text": text,
                         "table": ranked_rows(task)})
    thresholds = results.get("thresholds")
    if thresholds:
        sections.append({"title": "How the verdicts are decided", "kv": thresholds})
    tables = _csv_tables(folder)
    for name in dict.fromkeys([*tasks, *tables]):
        task = tasks.get(name) or {}
        section: dict[str, Any] = {"title": f"Task {name}",
                                   "table": tables.get(name) or _dict_table(task)}
        skipped = task.get("skipped") or {}
        if skipped:
            section["text"] = "Not run: " + "; ".join(f"{m} ({why})" for m, why in skipped.items())
        if task.get("info"):
            section["kv"] = task["info"]
        plot = folder / f"curves_{name}.png" if folder else None
        if plot is not None and plot.is_file():
            section["images"] = ["data:image/png;base64,"
                                 + base64.b64encode(plot.read_bytes()).decode()]
        if section["table"] or section.get("images"):
            sections.append(section)
        for method, r in (task.get("methods") or {}).items():
            if r.get("top_features"):
                sections.append({
                    "title": f"{name}: top features of {method}",
                    "text": "mean |attribution| over the explained instances",
                    "bars": [{"feature": f["feature"], "relevance": f["mean_abs"]}
                             for f in r["top_features"]],
                })
    sections.append({"title": "Run", "kv": {
        "mode": results.get("mode"), "seed": results.get("seed"),
        "wall time (s)": results.get("wall_s"),
        **{f"machine {k}": v for k, v in (results.get("machine") or {}).items()}}})
    mode = results.get("mode")
    title = "DLBacktrace evaluation" if mode in (None, "evaluate") else "DLBacktrace benchmark"
    return sections_report(title, sections,
                           config={"higher_is_better": results.get("higher_is_better")})


def write_evaluation_report(results: dict[str, Any], folder: str | Path) -> Path:
    """Write ``report.html`` into ``folder`` (beside the results files); returns its path.

    Parameters
    ----------
    results
        The evaluation's results.
    folder
        The results folder.
    """
    return write_html(evaluation_report(results, folder), Path(folder) / "report.html")
