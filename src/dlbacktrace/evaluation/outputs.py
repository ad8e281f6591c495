"""Write evaluation results: JSON (everything), CSV (one row per task × method × metric, with
mean, std, standard error and n), Markdown (one table per task, mean ± std, and the verdicts)
and PNG deletion/insertion curves per task. The benchmark and ``evaluate`` share them."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

from dlbacktrace.evaluation.metrics import METRICS


def _columns(rows: dict[str, Any]) -> list[str]:
    """Metrics that some method has, registered ones first in registry order, then others."""
    present = dict.fromkeys(c for r in rows.values() for c in r.get("metrics", {}))
    return [m for m in METRICS if m in present] + [c for c in present if c not in METRICS]


def _header(metric: str) -> str:
    return METRICS[metric].header if metric in METRICS else metric


def _fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e4):
        return f"{value:.2e}"
    return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"


def _best(rows: dict[str, Any], metric: str, higher: bool) -> str | None:
    scored = {
        m: r["metrics"][metric]["mean"]
        for m, r in rows.items()
        if m != "random" and "metrics" in r and metric in r["metrics"]
        and not math.isnan(r["metrics"][metric]["mean"])
    }
    if len(scored) < 2:
        return None
    return (max if higher else min)(scored, key=scored.get)


def _cell(score: dict[str, Any] | None, instances: int, metric: str, bold: bool) -> str:
    if score is None:
        return "–"
    text = _fmt(score["mean"]) if score["std"] == 0 or score["n"] <= 1 else (
        f"{_fmt(score['mean'])} ± {_fmt(score['std'])}"
    )
    if score["n"] not in (instances, 1) and metric != "peak_memory_mb":
        text += f" (n={score['n']})"
    return f"**{text}**" if bold else text


def _row(method: str, r: dict[str, Any], cols: list[str], best: dict[str, str | None]) -> str:
    if "error" in r:
        return f"| {method} | failed: {r['error'][:120]} |"
    cells = [method, r["map"].split(" (")[0], str(r["instances"])]
    cells += [_cell(r["metrics"].get(c), r["instances"], c, best[c] == method) for c in cols]
    return "| " + " | ".join(cells) + " |"


def markdown(results: dict[str, Any]) -> str:
    """One Markdown table per task: mean ± std per method and metric, the best non-random
    method in bold, failures and the methods not run with their reasons.

    Parameters
    ----------
    results
        A results dictionary as :func:`~dlbacktrace.evaluation.evaluate.evaluate_tasks`
        returns it.
    """
    hib = results["higher_is_better"]
    mach = results["machine"]
    lines = [
        "# Evaluation results" if results["mode"] == "evaluate" else
        f"# Benchmark results ({results['mode']} mode)",
        "",
        f"Machine: {mach['cpu_count']} CPUs ({mach['processor']}), torch {mach['torch']}, "
        f"{mach['torch_threads']} threads, Python {mach['python']}. {mach['note']}. "
        f"Total wall time {results.get('wall_s', 0) / 60:.1f} min.",
        "",
        "Cells: mean ± std over instances (n in the `inst.` column unless stated). Arrows: "
        "↑ higher is better, ↓ lower is better; **bold** = best non-random method. "
        "`map`: `unsigned` maps are used as they are (DLBacktrace default mode, saliency, "
        "SmoothGrad, Grad-CAM, rollout); `signed` maps (DLBacktrace contrast net, IG, ...) "
        "rank features by signed value, so evidence against the prediction is removed last.",
        "",
    ]
    for name, task in results["tasks"].items():
        rows = task["methods"]
        cols = _columns(rows)
        lines += [f"## {name}", "", f"{task['description']}. Removal value: {task['removal']}."]
        if task.get("info"):
            lines += ["", "Info: " + ", ".join(f"{k} = {_fmt(v) if isinstance(v, float) else v}"
                                                for k, v in task["info"].items())]
        lines += [""]
        header = ["method", "map", "inst."] + [
            f"{_header(c)} {'↑' if hib.get(c, False) else '↓'}" for c in cols
        ]
        lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        best = {c: _best(rows, c, hib.get(c, False)) for c in cols}
        lines += [_row(method, r, cols, best) for method, r in rows.items()]
        skipped = task.get("skipped") or {}
        if skipped:
            lines += ["", "Not run: " + "; ".join(f"{m} ({why})" for m, why in skipped.items())]
        said = task.get("verdicts") or {}
        if any(said.values()):
            lines += ["", "Verdicts:", ""] + [f"- **{m}**: {'; '.join(v)}"
                                              for m, v in said.items() if v]
        firsts = {m: r["first_call_s"] for m, r in rows.items() if "first_call_s" in r}
        if firsts:
            lines += ["", "First call (includes `torch.export` capture): " + ", ".join(
                f"{m} {v:.1f} s" for m, v in firsts.items())]
        lines.append("")
    return "\n".join(lines)


def _se(v: dict[str, Any]) -> float:
    if "se" in v:
        return v["se"]
    return v["std"] / math.sqrt(v["n"]) if v["n"] > 1 else 0.0


CSV_COLUMNS = ("task", "method", "map", "metric", "mean", "std", "se", "n", "higher_is_better")


def csv_rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per task, method and metric: mean, std, standard error and n.

    Parameters
    ----------
    results
        A results dictionary as :func:`~dlbacktrace.evaluation.evaluate.evaluate_tasks`
        returns it.
    """
    rows = []
    for name, task in results["tasks"].items():
        for method, r in task.get("methods", {}).items():
            for metric, v in r.get("metrics", {}).items():
                rows.append({
                    "task": name, "method": method, "map": r["map"], "metric": metric,
                    "mean": v["mean"], "std": v["std"], "se": _se(v), "n": v["n"],
                    "higher_is_better": results["higher_is_better"].get(metric, False),
                })  # fmt: skip
    return rows


def plot_curves(task_name: str, task: dict[str, Any], path: Path) -> bool:
    """Mean MoRF deletion and insertion curves per method (matplotlib, no global state)."""
    curves = {m: r["curves"] for m, r in task["methods"].items() if "curves" in r}
    if not curves:
        return False
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, 2)
    for method, c in curves.items():
        style = "-" if method.startswith("dlb") else ("--" if method != "random" else ":")
        width = 2.2 if method.startswith("dlb") else 1.2
        axes[0].plot(c["fractions"], c["morf"], style, lw=width, label=method)
        axes[1].plot(c["fractions"], c["insertion"], style, lw=width, label=method)
    axes[0].set_title(f"{task_name}: deletion, most relevant first (lower is better)")
    axes[1].set_title(f"{task_name}: insertion, most relevant first (higher is better)")
    for ax in axes:
        ax.set_xlabel("fraction of features removed / inserted")
        ax.set_ylabel("target probability")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def merge(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One results dictionary from runs of different tasks (later parts win per task)."""
    merged = dict(parts[0])
    merged["tasks"] = {}
    for part in parts:
        merged["tasks"].update(part["tasks"])
    merged["wall_s"] = sum(p.get("wall_s", 0.0) for p in parts)
    return merged


def write_outputs(results: dict[str, Any], out: Path) -> None:
    """Write ``results.json``, ``machine.json``, ``results.csv``, ``results.md`` and one
    ``curves_<task>.png`` per task with curves into ``out``.

    Parameters
    ----------
    results
        A results dictionary as :func:`~dlbacktrace.evaluation.evaluate.evaluate_tasks`
        returns it.
    out
        An existing folder.
    """
    out = Path(out)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=float))
    (out / "machine.json").write_text(json.dumps(results["machine"], indent=1))
    rows = csv_rows(results)
    with (out / "results.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(CSV_COLUMNS))
        writer.writeheader()
        writer.writerows(rows)
    (out / "results.md").write_text(markdown(results))
    for name, task in results["tasks"].items():
        plot_curves(name, task, out / f"curves_{name}.png")
