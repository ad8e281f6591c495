"""The audit log: Python API recording, bit-identical verify, tamper detection by the hash chain,
append-only triggers, concurrent writers and crash safety (writers killed with SIGKILL
mid-batch); each on SQLite and on a real PostgreSQL (``conftest.py``)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest
import sqlalchemy as sa
import torch
from cli_assets import assets

from dlbacktrace import Backtrace
from dlbacktrace.audit import AuditError, AuditStore, verify_chain, verify_record
from dlbacktrace.audit.chain import GENESIS, canonical_json, chain_hash
from dlbacktrace.engine.backtrace import RULE_SET
from dlbacktrace.io.loading import load_model, parse_model_spec


@pytest.fixture(scope="module")
def iris():
    a = assets()
    spec = parse_model_spec(a.iris_spec, weights=str(a.iris_weights))
    loaded = load_model(spec)
    return spec, loaded, a.iris_x, Backtrace(loaded.model)  # one capture for the module


@pytest.fixture()
def filled(new_location, iris):
    spec, _, x, bt = iris
    store = AuditStore(new_location())
    ids = [
        store.explain(bt, x[0:3], spec=spec)[1],
        store.explain(bt, x[3:6], spec=spec, mode="contrast", target=[0, 2, 1])[1],
        store.explain(bt, x[6:9], spec=spec, target=1)[1],
    ]
    yield store, ids
    store.close()


def test_records_hold_the_context(filled, iris):
    store, ids = filled
    assert ids == [1, 2, 3]
    rec = store.get(2)
    c = rec.content
    assert set(c["versions"]) >= {"dlbacktrace", "torch", "python"}
    assert c["model"]["spec"] == iris[0].to_dict()
    assert len(c["model"]["fingerprint"]["graph"]) == 64
    # contrast mode's default attention rule is "split" (DESIGN.md 2.2)
    assert c["options"] == {"mode": "contrast", "target": [0, 2, 1], "attention": "split"}
    assert c["versions"]["rule_set"] == RULE_SET
    assert c["target"] == [0, 2, 1] and c["output"]["shape"] == [3, 3]
    exp = rec.explanation()
    assert exp.mode == "contrast" and exp.relevance.shape == (3, 4)
    assert torch.equal(rec.inputs().args[0], iris[2][3:6])
    # The chain: each hash covers the content and the previous hash.
    first, second = store.get(1), store.get(2)
    assert first.prev_hash == GENESIS and second.prev_hash == first.hash
    assert second.hash == chain_hash(first.hash, canonical_json(c))


def test_verify_untouched_record_is_bit_identical(filled, iris):
    store, ids = filled
    assert verify_record(store, 1).identical  # the model reloaded from the stored spec
    for record_id in ids:
        result = verify_record(store, record_id, iris[3])
        assert result.identical and result.fingerprint_match, result.message
        assert result.max_abs_diff == 0.0
        assert "bit-identical" in result.message


def test_verify_names_a_changed_rule_set(filled, iris, monkeypatch):
    """A record made by another rule set is reported as such, not as a plain difference."""
    import dlbacktrace.engine.backtrace as backtrace_module

    store, ids = filled
    monkeypatch.setattr(backtrace_module, "RULE_SET", "99")
    result = verify_record(store, ids[0], iris[3])
    assert result.stored_rule_set == RULE_SET and result.rule_set == "99"
    assert f"recorded with rule set {RULE_SET}, this library computes rule set 99" in (
        result.message
    )


def test_verify_reports_a_changed_model(filled, iris):
    store, _ = filled
    changed = load_model(iris[0])
    with torch.no_grad():
        changed.model.net[0].weight[0, 0] += 0.5
    result = verify_record(store, 1, changed)
    assert not result.identical and result.max_abs_diff > 0
    assert not result.fingerprint_match and "weights" in result.message
    assert result.fingerprint["graph"] == result.stored_fingerprint["graph"]


def test_verify_without_spec_needs_the_model(new_location, iris):
    _, loaded, x, bt = iris
    with AuditStore(new_location()) as store:
        _, rid = store.explain(bt, x[:3])
        with pytest.raises(AuditError, match="no model spec"):
            verify_record(store, rid)
        assert verify_record(store, rid, bt).identical


def test_chain_ok_then_edited_record_is_caught(filled, tamper):
    store, _ = filled
    assert verify_chain(store).ok
    content = json.loads(tamper(store, "SELECT content FROM dlbacktrace_audit WHERE id=2")[0][0])
    content["target"] = [1, 1]  # a forged target
    tamper(store, "UPDATE dlbacktrace_audit SET content=:c WHERE id=2", c=json.dumps(content))
    report = verify_chain(store)
    assert not report.ok and [i for i, _ in report.problems] == [2]
    assert "content was changed" in report.problems[0][1]


def test_edited_created_at_is_caught(filled, tamper):
    """Issue 13 item 10: the created_at column (shown by `audit list`) is checked against the
    hashed timestamp."""
    store, _ = filled
    tamper(store, "UPDATE dlbacktrace_audit SET created_at=:t WHERE id=1",
           t="1999-01-01T00:00:00")
    report = verify_chain(store)
    assert [i for i, _ in report.problems] == [1]
    assert "created_at" in report.problems[0][1]


def test_edited_last_record_with_kept_head_says_what_was_found(filled, tamper):
    store, ids = filled
    head = verify_chain(store).head
    last = ids[-1]
    content = json.loads(tamper(store, "SELECT content FROM dlbacktrace_audit WHERE id=:i",
                                i=last)[0][0])
    content["target"] = [0, 0, 0]
    tamper(store, "UPDATE dlbacktrace_audit SET content=:c WHERE id=:i",
           c=json.dumps(content), i=last)
    report = verify_chain(store, expect_head=head)
    assert [i for i, _ in report.problems] == [last]  # the stored head still matches
    assert "content was changed" in report.problems[0][1]


def test_edited_relevance_blob_is_caught(filled, tamper):
    store, _ = filled
    blob = bytearray(tamper(store, "SELECT explanation FROM dlbacktrace_audit WHERE id=3")[0][0])
    blob[len(blob) // 2] ^= 0xFF
    tamper(store, "UPDATE dlbacktrace_audit SET explanation=:b WHERE id=3", b=bytes(blob))
    report = verify_chain(store)
    assert report.problems == [(3, "the stored relevance was changed")]


def test_deleted_records_are_caught(filled, tamper):
    store, _ = filled
    head = verify_chain(store).head
    tamper(store, "DELETE FROM dlbacktrace_audit WHERE id=3")  # the last one
    assert verify_chain(store).ok  # a shorter chain is still a chain ...
    assert not verify_chain(store, expect_head=head).ok  # ... the kept head catches it
    tamper(store, "DELETE FROM dlbacktrace_audit WHERE id=1")  # one in the middle of the chain
    report = verify_chain(store)
    assert [i for i, _ in report.problems] == [2] and "link broken" in report.problems[0][1]


def test_log_is_append_only(filled, backend):
    store, _ = filled
    statements = ["UPDATE dlbacktrace_audit SET content='{}' WHERE id=1",
                  "DELETE FROM dlbacktrace_audit WHERE id=1"]
    if backend == "postgresql":  # SQLite has no TRUNCATE (DELETE without WHERE is covered)
        statements.append("TRUNCATE dlbacktrace_audit")
    engine = sa.create_engine(store.url)  # a plain connection, not the store's own
    for sql in statements:
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.exec_driver_sql(sql)
    engine.dispose()
    reopened = AuditStore(store.url)  # opening again keeps the triggers (no duplicates)
    assert reopened.count() == 3
    reopened.close()
    assert verify_chain(store).ok


def test_concurrent_writers_keep_one_chain(filled):
    """Several threads (each with its own store, so its own connections) append at once: no
    record is lost and the chain stays linear."""
    template, _ = filled
    rec = template.get(1)
    content = rec.content
    errors: list[Exception] = []

    def write(writer: int) -> None:
        try:
            with AuditStore(template.url) as store:
                for i in range(10):
                    store.append({**content, "source": f"thread{writer}", "n": i},
                                 rec.explanation_blob, rec.inputs_blob)
        except Exception as exc:  # reported by the test below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    report = verify_chain(template)
    assert report.ok, report.problems
    assert report.count == 3 + 60
    written = {(r.content["source"], r.content.get("n")) for r in template.iter_records()}
    assert written >= {(f"thread{w}", i) for w in range(6) for i in range(10)}


# Writers append a real stored explanation (made once by the test) over and over; no model
# work in the children, so the kill lands in the middle of a stream of commits.
WRITER = textwrap.dedent("""
    import json
    from pathlib import Path
    from dlbacktrace.audit import AuditStore
    folder = Path({folder!r})
    content = json.loads((folder / "content.json").read_text())
    explanation, inputs = (folder / "exp.npz").read_bytes(), (folder / "inp.npz").read_bytes()
    store = AuditStore({db!r})
    for i in range(100000):
        rid = store.append({{**content, "source": "writer{seed}", "n": i}}, explanation, inputs)
        print(rid, flush=True)
""")


def test_sigkill_mid_batch_loses_no_committed_record(tmp_path, filled, new_location, backend):
    template, _ = filled
    rec = template.get(1)
    (tmp_path / "content.json").write_text(rec.content_json)
    (tmp_path / "exp.npz").write_bytes(rec.explanation_blob)
    (tmp_path / "inp.npz").write_bytes(rec.inputs_blob)
    db = new_location()
    AuditStore(db).close()  # create the schema before the writers race
    procs = []
    for seed in (1, 2):
        script = tmp_path / f"writer{seed}.py"
        script.write_text(WRITER.format(folder=str(tmp_path), db=str(db), seed=seed))
        procs.append(subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    committed: list[int] = []
    try:
        for proc in procs:  # wait until each writer has committed a few records
            for _ in range(4):
                line = proc.stdout.readline()
                assert line, proc.stderr.read()
                committed.append(int(line))
        time.sleep(0.2)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGKILL)
    for proc in procs:
        rest, _ = proc.communicate(timeout=60)
        committed += [int(x) for x in rest.split()]
        assert proc.returncode == -signal.SIGKILL
    with AuditStore(db) as store:
        report = verify_chain(store)
        assert report.ok, report.problems
        ids = [r.id for r in store.iter_records()]
        assert set(committed) <= set(ids)  # every committed record survived the kill
        # one linear chain from both writers (report.ok); SQLite ids have no gaps, while a
        # PostgreSQL sequence keeps the number a killed transaction had drawn
        assert ids == sorted(set(ids))
        if backend == "sqlite":
            assert ids == list(range(1, len(ids) + 1))
        sources = {store.get(i).content["source"] for i in ids}
        assert sources == {"writer1", "writer2"}
        assert store.get(ids[-1]).explanation().relevance.shape == (3, 4)
        assert verify_record(store, ids[-1]).identical  # a replayable record, after the kill
