"""Input kinds: every registered kind reads its files to the expected tensors, the registry
finds kinds by name and suffix, and a kind registered by a user works in ``read_input``,
``read_batches`` and the report rows with no other change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from toy_kind import VectorKind

from dlbacktrace import Backtrace
from dlbacktrace.io.batch import InputFileError
from dlbacktrace.io.inputs import read_batches, read_input
from dlbacktrace.io.kinds import (
    InputKind,
    ReadOptions,
    detect_kind,
    get_kind,
    kind_names,
    register_kind,
    registered_kinds,
    unregister_kind,
)
from dlbacktrace.report.views import explanation_rows


class CharTokenizer:
    """A stand-in tokenizer: one id per character (its code point), padded with 0."""

    def __call__(self, texts, return_tensors, padding, truncation, max_length):
        assert return_tensors == "pt" and padding and truncation
        ids = [[ord(c) for c in t][:max_length] for t in texts]
        width = max(len(row) for row in ids)
        return {
            "input_ids": torch.tensor([row + [0] * (width - len(row)) for row in ids]),
            "attention_mask": torch.tensor([[1] * len(row) + [0] * (width - len(row))
                                            for row in ids]),
        }

    def convert_ids_to_tokens(self, ids):
        return [chr(i) for i in ids]


class Loaded:
    """The parts of a LoadedModel the kinds read."""

    preprocess = None
    tokenizer = CharTokenizer()
    feature_names = None


# ---- every registered kind round-trips a file ----------------------------------------------


def _png(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    from PIL import Image

    pixels = np.array([[0, 51, 102], [153, 204, 255]], dtype=np.uint8)
    path = tmp_path / "x.png"
    Image.fromarray(pixels, mode="L").save(path)
    expected = torch.tensor([[[[0.0, 0.2, 0.4], [0.6, 0.8, 1.0]]]])
    return path, {"args": (expected,), "names": ["x.png"]}


def _csv(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n1.5,-2\n0.25,4\n")
    expected = torch.tensor([[1.5, -2.0], [0.25, 4.0]])
    return path, {"args": (expected,), "feature_names": ["a", "b"],
                  "names": ["row 0", "row 1"]}


def _npy(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "t.npy"
    np.save(path, np.array([[1, 2, 3]], dtype=np.float32))
    return path, {"args": (torch.tensor([[1.0, 2.0, 3.0]]),), "names": ["t[0]"]}


def _jsonl(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    path = tmp_path / "t.jsonl"
    path.write_text('{"text": "ab"}\n{"text": "c"}\n')
    kwargs = {"input_ids": torch.tensor([[97, 98], [99, 0]]),
              "attention_mask": torch.tensor([[1, 1], [1, 0]])}
    return path, {"kwargs": kwargs, "tokens": [["a", "b"], ["c"]], "names": ["ab", "c"]}


FILES = {"image": _png, "table": _csv, "tensor": _npy, "text": _jsonl}


def test_every_registered_kind_has_a_round_trip_case():
    assert set(FILES) == set(kind_names())


@pytest.mark.parametrize("name", sorted(FILES))
def test_from_file_round_trips(name, tmp_path):
    path, expected = FILES[name](tmp_path)
    assert detect_kind(path) == name
    kind = get_kind(name)
    batch = kind.from_file(path, Loaded())
    assert batch.kind == name
    assert len(batch.args) == len(expected.get("args", ()))
    for got, want in zip(batch.args, expected.get("args", ()), strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-7)
    assert set(batch.kwargs) == set(expected.get("kwargs", {}))
    for key, want in expected.get("kwargs", {}).items():
        assert torch.equal(batch.kwargs[key], want)
    assert batch.names == expected["names"]
    assert batch.feature_names == expected.get("feature_names")
    assert batch.tokens == expected.get("tokens")
    # read_input (the CLI's and the server's path) gives the same batch.
    again = read_input(path, Loaded())
    assert all(torch.equal(a, b) for a, b in zip(again.args, batch.args, strict=True))
    assert all(torch.equal(again.kwargs[k], v) for k, v in batch.kwargs.items())
    if name == "text":
        return  # an uploaded text is one text, whatever its suffix
    upload = kind.from_upload(path.read_bytes(), path.name, Loaded())
    assert all(torch.equal(a, b) for a, b in zip(upload.args, batch.args, strict=True))


def test_safetensors_keyword_inputs(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "kw.safetensors"
    save_file({"x": torch.ones(2, 3), "y": torch.zeros(2, 1)}, str(path))
    batch = read_input(path)
    assert batch.args == () and set(batch.kwargs) == {"x", "y"} and batch.size == 2


def test_text_files_and_inline_texts_batch_together(tmp_path):
    path, _ = _jsonl(tmp_path)
    batches = read_batches([path], Loaded(), inline=["xyz"], batch_size=2)
    assert [b.names for b in batches] == [["xyz", "ab"], ["c"]]
    assert batches[0].kwargs["input_ids"].tolist() == [[120, 121, 122], [97, 98, 0]]


def test_images_are_grouped_and_tables_split(tmp_path):
    from PIL import Image

    paths = []
    for k in range(3):
        p = tmp_path / f"i{k}.png"
        Image.fromarray(np.full((2, 2), 51 * k, dtype=np.uint8), mode="L").save(p)
        paths.append(p)
    groups = read_batches(paths, batch_size=2)
    assert [b.names for b in groups] == [["i0.png", "i1.png"], ["i2.png"]]
    assert groups[1].args[0].flatten().tolist() == pytest.approx([0.4] * 4)
    csv = tmp_path / "t.csv"
    csv.write_text("a\n" + "\n".join(str(v) for v in range(5)) + "\n")
    parts = read_batches([csv], batch_size=2)
    assert [b.args[0].flatten().tolist() for b in parts] == [[0, 1], [2, 3], [4]]
    assert all(b.args[0].storage_offset() == 0 for b in parts)  # fresh buffers, not views


def test_mixed_kinds_and_unknown_suffixes_are_refused(tmp_path):
    with pytest.raises(InputFileError, match="mixed input kinds"):
        read_batches([tmp_path / "a.png", tmp_path / "b.csv"])
    with pytest.raises(InputFileError, match=r"supported: \['.csv', '.jpeg'"):
        detect_kind("model.bin")
    with pytest.raises(InputFileError, match="unknown input kind 'audio'"):
        get_kind("audio")


def test_registry_refuses_clashes():
    class Clash(InputKind):
        name = "other-table"
        suffixes = (".csv",)

    with pytest.raises(ValueError, match="already belong to kind 'table'"):
        register_kind(Clash())
    with pytest.raises(ValueError, match="already registered"):
        register_kind(type(get_kind("image"))())
    assert "other-table" not in registered_kinds()


# ---- a kind registered by a user -----------------------------------------------------------


@pytest.fixture
def vector_kind():
    kind = register_kind(VectorKind())
    try:
        yield kind
    finally:
        unregister_kind("vector")
    assert "vector" not in registered_kinds()


def test_a_registered_kind_reads_and_reports(vector_kind, tmp_path):
    path = tmp_path / "x.VEC"
    path.write_text("1 2 3\n-1 0 0.5\n")
    assert detect_kind(path) == "vector"
    batch = read_input(path)
    assert batch.kind == "vector" and batch.args[0].tolist() == [[1, 2, 3], [-1, 0, 0.5]]
    assert [b.size for b in read_batches([path], batch_size=1)] == [1, 1]
    # A linear model whose output 0 is the sum of the inputs and output 1 is their negation.
    model = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]))
    exp = Backtrace(model).explain(batch.args[0], target=0)
    rows = explanation_rows(exp, "vector", args=batch.args, names=batch.names)
    assert [r["name"] for r in rows] == ["line 1", "line 2"]
    assert [r["input_total"] for r in rows] == [6.0, -0.5]  # the kind's own field
    assert [r["prediction"]["class"] for r in rows] == [0, 1]  # 6 > -6; -0.5 < 0.5
    assert rows[0]["top_features"][0]["feature"] == "(2,)"  # |3| is the largest input
    assert rows[0]["shape"] == [3]


def test_unregistered_kind_names_get_generic_rows(tmp_path):
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    x = torch.tensor([[0.5, -2.0]])
    exp = Backtrace(model).explain(x)
    row = explanation_rows(exp, "no-such-kind", args=(x,))[0]
    assert row["top_features"][0]["feature"] == "(1,)" and row["shape"] == [2]


def test_read_options_reach_the_kind(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a,b,label\n1,2,0\n3,4,1\n")
    batch = get_kind("table").from_file(path, options=ReadOptions(drop=["label"],
                                                                 columns=["b"]))
    assert batch.feature_names == ["b"] and batch.args[0].tolist() == [[2.0], [4.0]]
