"""Reports for saved JSON results: ``explain --format json``, benchmark and global results.

The JSON of an explanation renders with the explanation template; any other result renders
generically: scalars as a key/value table, lists of records as tables, ``{name: number}``
mappings as bar charts, so new result types get a readable report without a new template.
"""

from __future__ import annotations

import json
from typing import Any

from .render import _common, _env, sections_report

__all__ = ["generic_sections", "report_from_json"]


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
        return _env().get_template("explanation.html.j2").render(
            **_common(title or ("DLBacktrace explanation" if n == 1 else
                                f"DLBacktrace batch of {n}"), None),
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
