"""Reports for saved JSON results: ``explain --format json``, benchmark and global results.

The JSON of an explanation renders with the explanation template; any other result renders
generically: scalars as a key/value table, lists of records as tables, ``{name: number}``
mappings as bar charts, so new result types get a readable report without a new template.
"""

from __future__ import annotations

import json
from typing import Any

from dlbacktrace.report.render import render_page, sections_report
from dlbacktrace.viz.tokens import visible_token

__all__ = [
    "benchmark_report",
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


def global_report(g: Any, title: str = "DLBacktrace global explanation") -> str:
    """A :class:`~dlbacktrace.aggregate.GlobalExplanation`: per-class feature importance."""
    data = g.to_json()
    sections: list[dict[str, Any]] = [{
        "title": "Summary",
        "kv": {"rows": data["rows"], "batches": data["batches"], "mode": data["mode"],
               "target": data["target"], "classes": ", ".join(map(str, data["classes"]))},
    }]
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
