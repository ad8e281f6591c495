#!/usr/bin/env bash
# Tutorial: the audit log from the command line (run after audit.py, in the same folder).
set -euo pipefail
# --8<-- [start:cli]
dlbacktrace explain rows.csv --model credit_model.py:make_mlp --weights credit.safetensors \
    --drop label --mode contrast --audit audit.db            # recorded as record 2
dlbacktrace audit list --db audit.db
dlbacktrace audit verify 2 --db audit.db                     # bit-identical
dlbacktrace audit verify-chain --db audit.db
dlbacktrace report --record 2 --db audit.db --out record2.html
dlbacktrace audit export --db audit.db > audit.jsonl          # one JSON line per record
# --8<-- [end:cli]
