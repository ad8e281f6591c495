"""Reports for saved JSON results: ``explain --format json``, benchmark and global results.

The JSON of an explanation renders with the explanation template; any other result renders
generically: scalars as a key/value table, lists of records as tables, ``{name: number}``
mappings as bar charts, so new result types get a readable report without a new template.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from dlbacktrace.report.render import render_page, sections_report
from dlbacktrace.viz.tokens import visible_token

log = logging.getLogger(__name__)

__all__ = [
    "benchmark_report",
    "comparison_report",
    "generation_report",
    "generic_sections",
    "global_report",
    "report_from_json",
]


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def generic_sections(data: dict[str, Any], prefix: str = "") -> list[dict[str, Any]]:
    """Sections for an arbitrary JSON object (one level of nesting is flattened)."""
    scalars: dict[str, Any] = {}
    sections: list[dict[str, Any]] = []
    for key, value in data.items():
        title = f"{prefix}{key}"
        if isinstance(value, (str, bool)) or _is_number(value) or value is None:
            scalars[key] = value
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            flat = [{k: (v if not isinstance(v, (dict, list)) else json.dumps(v)[:120])
                     for k, v in row.items()} for row in value]
            sections.append({"title": title, "table": flat})
        elif isinstance(value, dict) and value and all(_is_number(v) for v in value.values()):
            items = sorted(value.items(), key=lambda kv: -abs(kv[1]))
            sections.append({"title": title,
                             "bars": [{"feature": k, "relevance": float(v)} for k, v in items]})
        elif isinstance(value, dict) and not prefix:
            sections.extend(generic_sections(value, prefix=f"{title} / "))
        else:
            sections.append({"title": title, "pre": json.dumps(value, indent=2)[:20000]})
    if scalars:
        sections.insert(0, {"title": f"{prefix}summary" if prefix else "Summary", "kv": scalars})
    return sections


def report_from_json(data: Any, title: str | None = None) -> str:
    """HTML for a saved JSON result (see the module docstring for what is recognised)."""
    if isinstance(data, list) and data and all(isinstance(d, dict) and "rows" in d for d in data):
        rows = [row for d in data for row in d["rows"]]
        for k, row in enumerate(rows):
            row["index"] = k
        data = {**data[0], "rows": rows}
    if isinstance(data, dict) and "rows" in data and "ledger" in data:
        config = {"mode": data.get("mode", "default"), **(data.get("options") or {})}
        n = len(data["rows"])
        return render_page(
            "explanation.html.j2",
            title=title or ("DLBacktrace explanation" if n == 1 else f"DLBacktrace batch of {n}"),
            kind=data.get("kind", "tensor"),
            rows=data["rows"],
            ledger=data["ledger"],
            model=data.get("model") or {},
            config=config,
            config_json=json.dumps(config, indent=2, sort_keys=True),
            record_id=data.get("record_id"),
        )
    if not isinstance(data, dict):
        data = {"result": data}
    kind = data.get("kind") or data.get("type") or "result"
    return sections_report(title or f"DLBacktrace {kind}", generic_sections(data))


def _figures(draw: list[Any]) -> list[str]:
    """Each ``draw()`` figure as an embedded PNG; none when matplotlib is missing."""
    try:
        from dlbacktrace.report.figures import figure_png

        return [figure_png(fn()) for fn in draw]
    except ImportError as exc:  # matplotlib is an extra: the report stays usable without it
        log.warning("report plots left out: %s", exc)
        return []


def _global_plots(g: Any) -> list[dict[str, Any]]:
    """Importance and beeswarm plots of tabular inputs, class maps of image inputs."""
    from dlbacktrace.viz import global_plots as gp

    sections = []
    for name, moments in g.inputs.items():
        ndim = moments.sums["sum"].ndim - 1
        label = f" ({name})" if len(g.inputs) > 1 else ""
        draw = []
        if ndim == 1:
            draw.append(lambda n=name: gp.plot_feature_importance(g, n))
            if g.sample is not None and f"rel:{name}" in g.sample.values:
                draw.append(lambda n=name: gp.plot_beeswarm(g, n))
        elif ndim in (2, 3):
            draw.append(lambda n=name: gp.plot_class_maps(g, n))
        images = _figures(draw)
        if images:
            sections.append({"title": f"Plots{label}", "images": images})
    return sections


def _bias_sections(g: Any) -> list[dict[str, Any]]:
    """The bias lens: group counts, sensitive shares (table + plot), top features per group."""
    stats = g.groups
    counts = dict(zip(stats.names, stats.count.tolist(), strict=True))
    sections: list[dict[str, Any]] = [{
        "title": "Bias lens",
        "text": f"rows per group of input {stats.input!r}; sensitive features: "
                + (", ".join(f"{k} ({len(v)} columns)" for k, v in stats.sensitive.items())
                   or "none"),
        "kv": counts,
    }]
    if stats.sensitive:
        shares = g.sensitive_shares()
        rows = [{"sensitive": r.sensitive, "group": r.group, "rows": int(r.rows),
                 "share": float(r.share), "stderr": float(r.stderr),
                 "share ± SE": f"{r.share:.4f} ± {r.stderr:.4f}"}
                for r in shares.itertuples()]
        from dlbacktrace.viz.global_plots import plot_sensitive_shares

        sections.append({
            "title": "Bias lens: share of |relevance| on sensitive features",
            "text": "mean over rows of each row's share of its total |relevance|, with the "
                    "standard error of that mean (rows with no relevance left out)",
            "table": rows, "images": _figures([lambda: plot_sensitive_shares(g)]),
        })
    table = g.group_table()
    top = (table.sort_values(["group", "mean_abs"], ascending=[True, False])
           .groupby("group", sort=True).head(10))
    sections.append({"title": "Bias lens: most important features per group",
                     "table": json.loads(top.to_json(orient="records"))})
    return sections


def global_report(g: Any, title: str = "DLBacktrace global explanation") -> str:
    """A :class:`~dlbacktrace.aggregate.GlobalExplanation`: per-class feature importance,
    plots (embedded PNGs; left out without matplotlib) and, when rows were grouped, the bias
    lens.

    Parameters
    ----------
    g
        The global explanation.
    title
        The page title.
    """
    data = g.to_json()
    sections: list[dict[str, Any]] = [{
        "title": "Summary",
        "kv": {"rows": data["rows"], "batches": data["batches"], "mode": data["mode"],
               "target": data["target"], "classes": ", ".join(map(str, data["classes"]))},
    }]
    sections += _global_plots(g)
    if g.groups is not None:
        sections += _bias_sections(g)
    features = data.get("features") or []
    for cls in ["all", *data["classes"]]:
        items = [f for f in features if str(f.get("class")) == str(cls)]
        if not items:
            continue
        items.sort(key=lambda f: -abs(f["mean"]))
        sections.append({
            "title": "All rows" if cls == "all" else f"Class {cls}",
            "text": f"mean relevance per row ({items[0]['count']} rows)",
            "bars": [{"feature": f["feature"], "relevance": f["mean"]} for f in items[:30]],
        })
    if features:
        sections.append({"title": "Feature statistics", "table": features})
    for cls, words in (data.get("top_words") or {}).items():
        sections.append({"title": f"Top words for {cls}", "table": words})
    if data.get("layers"):
        sections.append({"title": "Layer units", "table": data["layers"][:500]})
    return sections_report(title, sections, config={"fingerprint": g.fingerprint})


def comparison_report(cmp: Any, title: str = "DLBacktrace global comparison") -> str:
    """A :class:`~dlbacktrace.aggregate.Comparison` of two global explanations: the summary,
    a plot of the biggest changes, the per-feature and per-class tables (and the change of the
    sensitive-feature shares when both kept the bias lens).

    Parameters
    ----------
    cmp
        The comparison.
    title
        The page title.
    """
    from dlbacktrace.viz.global_plots import plot_comparison

    data = cmp.to_json()
    sections: list[dict[str, Any]] = [
        {"title": "Summary",
         "kv": {"compared": f"{cmp.name_a} -> {cmp.name_b}", "features": data["features"],
                "Spearman rank correlation": data["rank_correlation"],
                **{f"rank correlation, class {c}": v
                   for c, v in data["class_rank_correlation"].items()}}},
        {"title": "What changed", "pre": "\n".join(data["summary"]),
         "images": _figures([lambda: plot_comparison(cmp)])},
        {"title": "Feature importance change", "table": data["table"],
         "text": "importance = mean |relevance| per row; stderr of the change from both "
                 "aggregates' spreads"},
        {"title": "Per-class change", "table": data["class_table"]},
    ]
    if data["sensitive_shares"]:
        sections.insert(3, {
            "title": "Bias lens: change of the share on sensitive features",
            "text": "mean of per-row shares of |relevance|; stderr = sqrt(se_a² + se_b²)",
            "table": data["sensitive_shares"]})
    return sections_report(title, sections)


def generation_report(gens: Any, title: str = "DLBacktrace generation") -> str:
    """One or more :class:`~dlbacktrace.tasks.text.GenerationExplanation`: what each generated token
    used of the tokens before it."""
    from markupsafe import Markup

    gens = gens if isinstance(gens, (list, tuple)) else [gens]
    sections: list[dict[str, Any]] = []
    for n, gen in enumerate(gens, start=1):
        label = f"Prompt {n}: " if len(gens) > 1 else ""
        sections.append({"title": f"{label}prompt and answer", "kv": {
            "prompt": gen.prompt_text, "generated": gen.generated_text,
            "mode": gen.mode, "attention": gen.attention,
            "conservation error": f"{gen.conservation_error:.2e}"}})
        # The text package's own display; it escapes every token itself.
        sections.append({"title": f"{label}relevance of earlier tokens per generated token",
                         "html": Markup(gen.to_html())})
        rows = []
        for step, token in enumerate(gen.generated_tokens):
            top = gen.top_contributors(step, 5)
            rows.append({"step": step, "token": visible_token(token),
                         "p": float(gen.probabilities[step]),
                         "top contributors": ", ".join(f"'{visible_token(t.text)}' "
                                                       f"({t.relevance:.3g})" for t in top)})
        sections.append({"title": f"{label}generated tokens", "table": rows})
    return sections_report(title, sections)


def benchmark_report(results: dict[str, Any], folder: str | None = None) -> str:
    """The benchmark's ``results.json`` (plus its curve plots from ``folder``, embedded)."""
    import base64
    import csv
    from pathlib import Path

    sections: list[dict[str, Any]] = [{
        "title": "Summary",
        "kv": {"mode": results.get("mode"), "wall time (s)": results.get("wall_s"),
               **{f"machine {k}": v for k, v in (results.get("machine") or {}).items()}},
    }]
    table = Path(folder) / "results.csv" if folder else None
    if table is not None and table.is_file():
        with table.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
        for task in dict.fromkeys(r["task"] for r in rows):
            task_rows = [{k: _number(v) for k, v in r.items() if k != "task"}
                         for r in rows if r["task"] == task]
            section: dict[str, Any] = {"title": f"Task {task}", "table": task_rows}
            plot = Path(folder) / f"curves_{task}.png"
            if plot.is_file():
                section["images"] = ["data:image/png;base64,"
                                     + base64.b64encode(plot.read_bytes()).decode()]
            sections.append(section)
    else:
        sections += generic_sections({"tasks": results.get("tasks", {})})
    return sections_report("DLBacktrace benchmark", sections,
                           config={"higher_is_better": results.get("higher_is_better")})


def _number(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text
