"""Self-contained HTML reports (Jinja2 templates, figures embedded, no network).

Needs the ``server`` extra (jinja2) and ``viz`` (matplotlib) for image figures.
"""

from dlbacktrace.report.render import explanation_report, sections_report, write_html
from dlbacktrace.report.views import explanation_rows, ledger, prediction

__all__ = [
    "explanation_report",
    "explanation_rows",
    "ledger",
    "prediction",
    "sections_report",
    "write_html",
]
