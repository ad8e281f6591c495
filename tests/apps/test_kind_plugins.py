"""A kind registered by a user reaches the CLI and the server with no other change: its
suffix is detected, its JSON fields are part of the request model and its report rows show."""

from __future__ import annotations

import json

import pytest
from toy_kind import VectorKind
from typer.testing import CliRunner

from dlbacktrace.io.kinds import register_kind, unregister_kind

MODEL_FILE = '''
import torch


def make():
    """Output 0 is the sum of the three inputs, output 1 its negation."""
    model = torch.nn.Linear(3, 2, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]]))
    return model
'''


@pytest.fixture
def vector_kind():
    register_kind(VectorKind())
    try:
        yield
    finally:
        unregister_kind("vector")


@pytest.fixture
def model_spec(tmp_path):
    path = tmp_path / "vector_model.py"
    path.write_text(MODEL_FILE)
    return f"{path}:make"


def test_cli_explains_a_registered_kind(vector_kind, model_spec, tmp_path):
    from dlbacktrace.apps.cli import app

    data = tmp_path / "rows.vec"
    data.write_text("1 2 3\n-1 0 0.5\n")
    result = CliRunner().invoke(app, ["explain", str(data), "--model", model_spec,
                                      "--format", "json", "--no-audit"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["kind"] == "vector"
    assert [r["name"] for r in out["rows"]] == ["line 1", "line 2"]
    assert [r["input_total"] for r in out["rows"]] == [6.0, -0.5]
    assert [r["prediction"]["class"] for r in out["rows"]] == [0, 1]


def test_server_accepts_a_registered_kind(vector_kind, model_spec):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from dlbacktrace.apps.server import ExplainService, create_app
    from dlbacktrace.io.loading import load_model

    client = TestClient(create_app(ExplainService(load_model(model_spec))))
    r = client.post("/explain", json={"kind": "vector", "values": [[2.0, 0.0, -0.5]]})
    assert r.status_code == 200, r.text
    row = r.json()["rows"][0]
    assert row["name"] == "json" and row["input_total"] == 1.5
    upload = client.post("/explain", files={"file": ("x.vec", b"4 4 4\n", "text/plain")})
    assert upload.status_code == 200, upload.text
    assert upload.json()["rows"][0]["input_total"] == 12.0
    # Fields of a kind stay refused when the kind is not registered.
    unregister_kind("vector")
    client = TestClient(create_app(ExplainService(load_model(model_spec))))
    refused = client.post("/explain", json={"kind": "vector", "values": [[2.0, 0.0, -0.5]]})
    assert refused.status_code == 422
