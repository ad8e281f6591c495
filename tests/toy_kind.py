"""A toy input kind, as a user would register one: ``.vec`` files of space-separated numbers."""

from __future__ import annotations

from pathlib import Path

import torch

from dlbacktrace.io.batch import InputBatch
from dlbacktrace.io.kinds import InputKind, RequestField


class VectorKind(InputKind):
    """Toy kind: a ``.vec`` text file, one row of space-separated numbers per line."""

    name = "vector"
    suffixes = (".vec",)
    request_fields = {"values": RequestField(list[list[float]] | None, "Rows of numbers.")}

    def from_file(self, path, loaded=None, options=None):
        rows = [[float(v) for v in line.split()] for line in Path(path).read_text().splitlines()
                if line.strip()]
        return InputBatch("vector", (torch.tensor(rows),),
                          names=[f"line {i + 1}" for i in range(len(rows))])

    def from_request(self, request, loaded=None, limits=None):
        return InputBatch("vector", (torch.tensor(request.values),), names=["json"])

    def report_row(self, maps, i, inputs, *, top_k=10, figures=True):
        row = super().report_row(maps, i, inputs, top_k=top_k, figures=figures)
        row["input_total"] = float(inputs.args[0][i].sum())
        return row
