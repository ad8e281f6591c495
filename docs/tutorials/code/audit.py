"""Tutorial: the audit log — record explanations, re-verify them, check the hash chain."""

# --8<-- [start:model]
from pathlib import Path

import pandas as pd
import torch
from safetensors.torch import save_file

from dlbacktrace import Backtrace
from dlbacktrace.audit import AuditStore, verify_chain, verify_record
from dlbacktrace.examples.datasets import load_german_credit
from dlbacktrace.examples.zoo import train_tabular_mlp
from dlbacktrace.io.loading import ModelSpec, load_model

data = load_german_credit()
train, test = data.split(test_fraction=0.2, seed=0)
model = train_tabular_mlp(train.x, train.y, seed=0)

# A record must say how to reload the model without pickle: a factory plus safetensors weights.
save_file(model.state_dict(), "credit.safetensors")
Path("credit_model.py").write_text(
    "from dlbacktrace.examples.zoo import TabularMLP\n\n\n"
    "def make_mlp():\n"
    "    return TabularMLP(61, 2)\n"
)
spec = ModelSpec(kind="factory", source="credit_model.py:make_mlp", weights="credit.safetensors")
loaded = load_model(spec)                     # what `audit verify` will do later
# --8<-- [end:model]

# --8<-- [start:record]
store = AuditStore("audit.db")               # SQLite (WAL); or any SQLAlchemy URL
bt = Backtrace(loaded.model)
x = torch.from_numpy(test.x[:4])
exp, record_id = store.explain(bt, x, spec=spec, mode="contrast")
record = store.get(record_id)
print(record.summary())                       # time, versions, fingerprints, target, ...
# --8<-- [end:record]

# --8<-- [start:verify]
result = verify_record(store, record_id)      # reload from the spec, recompute, compare
print(result.message)                         # "bit-identical ..."
report = verify_chain(store)                  # every hash and every link
print(report.ok, report.to_dict())
# --8<-- [end:verify]
assert result.identical
assert report.ok
store.close()

# Rows for the command-line part of the tutorial.
frame = pd.DataFrame(test.x[:4], columns=data.feature_names)
frame["label"] = test.y[:4]
frame.to_csv("rows.csv", index=False)
