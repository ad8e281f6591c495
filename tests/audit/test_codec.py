"""The audit codec writes through engine/fileformat.py: bytes in memory, no temporary files."""

from __future__ import annotations

import torch
import torch.nn as nn

from dlbacktrace import Backtrace
from dlbacktrace.audit.codec import (
    StoredInputs,
    decode_explanation,
    decode_inputs,
    encode_explanation,
    encode_inputs,
    relevance_digest,
)


def test_explanation_bytes_keep_names_not_inputs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    x = torch.randn(2, 3, dtype=torch.double)
    exp = Backtrace(model).explain(x, feature_names=["a", "b", "c"], output_names=["n", "y"])
    back = decode_explanation(encode_explanation(exp))
    assert relevance_digest(back) == relevance_digest(exp)
    assert back.feature_names == ["a", "b", "c"] and back.output_names == ["n", "y"]
    assert back.inputs is None  # the record stores the exact inputs beside it
    assert exp.inputs is not None  # the caller's explanation is not changed


def test_inputs_bytes_round_trip() -> None:
    stored = StoredInputs((torch.arange(6.0).reshape(2, 3),),
                          {"mask": torch.tensor([[1, 0, 1]])}, {"flag": True},
                          torch.tensor([0.5, 1.5]))
    back = decode_inputs(encode_inputs(stored))
    assert torch.equal(back.args[0], stored.args[0])
    assert torch.equal(back.kwargs["mask"], stored.kwargs["mask"])
    assert back.consts == {"flag": True} and torch.equal(back.seed, stored.seed)


def test_global_bytes_round_trip_and_content_digest() -> None:
    """The aggregate's own save format, hashed by content: equal for equal results, different
    when one value changes."""
    import io

    import numpy as np

    from dlbacktrace.aggregate import aggregate
    from dlbacktrace.audit.codec import archive_digest, decode_global, encode_global
    from dlbacktrace.engine.fileformat import read_archive, write_archive

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    g = aggregate(model, torch.randn(10, 3), batch_size=4)
    blob = encode_global(g)
    back = decode_global(blob)
    assert np.array_equal(back.class_maps(), g.class_maps(), equal_nan=True)  # NaN: no rows
    assert back.rows == 10
    assert archive_digest(encode_global(back)) == archive_digest(blob)
    header, arrays = read_archive(blob)
    name = next(k for k in arrays if k.endswith("/sum"))
    arrays[name] = arrays[name].copy()
    arrays[name].flat[0] = np.nextafter(arrays[name].flat[0], np.inf)  # one ulp
    forged = io.BytesIO()
    write_archive(forged, arrays, header)
    assert archive_digest(forged.getvalue()) != archive_digest(blob)
