"""``evaluate(model, data)`` and ``dlbacktrace evaluate``: a known answer, the three kinds of
input, the result files, the verdicts' 2-SE rule and the errors."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from dlbacktrace.evaluation.evaluate import EvaluationError, evaluate
from dlbacktrace.evaluation.user_data import EvaluationDataError
from dlbacktrace.evaluation.verdicts import verdicts

FAITHFUL = ("dlb", "dlb-contrast", "integrated-gradients", "saliency", "kernel-shap")
CURVE_METRICS = ("deletion_auc", "insertion_auc", "lerf_auc", "abpc")


def one_feature_model() -> nn.Module:
    """A ReLU MLP whose output depends on feature 0 only (the other columns have zero weight),
    with weights large enough that the prediction is confident."""
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight.zero_()
        model[0].weight[:, 0] = torch.tensor([3.0, -3, 2, -2, 1, -1, 3, -3])
        model[0].bias.zero_()
        row = torch.tensor([2.0, -2, 2, -2, 2, -2, 2, -2])
        model[2].weight.copy_(torch.stack([row, -row]))
        model[2].bias.zero_()
    return model.eval()


def one_feature_data(n: int = 40) -> torch.Tensor:
    gen = torch.Generator().manual_seed(0)
    return torch.randn(n, 5, generator=gen)


@pytest.fixture(scope="module")
def known_answer():
    names = ["signal", "noise1", "noise2", "noise3", "noise4"]
    return evaluate(one_feature_model(), one_feature_data(), methods=[*FAITHFUL, "random"],
                    metrics=[*CURVE_METRICS, "faithfulness_correlation", "determinism",
                             "time_per_instance_ms", "peak_memory_mb"],
                    instances=16, feature_names=names, quick=True,
                    options={"kernel-shap": {"n_samples": 60}})  # fmt: skip


def test_every_faithful_method_finds_the_one_feature_and_random_does_not(known_answer):
    r = known_answer
    assert not [m for m, row in r.methods.items() if "error" in row]
    for method in FAITHFUL:
        assert r.methods[method]["top_features"][0]["feature"] == "signal", method
        # the other features carry no weight: every method gives them (almost) nothing
        assert r.methods[method]["top_features"][1]["mean_abs"] < 1e-3 * (
            r.methods[method]["top_features"][0]["mean_abs"]), method
        assert r.score(method, "abpc") > 0.3, method
    assert r.methods["random"]["top_features"][0]["feature"] != "signal"
    assert abs(r.score("random", "abpc")) < 0.15
    assert r.ranked_by == "abpc" and r.ranking[-1] == "random"


def test_the_verdicts_say_so(known_answer):
    said = known_answer.verdicts
    for method in FAITHFUL:
        assert any(v.startswith("more faithful than random (ABPC") for v in said[method]), method
    assert any("most faithful on this data (ABPC)" in v for v in said[known_answer.ranking[0]])
    assert "control: a random map that ignores the model" in said["random"]
    assert not any("faithful" in v for v in said["random"] if "control" not in v)
    assert "deterministic (bit-identical reruns, n=4)" in said["dlb"]


def test_numbers_equal_a_direct_computation(known_answer):
    from dlbacktrace import Backtrace
    from dlbacktrace.evaluation.metrics import curves

    model, x = one_feature_model(), one_feature_data()
    removal = x.mean(0)  # the default for tables: the column means of the data
    exp = Backtrace(model).explain(x[:16])
    direct = curves(lambda z: model(z), x[:16], exp.relevance, exp.target, steps=5,
                    removal=removal)
    np.testing.assert_allclose(known_answer.values("dlb", "abpc"), direct.abpc.numpy(),
                               rtol=1e-9, atol=1e-12)
    assert known_answer.results["tasks"]["data"]["removal"].startswith("the column means")


def test_results_are_plain_numpy_and_pandas(known_answer):
    r = known_answer
    values = r.values("integrated-gradients", "abpc")
    assert isinstance(values, np.ndarray) and values.shape == (16,)
    assert r.score("integrated-gradients", "abpc") == pytest.approx(float(np.mean(values)))
    frame = r.to_dataframe()
    assert list(frame.columns) == ["method", "map", "metric", "mean", "std", "se", "n",
                                   "higher_is_better"]
    row = frame[(frame.method == "integrated-gradients") & (frame.metric == "abpc")].iloc[0]
    assert row["n"] == 16
    assert row["se"] == pytest.approx(np.std(values, ddof=1) / math.sqrt(16), rel=1e-9)
    assert isinstance(row["mean"], float)
    json.dumps(r.results)  # JSON-ready: no tensors anywhere


def _row(values, ms=1.0):
    v = np.asarray(values, dtype=float)
    se = float(v.std(ddof=1) / math.sqrt(len(v)))
    return {"map": "unsigned", "values": {"abpc": list(v), "time_per_instance_ms": [ms]},
            "metrics": {"abpc": {"mean": float(v.mean()), "std": float(v.std(ddof=1)),
                                 "se": se, "n": len(v)},
                        "time_per_instance_ms": {"mean": ms, "std": 0.0, "se": 0.0, "n": 1}}}


def test_no_verdict_claims_a_difference_within_two_standard_errors():
    higher = {"abpc": True, "time_per_instance_ms": False}
    base = np.array([0.50, 0.60, 0.40, 0.55, 0.45, 0.52, 0.48, 0.50])
    wobble = np.array([0.02, -0.02, 0.02, -0.02, 0.02, -0.02, 0.02, -0.02])
    # paired differences 0.01 + wobble: mean 0.01, SE 0.0076 -> within 2 SE: a tie
    close = verdicts({"dlb": _row(base + 0.01 + wobble), "saliency": _row(base, ms=20.0),
                      "random": _row(base - 0.3)}, higher, {"abpc": "ABPC"})
    assert close["ranking"]["order"] == ["dlb", "saliency", "random"]
    assert close["verdicts"]["dlb"][0].startswith(
        "most faithful on this data (ABPC), tied within 2 SE with saliency")
    assert "tied with dlb for most faithful (ABPC within 2 SE)" in close["verdicts"]["saliency"]
    assert "20× slower than dlb" in close["verdicts"]["saliency"]
    # the same gap with no wobble: SE 0, a real difference
    clear = verdicts({"dlb": _row(base + 0.01), "saliency": _row(base),
                      "random": _row(base + 0.01 * wobble)}, higher, {"abpc": "ABPC"})
    assert clear["verdicts"]["dlb"][0] == "most faithful on this data (ABPC)"
    assert "not distinguishable from the random control on ABPC" in clear["verdicts"]["saliency"]


class TinyCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.conv(x)).flatten(1))


def test_image_model():
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = TinyCNN().eval()
    x = torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    r = evaluate(model, x, methods="dlb,saliency,grad-cam,random", instances=6, quick=True,
                 metrics=[*CURVE_METRICS, "determinism"])
    assert set(r.methods) == {"dlb", "saliency", "grad-cam", "random"}
    assert not [m for m, row in r.methods.items() if "error" in row]
    for method, row in r.methods.items():
        assert row["metrics"]["deletion_auc"]["n"] == 6
        assert 0.0 <= row["metrics"]["deletion_auc"]["mean"] <= 1.0, method
    assert r.score("dlb", "determinism") == 1.0
    assert r.results["tasks"]["data"]["removal"] == "zero"


def test_text_model(tiny_text_classifier):
    from dlbacktrace.io.loading import LoadedModel

    model, tokenizer = tiny_text_classifier
    texts = ["a wonderful film", "the plot was dull and slow", "I loved it", "not good at all"]
    loaded = LoadedModel(model, tokenizer=tokenizer)
    r = evaluate(loaded, texts, methods="dlb,saliency,random", metrics=list(CURVE_METRICS),
                 quick=True)
    assert not [m for m, row in r.methods.items() if "error" in row]
    for row in r.methods.values():
        assert row["metrics"]["abpc"]["n"] == 4
    assert r.results["tasks"]["data"]["removal"] == f"mask token (id {tokenizer.mask_token_id})"


def test_unknown_method_metric_and_bad_data_are_specific_errors():
    model = one_feature_model()
    with pytest.raises(EvaluationError, match="unknown method 'magic'; choose from dlb"):
        evaluate(model, one_feature_data(), methods="dlb,magic")
    with pytest.raises(EvaluationError, match="unknown metric 'speed'"):
        evaluate(model, one_feature_data(), metrics=["speed"])
    with pytest.raises(EvaluationDataError, match="data must be float"):
        evaluate(model, torch.ones(4, 5, dtype=torch.long))
    with pytest.raises(EvaluationDataError, match="does not run on this data"):
        evaluate(model, torch.ones(4, 7))
    with pytest.raises(EvaluationDataError, match="data not found"):
        evaluate(model, "no-such-file.csv")


# ---- the command line ----------------------------------------------------------------------

def _cli(*args, code=0):
    from typer.testing import CliRunner

    from dlbacktrace.apps.cli import app

    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output + repr(result.exception)
    return result


def test_cli_numbers_equal_the_python_ones_and_files_carry_n(tmp_path):
    from cli_assets import assets

    from dlbacktrace.evaluation.metrics import METRICS, Category
    from dlbacktrace.io.loading import load_model

    a = assets()
    out = tmp_path / "eval"
    methods = "dlb,integrated-gradients,random"
    _cli("evaluate", "--model", a.iris_spec, "--weights", a.iris_weights, "--data", a.iris_csv,
         "--label-column", "species", "--methods", methods, "--instances", 6, "--seed", 3,
         "--quick", "--out", out)
    saved = json.loads((out / "results.json").read_text())
    loaded = load_model(a.iris_spec, weights=str(a.iris_weights))
    mine = evaluate(loaded, a.iris_csv, label_column="species", methods=methods, instances=6,
                    seed=3, quick=True)
    cli_methods = saved["tasks"]["data"]["methods"]
    assert set(cli_methods) == set(methods.split(","))
    compared = 0
    for method, row in mine.methods.items():
        for metric, score in row["metrics"].items():
            if METRICS[metric].category is Category.COST:
                continue  # times and memory are measured, not computed
            assert cli_methods[method]["metrics"][metric] == pytest.approx(score, rel=1e-12), (
                method, metric)
            compared += 1
    assert compared > 20
    assert saved["tasks"]["data"]["info"]["accuracy (label column)"] >= 0.0
    assert mine.methods["dlb"]["top_features"][0]["feature"] in (
        "sepal length", "sepal width", "petal length", "petal width")
    for row in cli_methods.values():
        for score in row["metrics"].values():
            assert {"mean", "std", "se", "n"} <= set(score) and score["n"] >= 1
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows and all(int(r["n"]) >= 1 and r["se"] != "" for r in rows)
    html = (out / "report.html").read_text()
    assert html.index("Ranking: data") < html.index("How the verdicts are decided")
    assert "more faithful than random" in html or "not distinguishable" in html
    assert (out / "results.md").is_file()


def test_cli_errors_are_one_line(tmp_path):
    from cli_assets import assets

    a = assets()
    spec = ["--model", a.iris_spec, "--weights", a.iris_weights]
    bad = _cli("evaluate", *spec, "--data", a.iris_csv, "--label-column", "species",
               "--methods", "dlb,magic", "--out", tmp_path, code=2)
    assert "unknown method 'magic'" in bad.output and "Traceback" not in bad.output
    assert len(bad.output.strip().splitlines()) == 1
    missing = _cli("evaluate", *spec, "--data", tmp_path / "none.csv", "--out", tmp_path, code=2)
    assert "data not found" in missing.output and len(missing.output.strip().splitlines()) == 1
    text_col = _cli("evaluate", *spec, "--data", a.iris_csv, "--out", tmp_path, code=2)
    assert "does not run on this data" in text_col.output  # the label column is a feature
    assert "--label-column" in text_col.output
    assert len(text_col.output.strip().splitlines()) == 1


def test_cli_on_an_image_folder(tmp_path):
    from cli_assets import assets

    a = assets()
    folder = a.digit_pngs[0].parent  # the PNGs among other files: only the images are read
    out = tmp_path / "eval"
    result = _cli("evaluate", "--model", "dlbacktrace.examples.demo:DigitsCNN", "--weights",
                  a.digits_weights, "--data", folder, "--methods", "dlb,saliency,random",
                  "--metrics", ",".join(CURVE_METRICS), "--out", out)
    assert "Methods ranked by ABPC" in result.output
    saved = json.loads((out / "results.json").read_text())
    task = saved["tasks"]["data"]
    assert task["info"]["rows in data"] == len(a.digit_pngs)
    for row in task["methods"].values():
        assert row["metrics"]["abpc"]["n"] == len(a.digit_pngs)
