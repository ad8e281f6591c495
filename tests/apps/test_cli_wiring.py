"""CLI commands built on other packages: aggregate (global), benchmark and generation."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from cli_assets import IRIS_FEATURES, assets
from typer.testing import CliRunner

from dlbacktrace.apps.cli import app

runner = CliRunner()


def run(*args, code: int = 0):
    result = runner.invoke(app, [str(x) for x in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


def test_aggregate_table_matches_direct_means(tmp_path):
    from dlbacktrace import Backtrace
    from dlbacktrace.io.loading import load_model

    a = assets()
    spec = ["--model", a.iris_spec, "--weights", a.iris_weights, "--no-audit"]
    out, report = tmp_path / "global.npz", tmp_path / "global.html"
    result = run("aggregate", a.iris_csv, *spec, "--label-column", "species", "--json",
                 "--out", out, "--report", report)
    data = json.loads(result.stdout)
    assert data["rows"] == 6 and data["classes"] == ["setosa", "versicolor", "virginica"]
    x = torch.tensor(pd.read_csv(a.iris_csv)[IRIS_FEATURES].to_numpy(), dtype=torch.float32)
    model = load_model(a.iris_spec, weights=str(a.iris_weights)).model
    expected = Backtrace(model).explain(x).relevance.mean(dim=0)
    overall = {f["feature"]: f["mean"] for f in data["features"] if f["class"] == "all"}
    for j, name in enumerate(IRIS_FEATURES):
        assert overall[name] == pytest.approx(float(expected[j]), rel=1e-5)
    assert out.is_file()
    html = report.read_text()
    assert "All rows" in html and "Class setosa" in html and "petal width" in html
    table = run("aggregate", a.iris_csv, *spec, "--drop", "species").output
    assert "Mean relevance per feature (6 rows" in table


def test_benchmark_command_writes_report(tmp_path, monkeypatch):
    import dlbacktrace.evaluation.benchmark as bench

    calls = {}

    def fake_run(quick, out, tasks, instances, progress):
        calls.update(quick=quick, tasks=tasks, instances=instances)
        progress("tabular: preparing")
        (out / "results.csv").write_text(
            "task,method,map,metric,mean,std,n,higher_is_better\n"
            "tabular,dlbacktrace,net,deletion_auc,0.125,0.01,8,False\n"
            "tabular,integrated_gradients,signed,deletion_auc,0.25,0.02,8,False\n")
        from matplotlib.figure import Figure

        fig = Figure()
        fig.subplots().plot([0, 1], [1, 0])
        fig.savefig(out / "curves_tabular.png")
        return {"mode": "quick", "wall_s": 1.5, "machine": {"cpus": 2},
                "higher_is_better": {"deletion_auc": False}, "tasks": {"tabular": {}}}

    monkeypatch.setattr(bench, "run_benchmark", fake_run)
    out = tmp_path / "bench"
    out.mkdir()
    run("benchmark", "--quick", "--out", out, "--task", "tabular", "--instances", 8)
    assert calls == {"quick": True, "tasks": ["tabular"], "instances": 8}
    html = (out / "report.html").read_text()
    assert "Task tabular" in html and "integrated_gradients" in html and "0.125" in html
    assert html.count("data:image/png;base64,") == 1


def test_benchmark_help_lists_the_tasks_and_an_unknown_task_is_one_line():
    from dlbacktrace.evaluation.benchmark import TASKS

    text = " ".join(run("benchmark", "--help").output.split())
    for name in TASKS:
        assert name in text
    bad = run("benchmark", "--task", "mymodel", code=2)
    assert "unknown task 'mymodel'" in bad.output and "dlbacktrace evaluate" in bad.output
    assert len(bad.output.strip().splitlines()) == 1 and "Traceback" not in bad.output


def test_benchmark_report_ranks_and_gives_verdicts(tmp_path, monkeypatch):
    import dlbacktrace.evaluation.benchmark as bench

    def scored(values):
        n = len(values)
        mean = sum(values) / n
        std = (sum((v - mean) ** 2 for v in values) / (n - 1)) ** 0.5
        return {"map": "unsigned", "values": {"abpc": values},
                "metrics": {"abpc": {"mean": mean, "std": std, "se": std / n**0.5, "n": n}}}

    def fake_run(quick, out, tasks, instances, progress):
        from dlbacktrace.evaluation.evaluate import _judge

        task = {"description": "toy", "removal": "zero",
                "methods": {"random": scored([0.0, 0.1, -0.1, 0.0]),
                            "dlb": scored([0.5, 0.6, 0.4, 0.5])}}
        _judge(task)
        return {"mode": "quick", "higher_is_better": {"abpc": True}, "tasks": {"toy": task}}

    monkeypatch.setattr(bench, "run_benchmark", fake_run)
    out = tmp_path / "bench"
    out.mkdir()
    run("benchmark", "--quick", "--out", out)
    html = (out / "report.html").read_text()
    assert html.index("Ranking: toy") < html.index("Task toy")
    assert html.index(">dlb<") < html.index(">random<")  # ranked by ABPC
    assert "more faithful than random (ABPC +0.5" in html


@pytest.mark.slow
def test_generation_json_and_report(tiny_lm_folder, tmp_path):
    spec = ["--model", tiny_lm_folder, "--task", "causal-lm", "--text", "the capital of france is",
            "--max-new-tokens", "3", "--no-audit"]
    out = tmp_path / "gen.json"
    run("explain", *spec, "--format", "json", "--out", out)
    data = json.loads(out.read_text())
    assert data["prompt"] == "the capital of france is" and len(data["steps"]) == 3
    assert data["conservation_error"] < 1e-4
    assert all(len(s["top"]) == 5 and 0 <= s["p"] <= 1 for s in data["steps"])
    report = tmp_path / "gen.html"
    run("explain", *spec, "--format", "report", "--out", report)
    html = report.read_text()
    assert "DLBacktrace generation" in html and "the capital of france is" in html
    assert "http://" not in html and "https://" not in html
