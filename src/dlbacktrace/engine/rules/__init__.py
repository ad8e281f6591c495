"""Relevance rules, one module per op family; ``registry`` maps ATen ops to their ``OpSpec``.

Importing the package declares the built-in ops (``catalog``), so the table is complete
whichever rules module is imported first.
"""

from dlbacktrace.engine.rules import catalog as _catalog  # noqa: F401  (declares built-ins)
