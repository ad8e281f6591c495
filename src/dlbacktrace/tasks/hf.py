"""Hugging Face model families: what each one needs, declared in one place.

The engine knows nothing about model families; the task helpers read everything
family-specific from here: the keyword that turns the KV cache off for export, the keyword that
limits the logits to some positions, where the class names live, the context length's config
key, the embeddings, and what a mixture-of-experts block looks like. Families are found by
``config.model_type``; anything else gets :data:`GENERIC`, the conventions most Hugging Face
models follow. Supporting a new family is one :class:`Family` entry in :data:`FAMILIES`
(no monkey-patching, no global switch: the declarations are only read).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

__all__ = [
    "FAMILIES",
    "GENERIC",
    "ExpertLayout",
    "Family",
    "class_names",
    "context_length",
    "embedding_rows",
    "export_options",
    "family_of",
    "forward_accepts",
    "logits_keyword",
    "output_embedding",
]


@dataclass(frozen=True)
class ExpertLayout:
    """What a family's mixture-of-experts block looks like (Hugging Face batched experts).

    ``weights``: attributes of the experts module holding 3-D ``[experts, …]`` weight stacks
    (any of them marks the module); ``count``: its number-of-experts attribute; ``shared``: the
    name of an always-on expert beside the experts module (Qwen2-MoE), or None; ``kernel``: the
    ``experts_implementation`` that exports (same routing, any dtype).
    """

    weights: tuple[str, ...] = ("gate_up_proj", "up_proj", "down_proj")
    count: str = "num_experts"
    shared: str | None = None
    kernel: str = "batched_mm"


def _frozen(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(dict(values))


@dataclass(frozen=True)
class Family:
    """The Hugging Face specifics of one model family.

    ``export_options``: keyword arguments that make ``forward`` exportable, passed when the
    forward takes them (no KV-cache object); ``keep_logits``: the keyword limiting the logits
    to some positions (generation computes only the explained ones); ``labels``: the config
    attribute mapping class index to name; ``context``: config keys of the longest sequence, in
    order; ``output_embeddings`` / ``input_embeddings``: the model's accessor methods;
    ``experts``: the MoE block's layout, or None for dense families.
    """

    name: str
    model_types: tuple[str, ...]
    export_options: Mapping[str, Any] = field(default_factory=lambda: _frozen(use_cache=False))
    keep_logits: str | None = "logits_to_keep"
    labels: str = "id2label"
    context: tuple[str, ...] = ("max_position_embeddings",)
    output_embeddings: str = "get_output_embeddings"
    input_embeddings: str = "get_input_embeddings"
    experts: ExpertLayout | None = None


GENERIC = Family(
    "transformers", (),
    context=("max_position_embeddings", "n_positions", "max_sequence_length"),
    experts=ExpertLayout(shared="shared_expert"),
)  # fmt: skip

FAMILIES: tuple[Family, ...] = (
    Family("llama", ("llama", "mistral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text",
                     "phi3", "olmo2")),
    Family("gpt2", ("gpt2",), context=("n_positions",)),
    Family("bert", ("bert", "roberta", "distilbert", "electra", "xlm-roberta"),
           export_options=_frozen(), keep_logits=None),
    Family("mixtral", ("mixtral",), experts=ExpertLayout()),
    Family("olmoe", ("olmoe",), experts=ExpertLayout()),
    Family("qwen2_moe", ("qwen2_moe", "qwen3_moe"), experts=ExpertLayout(shared="shared_expert")),
)

_BY_TYPE = {t: family for family in FAMILIES for t in family.model_types}


def family_of(model: nn.Module) -> Family:
    """The declared family of ``model`` (by ``config.model_type``), else :data:`GENERIC`.

    Parameters
    ----------
    model
        A Hugging Face model (or any module; those without a config get :data:`GENERIC`).
    """
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    return _BY_TYPE.get(model_type, GENERIC) if isinstance(model_type, str) else GENERIC


def forward_accepts(model: nn.Module, name: str) -> bool:
    """Whether ``model.forward`` takes the keyword ``name`` by name (not only via **kwargs).

    Parameters
    ----------
    model
        The module.
    name
        The keyword.
    """
    try:
        params = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return name in params


def export_options(model: nn.Module) -> dict[str, Any]:
    """The family's export keywords that ``model.forward`` takes (``use_cache=False``).

    Parameters
    ----------
    model
        The module.
    """
    options = family_of(model).export_options
    return {k: v for k, v in options.items() if forward_accepts(model, k)}


def logits_keyword(model: nn.Module) -> str | None:
    """The keyword limiting the logits to some positions, when the forward takes it.

    Parameters
    ----------
    model
        The module.
    """
    name = family_of(model).keep_logits
    return name if name is not None and forward_accepts(model, name) else None


def class_names(model: nn.Module) -> list[str] | None:
    """The class names from the config (``id2label``), ordered by class index.

    Parameters
    ----------
    model
        The module.
    """
    labels = getattr(getattr(model, "config", None), family_of(model).labels, None)
    if isinstance(labels, dict) and labels:
        return [str(labels[i]) for i in sorted(labels)]
    return None


def context_length(model: nn.Module) -> int | None:
    """The longest sequence the model accepts (its config's context key), if declared.

    Parameters
    ----------
    model
        The module.
    """
    config = getattr(model, "config", None)
    for name in family_of(model).context:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def output_embedding(model: nn.Module) -> nn.Module | None:
    """The language-modelling head (output embedding), or None for models without one.

    Parameters
    ----------
    model
        The module.
    """
    get = getattr(model, family_of(model).output_embeddings, None)
    return get() if callable(get) else None


def embedding_rows(model: nn.Module) -> int | None:
    """Rows of the model's input embedding (its real vocabulary size), if it has one.

    Parameters
    ----------
    model
        The module.
    """
    get = getattr(model, family_of(model).input_embeddings, None)
    emb = get() if callable(get) else None
    if isinstance(emb, torch.nn.Embedding):
        return int(emb.num_embeddings)
    size = getattr(getattr(model, "config", None), "vocab_size", None)
    return int(size) if isinstance(size, int) else None
