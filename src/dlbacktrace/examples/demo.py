"""End-to-end demo: train a small CNN on scikit-learn's 8x8 digits and backtrace its decisions.

Everything needed ships with the ``cli`` extra (scikit-learn bundles the digits data set, so no
download happens). Training takes a few seconds on two CPU cores. The demo is deterministic for
a given seed and leaves the caller's global random state untouched: the model is initialised
inside ``dlbacktrace.engine.state.seeded`` and
batches are shuffled with a local ``torch.Generator``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlbacktrace.examples.training import train_classifier

__all__ = ["DigitsCNN", "load_digits_split", "run_demo", "train_digits_cnn"]

logger = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
DEFAULT_FIGURE = "default_relevance.png"
CONTRAST_FIGURE = "contrast_relevance.png"
REPORT_FILE = "report.html"
AUDIT_FILE = "audit.db"
WEIGHTS_FILE = "digits_cnn.safetensors"
TOP_PIXELS = 5


class DigitsCNN(nn.Module):
    """conv-bn-relu-maxpool, conv-relu, linear: small, but has every common CNN layer type.

    Parameters
    ----------
    n_classes
        Output logits (default 10).
    """

    def __init__(self, n_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, kernel_size=3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(16, 32, kernel_size=3, padding=1),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(32 * 4 * 4, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of a batch of digits.

        Parameters
        ----------
        x
            ``[N, 1, 8, 8]`` images.
        """
        return self.classifier(torch.flatten(self.features(x), 1))


def load_digits_split(
    seed: int = 0, test_fraction: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Digits as (N, 1, 8, 8) float tensors in [0, 1] with a seeded random split.

    The split uses a local numpy Generator.

    Parameters
    ----------
    seed
        Seeds the split.
    test_fraction
        The share of images in the test part (default 0.2).

    Returns
    -------
    ``x_train, y_train, x_test, y_test``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.long)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(labels)))
    n_test = int(round(test_fraction * len(labels)))
    test, train = order[:n_test], order[n_test:]
    return images[train], labels[train], images[test], labels[test]


@torch.no_grad()
def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    was_training = model.training
    model.eval()
    acc = (model(x).argmax(dim=1) == y).float().mean().item()
    model.train(was_training)
    return float(acc)


def train_digits_cnn(
    x_train: torch.Tensor,
    y_train: torch.Tensor,
    *,
    seed: int = 0,
    epochs: int = 4,
    batch_size: int = 128,
    lr: float = 1e-2,
) -> DigitsCNN:
    """Train :class:`DigitsCNN` deterministically (for a given seed and thread count).

    The defaults (44 Adam steps) reach about 97% test accuracy in about a second of compute on
    two cores; the first optimizer in a process also imports ``torch._dynamo`` (a one-off cost
    that ``torch.export`` pays anyway). Returns the model in eval mode.

    The loop is :func:`~dlbacktrace.examples.training.train_classifier`: the caller's random
    streams are left as they were.

    Parameters
    ----------
    x_train, y_train
        ``[N, 1, 8, 8]`` images and their labels.
    seed
        Seeds the initialisation and the shuffling.
    epochs, batch_size
        Passes over the data and mini-batch size.
    lr
        Adam's learning rate.
    """
    return train_classifier(
        DigitsCNN, x_train, y_train, seed=seed, epochs=epochs, batch_size=batch_size, lr=lr
    )


def _pick_examples(y_test: torch.Tensor, n_examples: int) -> list[int]:
    """Test indices cycling through the classes 0, 1, ..., 9, 0, ... so the figures vary."""
    by_class = {c: (y_test == c).nonzero().flatten().tolist() for c in range(10)}
    picked: list[int] = []
    rank = 0
    while len(picked) < n_examples:
        added = False
        for c in range(10):
            if len(picked) == n_examples:
                break
            if rank < len(by_class[c]):
                picked.append(by_class[c][rank])
                added = True
        if not added:
            break
        rank += 1
    return picked


def _top_pixels(relevance: torch.Tensor, k: int = TOP_PIXELS) -> list[dict[str, Any]]:
    """The k pixels with the largest relevance, as JSON-friendly ``{row, col, relevance}``."""
    heat = relevance.detach().to(torch.float64)
    if heat.dim() > 2:  # sum channels: relevance is additive
        heat = heat.reshape(-1, *heat.shape[-2:]).sum(dim=0)
    values, flat = heat.flatten().topk(min(k, heat.numel()))
    width = heat.shape[-1]
    return [
        {"row": int(i) // width, "col": int(i) % width, "relevance": float(v)}
        for v, i in zip(values.tolist(), flat.tolist(), strict=True)
    ]


def run_demo(
    out_dir: str | Path,
    n_examples: int = 8,
    seed: int = 0,
    *,
    epochs: int = 4,
    report: bool = True,
) -> dict[str, Any]:
    """Train the digits CNN, explain ``n_examples`` held-out digits, write figures + summary.

    Parameters
    ----------
    out_dir
        The folder written into (created if missing): ``default_relevance.png`` (inputs above
        their default-mode relevance), ``contrast_relevance.png`` (one row per example: input,
        positive, negative and net relevance) and ``summary.json``.
    n_examples
        Held-out digits explained (at least 1), cycling through the classes.
    seed
        Seeds the split and the training.
    epochs
        Training epochs.
    report
        Also write ``report.html`` (a self-contained HTML report of the contrast
        explanations), the trained weights (``digits_cnn.safetensors``) and a fresh audit log
        ``audit.db`` holding the default and contrast explanations, re-verifiable with
        ``dlbacktrace audit verify ID --db``.

    Returns
    -------
    The summary as a dict; file names in it are relative to ``out_dir``.
    """
    from dlbacktrace import Backtrace
    from dlbacktrace.viz import plot_contrast, plot_relevance_grid, save_figure

    if n_examples < 1:
        raise ValueError(f"n_examples must be at least 1, got {n_examples}.")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    x_train, y_train, x_test, y_test = load_digits_split(seed)
    start = time.perf_counter()
    model = train_digits_cnn(x_train, y_train, seed=seed, epochs=epochs)
    train_seconds = time.perf_counter() - start
    accuracy = _accuracy(model, x_test, y_test)
    logger.info("trained DigitsCNN in %.1fs, test accuracy %.3f", train_seconds, accuracy)

    indices = _pick_examples(y_test, n_examples)
    bt = Backtrace(model, mode="default")
    examples: list[dict[str, Any]] = []
    images, default_maps, titles, contrasts = [], [], [], []
    for i in indices:
        # One example per call: conservation_error is reported per explanation, and the demo
        # wants it per example.
        x = x_test[i : i + 1]
        exp = bt.explain(x)
        con = bt.explain(x, mode="contrast")
        predicted = int(exp.output.argmax(dim=1).item())
        true_label = int(y_test[i].item())
        images.append(x[0])
        default_maps.append(exp.relevance[0].detach())
        titles.append(f"true {true_label} / pred {predicted}")
        contrasts.append(
            (x[0], con.positive[0].detach(), con.negative[0].detach(), con.relevance[0].detach())
        )
        examples.append(
            {
                "test_index": int(i),
                "true_label": true_label,
                "predicted": predicted,
                "target": int(exp.target[0].item()),
                "correct": predicted == true_label,
                "conservation_error": float(exp.conservation_error),
                "conservation_error_contrast": float(con.conservation_error),
                "relevance_sum": float(exp.relevance.sum().item()),
                "top_pixels": _top_pixels(exp.relevance[0]),
                "top_positive_pixels": _top_pixels(con.positive[0]),
                "top_negative_pixels": _top_pixels(con.negative[0]),
            }
        )

    fig = plot_relevance_grid(images, default_maps, titles, ncols=min(8, len(images)))
    fig.suptitle("DLBacktrace default mode: relevance of each pixel for the predicted digit")
    save_figure(fig, out / DEFAULT_FIGURE)

    fig = _contrast_grid(contrasts, titles, plot_contrast)
    save_figure(fig, out / CONTRAST_FIGURE)

    files = {
        "default_figure": DEFAULT_FIGURE,
        "contrast_figure": CONTRAST_FIGURE,
        "summary": SUMMARY_FILE,
    }
    audit_records: list[int] = []
    if report:
        audit_records = _write_report(model, x_test, y_test, indices, out)
        files.update(report=REPORT_FILE, audit=AUDIT_FILE, weights=WEIGHTS_FILE)

    summary: dict[str, Any] = {
        "dataset": "sklearn.datasets.load_digits (8x8, 10 classes)",
        "seed": seed,
        "epochs": epochs,
        "n_train": len(y_train),
        "n_test": len(y_test),
        "train_seconds": round(train_seconds, 3),
        "accuracy": accuracy,
        "max_conservation_error": max(
            max(e["conservation_error"], e["conservation_error_contrast"]) for e in examples
        ),
        "examples": examples,
        "audit_records": audit_records,
        "files": files,
    }
    (out / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return summary


def _write_report(
    model: nn.Module, x_test: torch.Tensor, y_test: torch.Tensor, indices: list[int], out: Path
) -> list[int]:
    """Explain the examples as one batch through the same service the CLI and server use.

    The weights are saved as safetensors and the audit records name the model as
    ``dlbacktrace.examples.demo:DigitsCNN`` plus those weights, so each record can be re-verified by
    reloading the model from scratch. The audit log is started fresh on every demo run.
    """
    from safetensors.torch import save_file

    from dlbacktrace.apps.server.service import ExplainService
    from dlbacktrace.audit import AuditStore
    from dlbacktrace.io.batch import InputBatch
    from dlbacktrace.io.loading import LoadedModel, ModelSpec
    from dlbacktrace.report import write_html

    weights = out / WEIGHTS_FILE
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    spec = ModelSpec("factory", "dlbacktrace.examples.demo:DigitsCNN", str(weights.resolve()))
    audit_path = out / AUDIT_FILE
    for suffix in ("", "-wal", "-shm"):
        Path(f"{audit_path}{suffix}").unlink(missing_ok=True)
    idx = torch.tensor(indices)
    batch = InputBatch(
        "image",
        (x_test[idx],),
        names=[f"test digit #{int(i)} (true {int(y_test[i])})" for i in indices],
    )
    with AuditStore(audit_path) as store:
        service = ExplainService(LoadedModel(model, spec), audit=store, source="demo")
        default = service.explain(batch, mode="default")
        contrast = service.explain(batch, mode="contrast")
        write_html(
            contrast.report_html(title="DLBacktrace demo: a small CNN on scikit-learn's digits"),
            out / REPORT_FILE,
        )
    return [int(default.record_id), int(contrast.record_id)]


def _contrast_grid(
    contrasts: list[tuple[torch.Tensor, ...]], titles: list[str], plot_contrast: Any
) -> Any:
    """One row per example (input, positive, negative, net) in a single figure."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(contrasts)
    fig = Figure(figsize=(10.0, 2.3 * n + 0.5), layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.subplots(n, 4, squeeze=False)
    for row, (image, pos, neg, net) in enumerate(contrasts):
        plot_contrast(image, pos, neg, net, axes=list(grid[row]))
        grid[row][0].set_ylabel(titles[row], fontsize="small")
        if row > 0:  # panel names once, at the top
            for ax in grid[row]:
                ax.set_title("")
    fig.suptitle("DLBacktrace contrast mode: evidence for (red) and against (blue) the prediction")
    return fig
