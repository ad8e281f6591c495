"""``dlbacktrace aggregate`` with the bias lens and run options, and ``dlbacktrace compare``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from cli_assets import IRIS_FEATURES, assets
from typer.testing import CliRunner

import dlbacktrace.aggregate as aggregate_package
from dlbacktrace import Backtrace
from dlbacktrace.aggregate import GlobalExplanation
from dlbacktrace.aggregate.stats import ClassMoments
from dlbacktrace.apps.cli import app

runner = CliRunner()


def run(*args, code: int = 0):
    result = runner.invoke(app, [str(x) for x in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


def fails_cleanly(*args) -> str:
    result = run(*args, code=2)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.output


@pytest.fixture(scope="module")
def iris(tmp_path_factory):
    """The iris CSV with a 'site' column (the groups) and the model's options."""
    a = assets()
    frame = pd.read_csv(a.iris_csv)
    frame["site"] = np.where(np.arange(len(frame)) % 3 == 0, "north", "south")
    path = tmp_path_factory.mktemp("bias") / "iris_sites.csv"
    frame.to_csv(path, index=False)
    return a, path, frame, ["--model", a.iris_spec, "--weights", a.iris_weights,
                            "--drop", "species"]


def test_aggregate_bias_lens_shares_equal_a_direct_computation(iris, tmp_path, monkeypatch):
    from dlbacktrace.io.loading import load_model

    a, path, frame, spec = iris
    seen = {}
    real = aggregate_package.aggregate

    def spy(*args, **kwargs):  # what the CLI passes on, and the threads it runs with
        seen.update(kwargs, threads=torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(aggregate_package, "aggregate", spy)
    before = torch.get_num_threads()
    threads = 1 if before > 1 else 2
    checkpoint, report = tmp_path / "ck.npz", tmp_path / "report.html"
    result = run("aggregate", path, *spec, "--group-column", "site",
                 "--sensitive", "petal width,sepal length", "--threads", threads,
                 "--layers", "net.0", "--checkpoint", checkpoint, "--num-workers", 3,
                 "--report", report, "--json")
    assert torch.get_num_threads() == before and seen["threads"] == threads
    assert seen["backend"] == "local" and seen["num_workers"] == 3
    assert seen["layers"] == ["net.0"] and seen["checkpoint"] == checkpoint
    data = json.loads(result.stdout)
    assert data["groups"]["counts"] == {"north": 2, "south": 4}
    assert {r["layer"] for r in data["layers"]} == {"net.0"}
    model = load_model(a.iris_spec, weights=str(a.iris_weights)).model
    x = torch.tensor(frame[IRIS_FEATURES].to_numpy(), dtype=torch.float32)
    R = np.abs(Backtrace(model).explain(x).relevance.double().numpy())
    sites = frame["site"].to_numpy()
    got = {(r["sensitive"], r["group"]): r for r in data["sensitive_shares"]}
    for name in ("petal width", "sepal length"):
        share = R[:, IRIS_FEATURES.index(name)] / R.sum(1)
        for group, mask in (("north", sites == "north"), ("south", sites == "south"),
                            ("(all rows)", np.ones(len(sites), bool))):
            row = got[(name, group)]
            assert row["rows"] == mask.sum()
            assert row["share"] == pytest.approx(share[mask].mean(), rel=1e-5)
            assert row["stderr"] == pytest.approx(
                share[mask].std(ddof=1) / np.sqrt(mask.sum()), rel=1e-4)
    assert GlobalExplanation.load(checkpoint).groups.names == ["north", "south"]
    html = report.read_text()
    assert "Bias lens: share of |relevance| on sensitive features" in html
    assert html.count('src="data:image/png;base64,') == 3  # importance, beeswarm, shares
    table = run("aggregate", path, *spec, "--group-column", "site",
                "--sensitive", "petal width").output  # resumed from nothing, printed
    assert "Share of |relevance| on sensitive features" in table and "north" in table


def test_aggregate_bad_bias_and_run_options_fail_cleanly(iris):
    _, path, _, spec = iris
    assert "--sensitive needs --group-column" in fails_cleanly(
        "aggregate", path, *spec, "--sensitive", "petal width")
    out = fails_cleanly("aggregate", path, *spec, "--group-column", "site",
                        "--sensitive", "petal")
    assert "BiasLensError" in out and "did you mean 'petal length', 'petal width'" in out
    assert len(out.strip().splitlines()) == 1
    assert "group column 'zone' not found" in fails_cleanly(
        "aggregate", path, *spec, "--group-column", "zone")
    assert "--backend must be local or ray" in fails_cleanly(
        "aggregate", path, *spec, "--backend", "spark")
    assert "no module named 'nope'" in fails_cleanly(
        "aggregate", path, *spec, "--drop", "site", "--layers", "nope")


def _saved(tmp_path, name, sumabs, sumsq, features=("f0", "f1")) -> str:
    sumabs = np.asarray(sumabs, float)
    m = ClassMoments(np.array([2, 2]), {"sum": sumabs.copy(), "sumabs": sumabs,
                                        "sumsq": np.asarray(sumsq, float)})
    g = GlobalExplanation(mode="default", target="None", n_classes=2, class_names=["no", "yes"],
                          inputs={"x": m}, feature_names={"x": list(features)}, rows=4, batches=1)
    return str(g.save(tmp_path / name))


def test_compare_writes_the_comparison_report_and_json(tmp_path):
    # as in the hand computation of test_global_compare: f0 loses 2 -> 1 (SE sqrt(2/3/4)),
    # f1 gains 0.5 -> 1
    a = _saved(tmp_path, "before.npz", [[4, 0], [4, 2]], [[10, 0], [8, 2]])
    b = _saved(tmp_path, "after.npz", [[2, 2], [2, 2]], [[2, 2], [2, 2]])
    out = tmp_path / "cmp"
    result = run("compare", a, b, "--out", out)
    assert "'f0' lost importance" in result.output
    data = json.loads((out / "comparison.json").read_text())
    assert data["names"] == ["before", "after"] and data["lost"] == ["f0"]
    rows = {r["feature"]: r for r in data["table"]}
    assert rows["f0"]["importance_before"] == pytest.approx(2.0)
    assert rows["f0"]["change"] == pytest.approx(-1.0)
    assert rows["f0"]["stderr"] == pytest.approx(np.sqrt(2 / 3 / 4))
    assert rows["f1"]["change"] == pytest.approx(0.5)
    assert data["rank_correlation"] is None  # b's importances tie: no ranking (NaN -> null)
    html = (out / "comparison.html").read_text()
    assert html.count('src="data:image/png;base64,') == 1 and "Per-class change" in html
    run("compare", a, b, "--out", out, "--names", "old,new")
    assert json.loads((out / "comparison.json").read_text())["names"] == ["old", "new"]


def test_compare_mismatched_or_unreadable_inputs_fail_cleanly(tmp_path):
    a = _saved(tmp_path, "a.npz", [[4, 0], [4, 2]], [[10, 0], [8, 2]])
    renamed = _saved(tmp_path, "r.npz", [[4, 0], [4, 2]], [[10, 0], [8, 2]], ("f0", "g1"))
    wider = _saved(tmp_path, "w.npz", [[1, 1, 1], [1, 1, 1]], [[1, 1, 1], [1, 1, 1]],
                   ("f0", "f1", "f2"))
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip")
    out = tmp_path / "cmp"
    assert "different features" in fails_cleanly("compare", a, wider, "--out", out)
    assert "name their features differently (1 differ, first 'f1' vs 'g1')" in fails_cleanly(
        "compare", a, renamed, "--out", out)
    assert "not a saved global explanation" in fails_cleanly("compare", a, junk, "--out", out)
    assert "no such file" in fails_cleanly("compare", a, tmp_path / "none.npz", "--out", out)
    assert "two comma-separated names" in fails_cleanly("compare", a, a, "--out", out,
                                                        "--names", "one")
    assert not out.exists()  # nothing written on failure
