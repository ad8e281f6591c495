"""Small model builders for the architecture tests (tests/engine/test_architectures.py).

Every builder returns a :class:`Case`: a model in eval mode, a batch of three inputs, and one
explicit target per row. Weights come from a fixed seed (the global RNG is left untouched), so
two calls build identical models. Batch-norm layers get random, non-trivial running statistics
and affine parameters, so that eval-mode BatchNorm is a real per-channel affine map.

Hugging Face models are built from tiny random configs (no hub access), with
``attn_implementation`` "eager" or "sdpa" and an ``attention_mask`` that pads one row: right
padding for BERT, left padding for the causal LMs (one row all ones, one row with leading
zeros).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

os.environ.setdefault("HF_HUB_OFFLINE", "1")

BATCH = 3


@dataclass
class Case:
    """A model and a batch of ``BATCH`` inputs to explain."""

    model: nn.Module
    args: tuple[torch.Tensor, ...] = ()  # positional tensor inputs, batch first
    kwargs: dict[str, torch.Tensor] = field(default_factory=dict)  # keyword tensor inputs
    options: dict[str, Any] = field(default_factory=dict)  # non-tensor keyword args to the model
    targets: list[int] = field(default_factory=list)  # one per row (classifiers)
    lm_target: int | None = None  # causal LMs: vocabulary index at the last position
    main_input: str | None = None  # name of the keyword input whose relevance must be non-zero

    @property
    def batch_target(self) -> int | list[int]:
        return self.lm_target if self.lm_target is not None else list(self.targets)

    def row_target(self, i: int) -> int:
        return self.lm_target if self.lm_target is not None else self.targets[i]

    def row(self, i: int) -> Case:
        """The same case restricted to row ``i`` (batch of one)."""
        return Case(
            model=self.model,
            args=tuple(a[i : i + 1] for a in self.args),
            kwargs={k: v[i : i + 1] for k, v in self.kwargs.items()},
            options=dict(self.options),
            targets=[self.targets[i]] if self.targets else [],
            lm_target=self.lm_target,
            main_input=self.main_input,
        )

    def explain(self, bt: Any, target: Any, **extra: Any) -> Any:
        return bt.explain(*self.args, target=target, **self.kwargs, **self.options, **extra)


def _seeded(seed: int) -> Callable:
    """Run the decorated builder under a fixed seed without touching the global RNG state."""

    def deco(fn: Callable[..., Case]) -> Callable[..., Case]:
        def wrapped(dtype: torch.dtype = torch.float64) -> Case:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return fn(dtype)

        wrapped.__name__ = fn.__name__
        wrapped.__doc__ = fn.__doc__
        return wrapped

    return deco


@torch.no_grad()
def randomize_batchnorm(model: nn.Module) -> None:
    """Non-trivial running stats and affine parameters for every BatchNorm layer."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(0.3 * torch.randn(n))
            m.running_var.copy_(0.5 + torch.rand(n))
            if m.affine:
                m.weight.copy_(0.5 + torch.rand(n))
                m.bias.copy_(0.2 * torch.randn(n))


def _finish(case: Case, dtype: torch.dtype) -> Case:
    case.model.eval()
    case.model.to(dtype)
    case.args = tuple(a.to(dtype) if a.is_floating_point() else a for a in case.args)
    return case


# ------------------------------------------------------------------------------------------
# Plain PyTorch models
# ------------------------------------------------------------------------------------------


@_seeded(1)
def mlp(dtype: torch.dtype) -> Case:
    """Linear → ReLU → Dropout (off in eval) → Linear → Tanh → Linear."""
    model = nn.Sequential(
        nn.Linear(8, 16),
        nn.ReLU(),
        nn.Dropout(0.3),
        nn.Linear(16, 16),
        nn.Tanh(),
        nn.Linear(16, 3),
    )
    return _finish(Case(model, args=(torch.randn(BATCH, 8),), targets=[0, 2, 1]), dtype)


class SmallCNN(nn.Module):
    """Conv-BN-ReLU, max-pool, a residual block with a skip add, global average pool, Linear."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.pool = nn.MaxPool2d(2)
        self.conv1 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(8)
        self.head = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.stem(x))
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        x = F.relu(x + y)
        return self.head(x.mean(dim=(2, 3)))


@_seeded(2)
def cnn(dtype: torch.dtype) -> Case:
    model = SmallCNN()
    randomize_batchnorm(model)
    return _finish(Case(model, args=(torch.randn(BATCH, 3, 12, 12),), targets=[3, 0, 2]), dtype)


class RNNClassifier(nn.Module):
    """Embedding → LSTM/GRU (batch first) → Linear on the last time step."""

    def __init__(self, cell: type[nn.RNNBase], layers: int, vocab: int = 40) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 12)
        self.rnn = cell(12, 10, num_layers=layers, batch_first=True)
        self.fc = nn.Linear(10, 3)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h, _ = self.rnn(self.emb(ids))
        return self.fc(h[:, -1])


@_seeded(3)
def lstm(dtype: torch.dtype) -> Case:
    model = RNNClassifier(nn.LSTM, layers=1)
    return _finish(Case(model, args=(torch.randint(0, 40, (BATCH, 7)),), targets=[1, 0, 2]), dtype)


@_seeded(4)
def gru(dtype: torch.dtype) -> Case:
    model = RNNClassifier(nn.GRU, layers=2)
    return _finish(Case(model, args=(torch.randint(0, 40, (BATCH, 7)),), targets=[2, 1, 0]), dtype)


class TextbookGRU(nn.Module):
    """Embedding → a GRU cell written out as ``h = (1 − z) ⊙ n + z ⊙ h`` → Linear: ``1 − z``
    exports as ``rsub(z, 1)``, a gate (``nn.GRU`` decomposes as ``n + z ⊙ (h − n)``)."""

    def __init__(self, vocab: int = 40, hidden: int = 10) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, 12)
        self.inp = nn.Linear(12, 3 * hidden)
        self.rec = nn.Linear(hidden, 3 * hidden)
        self.fc = nn.Linear(hidden, 3)
        self.hidden = hidden

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.emb(ids)
        h = x.new_zeros(x.shape[0], self.hidden)
        for step in range(x.shape[1]):
            xr, xz, xn = self.inp(x[:, step]).chunk(3, dim=-1)
            hr, hz, hn = self.rec(h).chunk(3, dim=-1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            h = (1 - z) * torch.tanh(xn + r * hn) + z * h
        return self.fc(h)


@_seeded(5)
def textbook_gru(dtype: torch.dtype) -> Case:
    model = TextbookGRU()
    return _finish(Case(model, args=(torch.randint(0, 40, (BATCH, 5)),), targets=[0, 2, 1]), dtype)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())


class SmallUNet(nn.Module):
    """Two-level U-Net: ConvTranspose2d and nearest/bilinear nn.Upsample, skip torch.cat.

    The per-pixel class logits are averaged over the image, giving one score per class (the
    usual way to explain "how much of the image is class c" for a segmentation net).
    """

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.enc1 = _block(3, 8)
        self.enc2 = _block(8, 16)
        self.bottleneck = _block(16, 16)
        self.pool = nn.MaxPool2d(2)
        self.up_t = nn.ConvTranspose2d(16, 16, kernel_size=2, stride=2)
        self.dec1 = _block(32, 16)
        self.up_nearest = nn.Upsample(scale_factor=2, mode="nearest")
        self.up_bilinear = nn.Upsample(scale_factor=4, mode="bilinear", align_corners=False)
        self.dec2 = _block(16 + 8 + 16, 8)
        self.head = nn.Conv2d(8, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)  # H
        e2 = self.enc2(self.pool(e1))  # H/2
        b = self.bottleneck(self.pool(e2))  # H/4
        d1 = self.dec1(torch.cat([self.up_t(b), e2], dim=1))  # H/2
        d2 = self.dec2(torch.cat([self.up_nearest(d1), e1, self.up_bilinear(b)], dim=1))  # H
        return self.head(d2).mean(dim=(2, 3))


@_seeded(5)
def unet(dtype: torch.dtype) -> Case:
    model = SmallUNet()
    return _finish(Case(model, args=(torch.randn(BATCH, 3, 16, 16),), targets=[0, 1, 2]), dtype)


# ------------------------------------------------------------------------------------------
# torchvision (random init, weights=None)
# ------------------------------------------------------------------------------------------


def _torchvision(name: str, size: int, dtype: torch.dtype) -> Case:
    import torchvision

    model = getattr(torchvision.models, name)(weights=None, num_classes=10)
    randomize_batchnorm(model)
    x = torch.randn(BATCH, 3, size, size)
    return _finish(Case(model, args=(x,), targets=[1, 4, 7]), dtype)


@_seeded(10)
def resnet18(dtype: torch.dtype) -> Case:
    return _torchvision("resnet18", 64, dtype)


@_seeded(11)
def densenet121(dtype: torch.dtype) -> Case:
    return _torchvision("densenet121", 32, dtype)  # 32 px: the last dense block still sees 1x1


@_seeded(12)
def mobilenet_v3_small(dtype: torch.dtype) -> Case:
    return _torchvision("mobilenet_v3_small", 64, dtype)


@_seeded(13)
def vgg11(dtype: torch.dtype) -> Case:
    return _torchvision("vgg11", 64, dtype)


# ------------------------------------------------------------------------------------------
# Hugging Face (tiny random configs)
# ------------------------------------------------------------------------------------------

VOCAB = 64
SEQ = 8


def _hf(cls: type, cfg: Any, impl: str, dtype: torch.dtype) -> nn.Module:
    model = cls._from_config(cfg, attn_implementation=impl)
    return model.to(dtype).eval()


def _ids() -> torch.Tensor:
    return torch.randint(3, VOCAB, (BATCH, SEQ))


def _bert(impl: str, dtype: torch.dtype) -> Case:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        num_labels=3,
        pad_token_id=0,
    )
    model = _hf(BertForSequenceClassification, cfg, impl, dtype)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, 5:] = 0  # right padding in row 1
    return Case(
        model,
        kwargs={"input_ids": _ids(), "attention_mask": mask},
        targets=[2, 0, 1],
        main_input="input_ids",
    )


def _causal_mask(left: bool = True) -> torch.Tensor:
    """Row 0 (and 2) all ones; row 1 padded.

    ``left=True``: conventional left padding (three leading zeros). ``left=False``: the first
    token stays visible and the next two are masked. HF's eager Llama computes its softmax in
    float32 (``softmax(..., dtype=torch.float32)``), so in a float64 model the float64 mask
    minimum becomes -inf; a left-padded query row is then fully masked and the model's *own*
    forward is NaN (it spreads to every position from the second layer on). With the first
    token visible no query row is fully masked, and the mask is still honoured on two keys.
    """
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    if left:
        mask[1, :3] = 0
    else:
        mask[1, 1:3] = 0
    return mask


def _gpt2(impl: str, dtype: torch.dtype) -> Case:
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(
        vocab_size=VOCAB,
        n_embd=32,
        n_layer=2,
        n_head=4,
        n_positions=32,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = _hf(GPT2LMHeadModel, cfg, impl, dtype)
    return Case(
        model,
        kwargs={"input_ids": _ids(), "attention_mask": _causal_mask()},
        options={"use_cache": False},
        lm_target=5,
        main_input="input_ids",
    )


def _llama(impl: str, dtype: torch.dtype) -> Case:
    # eager: see _causal_mask for why its padded row keeps the first token visible
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,  # grouped-query attention
        max_position_embeddings=64,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    return _decoder(LlamaForCausalLM, cfg, impl, dtype)


@_seeded(20)
def bert_eager(dtype: torch.dtype) -> Case:
    return _bert("eager", dtype)


@_seeded(20)
def bert_sdpa(dtype: torch.dtype) -> Case:
    return _bert("sdpa", dtype)


@_seeded(21)
def gpt2_eager(dtype: torch.dtype) -> Case:
    return _gpt2("eager", dtype)


@_seeded(21)
def gpt2_sdpa(dtype: torch.dtype) -> Case:
    return _gpt2("sdpa", dtype)


@_seeded(22)
def llama_eager(dtype: torch.dtype) -> Case:
    return _llama("eager", dtype)


@_seeded(22)
def llama_sdpa(dtype: torch.dtype) -> Case:
    return _llama("sdpa", dtype)


FAST = {"mlp": mlp, "cnn": cnn, "lstm": lstm, "gru": gru, "textbook_gru": textbook_gru,
        "unet": unet}
TORCHVISION = {
    "resnet18": resnet18,
    "densenet121": densenet121,
    "mobilenet_v3_small": mobilenet_v3_small,
    "vgg11": vgg11,
}
HF = {
    "bert_eager": bert_eager,
    "bert_sdpa": bert_sdpa,
    "gpt2_eager": gpt2_eager,
    "gpt2_sdpa": gpt2_sdpa,
    "llama_eager": llama_eager,
    "llama_sdpa": llama_sdpa,
}
BUILDERS: dict[str, Callable[..., Case]] = {**FAST, **TORCHVISION, **HF}


# ------------------------------------------------------------------------------------------
# More transformer families (tests/engine/test_transformer_families.py)
# ------------------------------------------------------------------------------------------

DECODER = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,  # grouped-query attention
    max_position_embeddings=64,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)
# Hugging Face's default MoE kernel (grouped_mm) is float32/bf16 only on CPU; "batched_mm" runs
# the same routing in any dtype and exports (see dlbacktrace.tasks.text.experts).
MOE = dict(num_experts_per_tok=2, experts_implementation="batched_mm")


def _decoder(cls: type, cfg: Any, impl: str, dtype: torch.dtype) -> Case:
    model = _hf(cls, cfg, impl, dtype)
    return Case(
        model,
        kwargs={"input_ids": _ids(), "attention_mask": _causal_mask(left=impl != "eager")},
        options={"use_cache": False},
        lm_target=7,
        main_input="input_ids",
    )


def _encoder(cls: type, cfg: Any, impl: str, dtype: torch.dtype) -> Case:
    model = _hf(cls, cfg, impl, dtype)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, 5:] = 0  # right padding in row 1
    ids = _ids()
    ids[1, 5:] = cfg.pad_token_id
    return Case(
        model,
        kwargs={"input_ids": ids, "attention_mask": mask},
        targets=[2, 0, 1],
        main_input="input_ids",
    )


def distilbert(impl: str, dtype: torch.dtype) -> Case:
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    cfg = DistilBertConfig(
        vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
        max_position_embeddings=32, num_labels=3, pad_token_id=0,
    )  # fmt: skip
    return _encoder(DistilBertForSequenceClassification, cfg, impl, dtype)


def roberta(impl: str, dtype: torch.dtype) -> Case:
    from transformers import RobertaConfig, RobertaForSequenceClassification

    cfg = RobertaConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=40, num_labels=3, pad_token_id=1,
    )  # fmt: skip
    return _encoder(RobertaForSequenceClassification, cfg, impl, dtype)


def vit(impl: str, dtype: torch.dtype) -> Case:
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(
        image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, num_labels=3,
    )  # fmt: skip
    model = _hf(ViTForImageClassification, cfg, impl, dtype)
    return Case(model, args=(torch.randn(BATCH, 3, 16, 16, dtype=dtype),), targets=[2, 0, 1])


def qwen2(impl: str, dtype: torch.dtype) -> Case:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    return _decoder(Qwen2ForCausalLM, Qwen2Config(**DECODER), impl, dtype)


def mistral(impl: str, dtype: torch.dtype) -> Case:
    from transformers import MistralConfig, MistralForCausalLM

    return _decoder(MistralForCausalLM, MistralConfig(**DECODER, sliding_window=4), impl, dtype)


def gemma(impl: str, dtype: torch.dtype) -> Case:
    from transformers import GemmaConfig, GemmaForCausalLM

    return _decoder(GemmaForCausalLM, GemmaConfig(**DECODER, head_dim=8), impl, dtype)


def mixtral(impl: str, dtype: torch.dtype) -> Case:
    from transformers import MixtralConfig, MixtralForCausalLM

    cfg = MixtralConfig(**DECODER, num_local_experts=4, **MOE)
    return _decoder(MixtralForCausalLM, cfg, impl, dtype)


def qwen2_moe(impl: str, dtype: torch.dtype) -> Case:
    from transformers import Qwen2MoeConfig, Qwen2MoeForCausalLM

    cfg = Qwen2MoeConfig(
        **DECODER, num_experts=4, moe_intermediate_size=32,
        shared_expert_intermediate_size=48, decoder_sparse_step=1, **MOE,
    )  # fmt: skip
    return _decoder(Qwen2MoeForCausalLM, cfg, impl, dtype)


def olmoe(impl: str, dtype: torch.dtype) -> Case:
    from transformers import OlmoeConfig, OlmoeForCausalLM

    return _decoder(OlmoeForCausalLM, OlmoeConfig(**DECODER, num_experts=4, **MOE), impl, dtype)


FAMILIES: dict[str, Callable[[str, torch.dtype], Case]] = {
    "distilbert": distilbert,
    "roberta": roberta,
    "vit": vit,
    "qwen2": qwen2,
    "mistral": mistral,
    "gemma": gemma,
    "mixtral": mixtral,
    "qwen2_moe": qwen2_moe,
    "olmoe": olmoe,
}
MOE_FAMILIES = ("mixtral", "qwen2_moe", "olmoe")


def family(name: str, impl: str, dtype: torch.dtype = torch.float64) -> Case:
    """Build a family's tiny model under a fixed seed (global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(30 + sorted(FAMILIES).index(name))
        return FAMILIES[name](impl, dtype)
