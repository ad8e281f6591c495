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
