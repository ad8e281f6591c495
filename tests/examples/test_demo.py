"""The digits demo, its CLI command and the plotting helpers it is built on."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from dlbacktrace.viz import (
    plot_contrast,
    plot_image_relevance,
    plot_relevance_grid,
    save_figure,
)

N_EXAMPLES = 3


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    from dlbacktrace.examples.demo import run_demo

    out = tmp_path_factory.mktemp("demo")
    rng_before = torch.get_rng_state()
    summary = run_demo(out, n_examples=N_EXAMPLES, seed=0)
    rng_after = torch.get_rng_state()
    return out, summary, rng_before, rng_after


def test_demo_writes_files_and_summary(demo_run):
    out, summary, _, _ = demo_run
    for name in summary["files"].values():
        path = out / name
        assert path.is_file() and path.stat().st_size > 0, name
    on_disk = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert on_disk == summary
    assert len(summary["examples"]) == N_EXAMPLES
    with (out / summary["files"]["default_figure"]).open("rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_demo_report_and_audit_log(demo_run):
    from dlbacktrace.audit import AuditStore, verify_chain, verify_record

    out, summary, _, _ = demo_run
    html = (out / summary["files"]["report"]).read_text(encoding="utf-8")
    assert html.count('class="figure heatmap"') == N_EXAMPLES
    assert html.count('class="figure contrast"') == N_EXAMPLES
    assert "Conservation ledger" in html and "http://" not in html and "https://" not in html
    assert summary["audit_records"] == [1, 2]
    with AuditStore(out / summary["files"]["audit"]) as store:
        assert verify_chain(store).ok
        modes = [store.get(i).content["options"]["mode"] for i in summary["audit_records"]]
        assert modes == ["default", "contrast"]
        spec = store.get(2).content["model"]["spec"]
        assert spec["source"] == "dlbacktrace.examples.demo:DigitsCNN"
        result = verify_record(store, 2)  # reloads the model from the stored spec
        assert result.identical and result.fingerprint_match, result.message


def test_demo_accuracy_and_conservation(demo_run):
    _, summary, _, _ = demo_run
    assert summary["accuracy"] > 0.9
    for ex in summary["examples"]:
        assert ex["conservation_error"] < 1e-4
        assert ex["conservation_error_contrast"] < 1e-4
        assert ex["target"] == ex["predicted"]  # target=None explains the predicted class
        assert 0 <= ex["true_label"] <= 9
        assert len(ex["top_pixels"]) == 5
        values = [p["relevance"] for p in ex["top_pixels"]]
        assert values == sorted(values, reverse=True)
        assert all(0 <= p["row"] < 8 and 0 <= p["col"] < 8 for p in ex["top_pixels"])


def test_demo_leaves_global_rng_alone(demo_run):
    _, _, before, after = demo_run
    assert torch.equal(before, after)


def test_cli_demo(tmp_path):
    from typer.testing import CliRunner

    from dlbacktrace.apps.cli import app

    result = CliRunner().invoke(app, ["demo", "--out", str(tmp_path), "--examples", "2"])
    assert result.exit_code == 0, result.output
    assert "accuracy" in result.output.lower()
    assert (tmp_path / "summary.json").is_file()
    assert (tmp_path / "default_relevance.png").is_file()
    assert (tmp_path / "contrast_relevance.png").is_file()
    assert (tmp_path / "report.html").is_file() and "report.html" in result.output
    assert len(json.loads((tmp_path / "summary.json").read_text())["examples"]) == 2


def test_cli_without_command_shows_help():
    from typer.testing import CliRunner

    from dlbacktrace.apps.cli import app

    result = CliRunner().invoke(app, [])
    assert "demo" in result.output


# ---- plotting (fake tensors, no engine needed) ----------------------------------------------


def test_plot_image_relevance_axes_and_scales():
    image = torch.rand(1, 8, 8)
    fig = plot_image_relevance(image, torch.rand(1, 8, 8), title="unsigned")
    assert len(fig.axes) == 2  # the map and its colorbar
    norm = fig.axes[0].images[-1].norm
    assert norm.vmin == 0.0  # sequential scale starts at zero relevance

    fig = plot_image_relevance(image, torch.randn(1, 8, 8), colorbar=False)
    assert len(fig.axes) == 1
    norm = fig.axes[0].images[-1].norm
    assert norm.vmin == pytest.approx(-norm.vmax)  # diverging scale centred at 0

    fig = plot_image_relevance(torch.rand(3, 16, 16), torch.rand(3, 16, 16), overlay=True)
    assert len(fig.axes[0].images) == 2  # grayscale input under the map


def test_plot_contrast_panels(tmp_path):
    pos, neg = torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8)
    fig = plot_contrast(torch.rand(1, 1, 8, 8), pos, neg, pos - neg)
    assert len(fig.axes) == 4 + 3  # input, positive, negative, net + three colorbars
    fig = plot_contrast(torch.rand(8, 8), pos, neg, colorbar=False)
    assert len(fig.axes) == 4
    path = save_figure(fig, tmp_path / "sub" / "contrast.png")
    assert path.is_file()


def test_plot_relevance_grid_axes():
    images = [np.random.default_rng(i).random((8, 8)) for i in range(5)]
    fig = plot_relevance_grid(images, images, [str(i) for i in range(5)], ncols=3)
    assert len(fig.axes) == 2 * 2 * 3  # two rows of pairs (input above map), three columns


def test_plot_rejects_mismatched_shapes():
    from dlbacktrace.engine.errors import InputError

    with pytest.raises(InputError):
        plot_image_relevance(torch.rand(8, 8), torch.rand(7, 7))
    with pytest.raises(InputError):
        plot_contrast(torch.rand(8, 8), -torch.rand(8, 8), torch.rand(8, 8))


def test_viz_import_is_lazy():
    code = (
        "import sys, dlbacktrace.viz, dlbacktrace.examples.demo; "
        "assert 'matplotlib' not in sys.modules and 'sklearn' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
