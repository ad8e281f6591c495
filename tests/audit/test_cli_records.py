"""The CLI records generations (``explain --task causal-lm``) and aggregates
(``dlbacktrace aggregate``) in the audit log, and ``audit verify`` replays them."""

from __future__ import annotations

import json

import pytest
from cli_assets import assets
from typer.testing import CliRunner

from dlbacktrace.apps.cli import app
from dlbacktrace.audit import AuditStore

runner = CliRunner()


def run(*args, code: int = 0):
    result = runner.invoke(app, [str(x) for x in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


@pytest.mark.slow  # generates and explains two prompts, then replays one
def test_causal_lm_explain_is_recorded_and_verifies(tiny_lm_folder, new_location):
    db = new_location()
    spec = ["--model", tiny_lm_folder, "--task", "causal-lm", "--max-new-tokens", "2"]
    result = run("explain", *spec, "--text", "the capital of france is", "--text", "one two",
                 "--format", "json", "--audit", db)
    steps = [len(item["steps"]) for item in json.loads(result.stdout)]
    assert steps == [2, 2]
    with AuditStore(db, create=False) as store:
        records = list(store.iter_records())
        assert [r.kind for r in records] == ["generation", "generation"]
        c = records[0].content
        assert c["source"] == "cli" and c["model"]["spec"]["task"] == "causal-lm"
        assert c["options"]["max_new_tokens"] == 2 and len(c["generation"]["positions"]) == 2
    out = run("audit", "verify", records[1].id, "--db", db, "--json").stdout
    verdict = json.loads(out)
    assert verdict["identical"] and verdict["fingerprint_match"], verdict["message"]
    assert verdict["kind"] == "generation"
    assert "Audit log (2 records)" in run("audit", "list", "--db", db).stdout
    shown = json.loads(run("audit", "show", records[0].id, "--db", db).stdout)
    assert shown["content"]["kind"] == "generation"


def test_aggregate_is_recorded_and_verifies(new_location, tmp_path):
    a = assets()
    db = new_location()
    spec = ["--model", a.iris_spec, "--weights", a.iris_weights]
    run("aggregate", a.iris_csv, *spec, "--label-column", "species", "--target", "label",
        "--json", "--audit", db)
    with AuditStore(db, create=False) as store:
        (rec,) = list(store.iter_records())
    c = rec.content
    assert rec.kind == "aggregate" and c["options"]["target"] == "label"
    assert c["data"]["file"] == a.iris_csv.name and len(c["data"]["file_sha256"]) == 64
    assert c["data"]["rows"] == rec.global_explanation().rows
    verdict = json.loads(run("audit", "verify", rec.id, "--db", db, "--json").stdout)
    assert verdict["identical"] and verdict["kind"] == "aggregate", verdict["message"]
    assert "Audit log (1 records)" in run("audit", "list", "--db", db).stdout
    off = tmp_path / "off.db"
    run("aggregate", a.iris_csv, *spec, "--drop", "species", "--no-audit", "--audit", off)
    assert not off.exists()
