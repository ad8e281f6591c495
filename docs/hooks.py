"""MkDocs hook: Sphinx cross-reference roles in docstrings become (optional) links.

The code's numpy-style docstrings use Sphinx roles (``:class:`~dlbacktrace.Backtrace```);
mkdocstrings renders them as literal text. This turns each one into an mkdocs-autorefs
reference marked optional: it links where the object has a page and stays plain code where it
has none (a private helper, a name relative to its module), so ``--strict`` stays meaningful
for the links the pages write themselves.
"""

from __future__ import annotations

import html
import re
from typing import Any

# A name may be wrapped over two lines in the docstring; the whitespace is dropped.
ROLE = re.compile(r":(?:class|func|meth|data|attr|mod|exc|obj):<code>(~?)([\w.\s]+?)(\(\))?</code>")


def _reference(match: re.Match[str]) -> str:
    short, call = match.group(1), match.group(3) or ""
    target = re.sub(r"\s+", "", match.group(2))
    title = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
    if target.startswith("."):  # relative to the module: no absolute identifier to link
        return f"<code>{html.escape(title)}{call}</code>"
    return (f'<autoref identifier="{html.escape(target)}" optional>'
            f"<code>{html.escape(title)}{call}</code></autoref>")


def on_page_content(content: str, **kwargs: Any) -> str:
    """Rewrite the roles in a rendered page before autorefs resolves references."""
    return ROLE.sub(_reference, content)
