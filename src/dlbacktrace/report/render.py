"""Render self-contained HTML reports with Jinja2 (autoescaped; figures embedded as base64).

``explanation_report`` covers one explanation or a batch; ``sections_report`` renders any list
of sections (tables, bars, token highlights, figures) and backs the generation, global and
benchmark reports. The HTML loads nothing from the network.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.report.views import explanation_rows, ledger

__all__ = ["explanation_report", "sections_report", "write_html"]


def _env() -> Any:
    try:
        import jinja2
    except ImportError as exc:
        from dlbacktrace.engine.errors import DLBacktraceError

        raise DLBacktraceError(
            "HTML reports need jinja2: pip install 'dlbacktrace[server]'"
        ) from exc
    return jinja2.Environment(
        loader=jinja2.PackageLoader("dlbacktrace.report", "templates"),
        autoescape=True,
        undefined=jinja2.ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _common(title: str, versions: dict[str, str] | None) -> dict[str, Any]:
    from dlbacktrace.audit.fingerprint import versions as current_versions

    return {
        "title": title,
        "versions": versions or current_versions(),
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }


def explanation_report(
    exp: Explanation,
    kind: str,
    *,
    args: tuple = (),
    kwargs: dict[str, Any] | None = None,
    names: list[str] | None = None,
    tokens: list[list[str]] | None = None,
    feature_names: list[str] | None = None,
    labels: list[str] | None = None,
    model: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
    record_id: int | None = None,
    title: str | None = None,
    versions: dict[str, str] | None = None,
    rows: list[dict[str, Any]] | None = None,
) -> str:
    """HTML for one explanation (batch rows become one section each)."""
    if rows is None:
        rows = explanation_rows(
            exp, kind, args=args, kwargs=kwargs, names=names, tokens=tokens,
            feature_names=feature_names, labels=labels,
        )
    config = {"mode": exp.mode, **(config or {})}
    n = len(rows)
    title = title or ("DLBacktrace explanation" if n == 1 else f"DLBacktrace batch of {n}")
    return _env().get_template("explanation.html.j2").render(
        **_common(title, versions),
        kind=kind,
        rows=rows,
        ledger=ledger(exp),
        model=model or {},
        config=config,
        config_json=json.dumps(config, indent=2, sort_keys=True, default=str),
        record_id=record_id,
    )


def sections_report(
    title: str,
    sections: list[dict[str, Any]],
    *,
    intro: str | None = None,
    config: dict[str, Any] | None = None,
    versions: dict[str, str] | None = None,
) -> str:
    """HTML from sections: each a dict with ``title`` and any of ``text``, ``kv``, ``bars``
    (``feature``/``relevance`` items), ``tokens``, ``table`` + ``columns``, ``images``, ``pre``.
    """
    for i, section in enumerate(sections):
        section.setdefault("id", f"section-{i}")
        if section.get("table") and not section.get("columns"):
            section["columns"] = list(dict.fromkeys(k for r in section["table"] for k in r))
    return _env().get_template("sections.html.j2").render(
        **_common(title, versions),
        sections=sections,
        intro=intro,
        config_json=json.dumps(config, indent=2, sort_keys=True, default=str) if config else None,
    )


def write_html(html: str, path: str | Path) -> Path:
    """Write a report (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
