"""``python -m dlbacktrace.apps.cli``: the same as the ``dlbacktrace`` console script."""

from dlbacktrace.apps.cli import main

main()
