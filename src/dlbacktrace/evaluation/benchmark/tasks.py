"""The benchmark's tasks: real data, models trained in the run with fixed seeds.

Each :class:`Task` holds the model, the explained instances and how metrics perturb them
(feature mask, removal value, which elements count as features). Methods and metrics are the
registered ones (:data:`~dlbacktrace.evaluation.baselines.METHODS`,
:data:`~dlbacktrace.evaluation.metrics.METRICS`) that apply, less what a task leaves out, with
the reason.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dlbacktrace.engine.state import seeded
from dlbacktrace.evaluation.metrics.metric import Category
from dlbacktrace.evaluation.task import MASK_DELETED, Task
from dlbacktrace.evaluation.task import predicted as _predicted

TOKEN_FRACTIONS = (0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def tabular_task(n: int, quick: bool) -> Task:
    from dlbacktrace.examples.datasets import load_german_credit
    from dlbacktrace.examples.zoo import train_tabular_mlp

    train, test = load_german_credit().split(test_fraction=0.2, seed=0)
    model = train_tabular_mlp(train.x, train.y, seed=0)
    x = torch.from_numpy(test.x[:n])
    acc = float((_predicted(model, torch.from_numpy(test.x)).numpy() == test.y).mean())
    lime_samples = 100 if quick else 300
    return Task(
        "tabular", "UCI German credit (one-hot, train-standardised), ReLU MLP 61-64-32-2",
        model, x, _predicted(model, x),
        removal="zero", removal_note="0 = training mean (standardised features)", steps=20,
        options={"lime": {"n_samples": lime_samples}, "kernel-shap": {"n_samples": lime_samples},
                 "integrated-gradients": {"n_steps": 50}},
        info={"test_accuracy": acc, "features": x.shape[1]},
    )  # fmt: skip


def image_task(n: int, quick: bool) -> Task:
    from dlbacktrace.examples.demo import load_digits_split, train_digits_cnn

    x_train, y_train, x_test, y_test = load_digits_split(seed=0)
    model = train_digits_cnn(x_train, y_train, seed=0)
    acc = float((_predicted(model, x_test) == y_test).float().mean())
    x = x_test[:n]
    samples = 100 if quick else 300
    return Task(
        "image", "scikit-learn digits 8x8, small CNN (conv-bn-relu-maxpool, conv-relu, linear)",
        model, x, _predicted(model, x),
        removal="zero", removal_note="0 (black pixel)", steps=16,
        options={"lime": {"n_samples": samples, "feature_mask": "pixels"},
                 "kernel-shap": {"n_samples": samples, "feature_mask": "pixels"},
                 "integrated-gradients": {"n_steps": 50}},
        info={"test_accuracy": acc, "features": 64},
    )  # fmt: skip


def _encode(tokenizer: Any, texts: list[str], length: int, left: bool = False) -> dict:
    side = tokenizer.padding_side
    tokenizer.padding_side = "left" if left else "right"
    try:
        enc = tokenizer(texts, padding="max_length", truncation=True, max_length=length,
                        return_tensors="pt")
    finally:
        tokenizer.padding_side = side
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _bert_blocks(model: nn.Module) -> list[str]:
    """Randomisation units of the sentence classifier, input → output: embeddings, each
    encoder block, the head (the unused pooler is left out)."""
    names = dict(model.named_modules())
    blocks = [n for n in names if n.startswith("encoder.encoder.layer.") and n.count(".") == 3]
    return ["encoder.embeddings", *blocks, "head"]


def text_task(n: int, quick: bool, loaded: Any = None) -> Task:
    from dlbacktrace.examples.zoo import train_minilm_sentiment

    model, tokenizer, info = loaded or train_minilm_sentiment(
        n_per_class=150 if quick else 400, seed=0
    )
    inputs = _encode(tokenizer, list(info["test_texts"][:n]), 32)
    special = torch.tensor(tokenizer.all_special_ids)
    valid = inputs["attention_mask"].bool() & ~torch.isin(inputs["input_ids"], special)
    mask_id = int(tokenizer.mask_token_id)
    opts = {"baseline_token_id": mask_id}
    samples = 100 if quick else 200
    return Task(
        "text", "tweets sentiment (neg/pos): real MiniLM-L6 encoder + mean pooling + linear head",
        model, inputs, _predicted(model, inputs),
        removal=mask_id, removal_note="[MASK] token", valid_elements=valid,
        fractions=TOKEN_FRACTIONS, eraser_bins=(0.1, 0.2, 0.5),
        options={"lime": {**opts, "n_samples": samples},
                 "kernel-shap": {**opts, "n_samples": samples},
                 "integrated-gradients": {**opts, "n_steps": 8 if quick else 20},
                 "deeplift": opts, "smoothgrad": {"n_samples": 4 if quick else 10}},
        limits={"lime": 2 if quick else 25, "kernel-shap": 2 if quick else 25},
        randomise_layers=_bert_blocks(model),
        chunk=16, info={"test_accuracy": float(info["accuracy"]), "max_tokens": 32},
    )  # fmt: skip


def generation_task(n: int, quick: bool, loaded: Any = None) -> Task:
    from dlbacktrace.evaluation.benchmark.prompts import benchmark_prompts
    from dlbacktrace.examples.zoo import load_smollm2

    model, tokenizer = loaded or load_smollm2()
    prompts = benchmark_prompts()[:n]
    inputs = _encode(tokenizer, prompts, 12, left=True)
    valid = inputs["attention_mask"].bool()
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    opts = {"baseline_token_id": int(pad)}
    samples = 60 if quick else 150
    return Task(
        "generation", "SmolLM2-135M-Instruct next-token prediction on 100 fixed prompts",
        model, inputs, _predicted(model, inputs),
        skip_methods={"deeplift": "left out of this task"},
        # 30 blocks, a second capture of the copy, and the tied input/output embedding makes
        # the cascade's first step randomise the input embedding as well
        skip_metrics={"randomisation_similarity": "the cascade would randomise the tied "
                      "input embedding at its first step (and capture 30 blocks again)"},
        removal=int(pad), valid_elements=valid,
        removal_note="pad token; the (mask) columns delete tokens through the attention mask "
        "instead (mask entry 0, id replaced by the pad token)",
        fractions=TOKEN_FRACTIONS, eraser_bins=(0.1, 0.2, 0.5),
        options={"lime": {**opts, "n_samples": samples},
                 "kernel-shap": {**opts, "n_samples": samples},
                 "integrated-gradients": {**opts, "n_steps": 8 if quick else 16},
                 "smoothgrad": {"n_samples": 4 if quick else 8}},
        limits={"lime": 2 if quick else 20, "kernel-shap": 2 if quick else 20},
        chunk=8, info={"prompt_tokens": 12, "vocabulary": int(len(tokenizer))},
        mask_deletion=True,
    )  # fmt: skip


def cost_task(quick: bool) -> Task:
    """torchvision resnet18 (random init, 1x3x224x224): time and memory only."""
    import torchvision

    with seeded(0):
        model = torchvision.models.resnet18(weights=None).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((1, 3, 224, 224), generator=gen)
    samples = 50 if quick else 200
    costly = "quick mode: hundreds of ResNet-18 forwards per instance"
    return Task(
        "resnet18-cost", "torchvision resnet18, random init, one 3x224x224 image (cost only)",
        model, x, _predicted(model, x), categories=(Category.COST,),
        skip_methods={"lime": costly, "kernel-shap": costly} if quick else {},
        options={"lime": {"n_samples": samples}, "kernel-shap": {"n_samples": samples},
                 "integrated-gradients": {"n_steps": 50, "internal_batch_size": 25},
                 "smoothgrad": {"internal_batch_size": 25}},
        chunk=1,
    )  # fmt: skip


__all__ = [
    "MASK_DELETED",
    "Task",
    "cost_task",
    "generation_task",
    "image_task",
    "tabular_task",
    "text_task",
]
