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

__all__ = ["explanation_report", "render_page", "sections_report", "write_html"]


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


def render_page(template: str, *, title: str, versions: dict[str, str] | None = None,
                **context: Any) -> str:
    """Render one of the report templates with the page header every report carries.

    Parameters
    ----------
    template
        Template file name in ``dlbacktrace/report/templates`` (``explanation.html.j2``,
        ``sections.html.j2``).
    title
        The page title.
    versions
        Library versions to show (default: the running ones); a record's stored versions
        keep a rebuilt report truthful.
    **context
        The template's own variables.
    """
    from dlbacktrace.audit.fingerprint import versions as current_versions

    return _env().get_template(template).render(
        title=title,
        versions=versions or current_versions(),
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        **context,
    )


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
    """HTML for one explanation (batch rows become one section each).

    Parameters
    ----------
    exp
        The explanation.
    kind
        Name of the input kind (decides what each row shows).
    args, kwargs, names, tokens, feature_names, labels
        The explained inputs and their names, as for
        :func:`~dlbacktrace.report.views.explanation_rows`.
    model
        Model facts to list (description, fingerprints).
    config
        The explanation options to list (``mode`` is added).
    record_id
        The audit record, if the explanation was stored.
    title
        Page title (default from the number of rows).
    versions
        Library versions to show (default: the running ones).
    rows
        Rows already built (then the inputs are not needed).
    """
    if rows is None:
        rows = explanation_rows(
            exp, kind, args=args, kwargs=kwargs, names=names, tokens=tokens,
            feature_names=feature_names, labels=labels,
        )
    config = {"mode": exp.mode, **(config or {})}
    n = len(rows)
    title = title or ("DLBacktrace explanation" if n == 1 else f"DLBacktrace batch of {n}")
    return render_page(
        "explanation.html.j2",
        title=title,
        versions=versions,
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

    Parameters
    ----------
    title
        The page title.
    sections
        The sections, in order (an ``id`` and table ``columns`` are filled in).
    intro
        A paragraph under the title.
    config
        Settings to list as JSON at the end.
    versions
        Library versions to show (default: the running ones).
    """
    for i, section in enumerate(sections):
        section.setdefault("id", f"section-{i}")
        if section.get("table") and not section.get("columns"):
            section["columns"] = list(dict.fromkeys(k for r in section["table"] for k in r))
    return render_page(
        "sections.html.j2",
        title=title,
        versions=versions,
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
