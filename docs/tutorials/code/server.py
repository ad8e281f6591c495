"""Tutorial: the server's REST API, driven in-process with FastAPI's TestClient."""

# --8<-- [start:app]
from pathlib import Path

from fastapi.testclient import TestClient
from safetensors.torch import save_file

from dlbacktrace.apps.server import ExplainService, ServerConfig, create_app
from dlbacktrace.audit import AuditStore
from dlbacktrace.examples.datasets import load_german_credit
from dlbacktrace.examples.zoo import train_tabular_mlp
from dlbacktrace.io.loading import ModelSpec, load_model

data = load_german_credit()
train, test = data.split(test_fraction=0.2, seed=0)
save_file(train_tabular_mlp(train.x, train.y, seed=0).state_dict(), "credit.safetensors")
Path("credit_model.py").write_text(
    "from dlbacktrace.examples.zoo import TabularMLP\n\n\n"
    "def make_mlp():\n"
    "    return TabularMLP(61, 2)\n"
)
loaded = load_model(ModelSpec(kind="factory", source="credit_model.py:make_mlp",
                              weights="credit.safetensors"))
service = ExplainService(loaded, audit=AuditStore("server-audit.db"))  # what `serve` builds
app = create_app(service, ServerConfig(host="127.0.0.1"))
client = TestClient(app)
# --8<-- [end:app]

# --8<-- [start:requests]
print(client.get("/health").json())
print(client.get("/model").json())
answer = client.post("/explain", json={"kind": "table", "rows": test.x[:2].tolist(),
                                       "mode": "contrast", "target": 1})
print(answer.status_code)                         # 200
body = answer.json()
print(sorted(body))                               # the result, with its audit record id
records = client.get("/explanations").json()      # the audit log, newest first
bad = client.post("/explain", json={"kind": "table", "rows": []})
print(bad.status_code, bad.json()["detail"])      # 4xx with the reason
# --8<-- [end:requests]
assert answer.status_code == 200
assert 400 <= bad.status_code < 500
