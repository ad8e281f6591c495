"""The benchmark's result files are the evaluation's (:mod:`dlbacktrace.evaluation.outputs`)."""

from dlbacktrace.evaluation.outputs import markdown, merge, plot_curves, write_outputs

__all__ = ["markdown", "merge", "plot_curves", "write_outputs"]
