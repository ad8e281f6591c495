"""The quick benchmark end to end on a reduced instance count, and the report writer."""

from __future__ import annotations

import csv
import json

import pytest

from dlbacktrace.evaluation.benchmark import TASKS, benchmark_prompts, run_benchmark
from dlbacktrace.evaluation.benchmark.report import markdown, write_outputs


def _fake_results() -> dict:
    def row(value, signed=False):
        return {"map": "signed" if signed else "unsigned", "instances": 3,
                "metrics": {"abpc": {"mean": value, "std": 0.1, "n": 3},
                            "deletion_auc": {"mean": 1 - value, "std": 0.0, "n": 3}},
                "curves": {"fractions": [0, 0.5, 1], "morf": [1, 0.5, 0],
                           "lerf": [1, 0.9, 0], "insertion": [0, 0.9, 1]}}  # fmt: skip

    return {
        "mode": "quick", "wall_s": 60.0,
        "machine": {"cpu_count": 2, "processor": "x", "torch": "2", "torch_threads": 2,
                    "python": "3.11", "note": "test"},
        "higher_is_better": {"abpc": True, "deletion_auc": False},
        "tasks": {"toy": {"description": "toy", "removal": "zero", "info": {}, "instances": 3,
                          "methods": {"dlb": row(0.8), "saliency": row(0.5),
                                      "random": row(0.9), "lime": {"error": "boom"}}}},
    }  # fmt: skip


def test_report_marks_best_non_random_and_failures(tmp_path):
    results = _fake_results()
    text = markdown(results)
    assert "| dlb | unsigned | 3 | **0.200** | **0.800 ± 0.100** |" in text
    assert "| random | unsigned | 3 | 0.100 | 0.900 ± 0.100 |" in text  # never bold
    assert "| lime | failed: boom |" in text
    write_outputs(results, tmp_path)
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert {(r["method"], r["metric"]) for r in rows} >= {("dlb", "abpc"), ("random", "abpc")}
    assert json.loads((tmp_path / "results.json").read_text())["mode"] == "quick"
    assert (tmp_path / "curves_toy.png").stat().st_size > 10_000


def test_prompts_are_fixed():
    prompts = benchmark_prompts()
    assert len(prompts) == 100 and len(set(prompts)) == 100
    assert prompts[0] == "The capital of France is"


def test_unknown_task_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown task"):
        run_benchmark(True, tmp_path, tasks=["speech"])


@pytest.mark.slow
def test_quick_benchmark_produces_every_table(tmp_path, minilm_sentiment, smollm2):
    models = {"text": minilm_sentiment, "generation": smollm2}
    results = run_benchmark(True, tmp_path, instances=1, models=models)  # CI time: one each
    assert set(results["tasks"]) == set(TASKS)
    md = (tmp_path / "results.md").read_text()
    for name in TASKS:
        assert f"## {name}" in md
    for name in ("tabular", "image", "text", "generation"):
        assert (tmp_path / f"curves_{name}.png").exists()
        methods = results["tasks"][name]["methods"]
        failed = {m: r["error"] for m, r in methods.items() if "error" in r}
        assert not failed, failed
        dlb = methods["dlb"]["metrics"]
        assert dlb["determinism"]["mean"] == 1.0
        assert dlb["conservation_error"]["mean"] < 1e-4
        assert 0.0 <= dlb["deletion_auc"]["mean"] <= 1.0
        assert methods["dlb-contrast"]["map"].startswith("signed (contrast net")
        assert "run_variance" in methods["lime"]["metrics"]
    assert "grad-cam" in results["tasks"]["image"]["methods"]
    cost = results["tasks"]["resnet18-cost"]["methods"]
    assert "attention-rollout" in results["tasks"]["text"]["methods"]
    assert "randomisation_similarity" in results["tasks"]["tabular"]["methods"]["dlb"]["metrics"]
    assert "randomisation_similarity" in results["tasks"]["text"]["methods"]["lime"]["metrics"]
    ig = results["tasks"]["tabular"]["methods"]["integrated-gradients"]["metrics"]
    assert ig["completeness_error"]["mean"] < 0.1  # IG's completeness axiom, 50 steps
    assert cost["deeplift"]["metrics"]["time_per_instance_ms"]["mean"] > 0  # ResNet's reused ReLU
    assert cost["dlb"]["metrics"]["time_per_instance_ms"]["mean"] > 0
    rows = list(csv.DictReader((tmp_path / "results.csv").open()))
    assert {r["task"] for r in rows} == set(TASKS)
    assert json.loads((tmp_path / "machine.json").read_text())["cpu_count"] >= 1


def _input_map(prep, target, **options):
    return prep.x.clone()  # a signed map equal to the input


@pytest.fixture
def user_extensions():
    """A user's method, an inapplicable method and a metric, each registered once."""
    from dlbacktrace.evaluation.baselines import METHODS, MapMethod
    from dlbacktrace.evaluation.metrics import METRICS, Category, Metric

    added = [
        METHODS.register(MapMethod(name="test-input", signed=True, map_fn=_input_map)),
        METHODS.register(MapMethod(name="test-never", signed=False, map_fn=_input_map,
                                   applies=lambda model, inputs: False,
                                   requires="a model with wings")),
    ]  # fmt: skip
    metric = METRICS.register(Metric(
        name="test_max_abs", higher_is_better=False, category=Category.COMPLEXITY,
        label="max|a|", score=lambda ctx: ctx.attributions.abs().flatten(1).amax(1).double(),
    ))  # fmt: skip
    try:
        yield
    finally:
        for method in added:
            METHODS.unregister(method.name)
        METRICS.unregister(metric.name)


def _toy_task():
    import torch
    from torch import nn

    from dlbacktrace.evaluation.benchmark.tasks import Task
    from dlbacktrace.evaluation.metrics import Category

    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.tensor([[1.0, -3.0, 2.0, 0.5, 0.0, 1.0], [2.0, 1.0, -1.0, 0.0, 4.0, 0.0],
                      [0.5, 0.5, -0.5, 1.0, 1.0, 1.0]])  # fmt: skip
    with torch.no_grad():
        target = model(x).argmax(-1)
    # every registered method (methods=None); the cheap metric categories only
    return Task("toy", "toy MLP", model, x, target, steps=4,
                categories=(Category.FAITHFULNESS, Category.COMPLEXITY, Category.STABILITY,
                            Category.CONSERVATION, Category.COST),
                options={"lime": {"n_samples": 30}, "kernel-shap": {"n_samples": 30}})  # fmt: skip


def test_registered_user_method_and_metric_are_benchmarked_with_no_other_change(
    user_extensions,
):
    import math

    from dlbacktrace.evaluation.baselines import METHODS
    from dlbacktrace.evaluation.benchmark.run import TaskRunner

    result = TaskRunner(_toy_task(), quick=True).run()
    methods = result["methods"]
    assert "test-input" in methods and "test-never" not in methods
    assert result["skipped"]["test-never"] == "not applicable: needs a model with wings"
    assert result["skipped"]["grad-cam"].startswith("not applicable: needs image inputs")
    failed = {m: r["error"] for m, r in methods.items() if "error" in r}
    assert not failed, failed
    # the user metric on the user method's map (the input): max |x| per row = 3, 4, 1
    mine = methods["test-input"]["metrics"]["test_max_abs"]
    assert mine["n"] == 3
    assert mine["mean"] == pytest.approx(8 / 3, abs=1e-12)
    assert mine["std"] == pytest.approx(math.sqrt(7 / 3), abs=1e-12)
    assert methods["test-input"]["map"] == "signed"
    for name, row in methods.items():  # every method gets the user metric, traits decide others
        method = METHODS[name]
        scores = row["metrics"]
        assert "test_max_abs" in scores, name
        assert ("conservation_error" in scores) == method.has_ledger, name
        assert ("run_variance" in scores) == method.sampling, name
        assert ("completeness_error" in scores) == (method.signed and not method.has_ledger), name
        assert scores["determinism"]["mean"] == 1.0, name  # reruns use the same seed
        assert "max_sensitivity" not in scores  # robustness is not among the task's categories
    md = markdown({"mode": "quick", "machine": {"cpu_count": 1, "processor": "x", "torch": "2",
                                                "torch_threads": 1, "python": "3", "note": "t"},
                   "higher_is_better": {"test_max_abs": False}, "tasks": {"toy": result}})
    assert "max|a| ↓" in md
    assert "test-never (not applicable: needs a model with wings)" in md
