"""Transformer families beyond BERT/GPT-2/Llama: conservation, determinism, batch invariance.

Tiny random Hugging Face configs (tests/arch_models.py ``FAMILIES``) for DistilBERT, RoBERTa,
ViT (image classification), Qwen2, Mistral (sliding window), Gemma, and the mixture-of-experts
families Mixtral, Qwen2-MoE (with a sigmoid-gated shared expert) and OLMoE, each with eager and
sdpa attention, in float64. One model per case and two captures (batch of 3, batch of 1):

- default, contrast and ``attention="split"`` explanations conserve relevance (1e-5) and are
  finite; the main input gets relevance;
- contrast identities: positive − negative = the signed map, positive + negative = |map|
  (bit for bit), and the signed ledger balances;
- determinism: a second call is bit-identical (default and contrast);
- batch invariance: rows 0 and 1 (the padded row) explained alone equal their batch rows
  (default and contrast);
- the model (parameters and buffers) is bitwise unchanged.

MoE layers: the per-expert relevance of ``dlbacktrace.tasks.text.experts`` adds up to the relevance
at the experts module's output, and experts a token was not routed to get exactly zero.
"""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from dlbacktrace import Backtrace  # noqa: E402
from dlbacktrace.tasks.text.experts import explain_experts, find_expert_modules  # noqa: E402

try:
    import arch_models as am
except ImportError:  # tests/ imported as a package
    from tests import arch_models as am

pytestmark = pytest.mark.slow
REL = 1e-5
CASES = [(name, impl) for name in am.FAMILIES for impl in ("eager", "sdpa")]


def maps(value) -> list[torch.Tensor]:
    return [value] if isinstance(value, torch.Tensor) else list(value)


def close(a: torch.Tensor, b: torch.Tensor, what: str, scale: float | None = None) -> None:
    scale = max(scale or 0.0, a.abs().max().item(), b.abs().max().item(), 1e-300)
    err = (a - b).abs().max().item()
    assert err <= REL * scale, f"{what}: {err:.3e} > {REL} x {scale:.3e}"


def row(case: am.Case, i: int) -> dict:
    return {
        "args": tuple(a[i : i + 1] for a in case.args),
        "kwargs": {k: v[i : i + 1] for k, v in case.kwargs.items()},
    }


@pytest.mark.parametrize("name,impl", CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_family(name: str, impl: str) -> None:
    case = am.family(name, impl)
    state = {k: v.clone() for k, v in case.model.state_dict().items()}
    bt = Backtrace(case.model)
    target = case.batch_target

    default = case.explain(bt, target)
    contrast = case.explain(bt, target, mode="contrast")
    split = case.explain(bt, target, attention="split")
    for label, exp in (("default", default), ("contrast", contrast), ("split", split)):
        assert exp.conservation_error <= REL, f"{label}: {exp.conservation_error:.2e}"
        rows = exp.row_conservation_error  # DESIGN.md 2.4: each row's own ledger
        assert float(rows.max()) <= REL, f"{label}: per-row ledger {rows.tolist()}"
        assert all(torch.isfinite(m).all() for m in maps(exp.total)), label
    main = default.relevance_by_name[case.main_input] if case.main_input else default.relevance
    assert main.abs().sum() > 0

    for p, n, net, tot in zip(
        maps(contrast.positive), maps(contrast.negative), maps(contrast.relevance),
        maps(contrast.total), strict=True,
    ):  # fmt: skip
        assert (p >= 0).all() and (n >= 0).all()
        assert torch.equal(p - n, net) and torch.equal(p + n, tot)
    assert any(m.abs().sum() > 0 for m in maps(contrast.relevance))

    for mode, first in (("default", default), ("contrast", contrast)):
        again = case.explain(bt, target, mode=mode)
        for a, b in zip(maps(first.relevance), maps(again.relevance), strict=True):
            assert torch.equal(a, b), f"{mode}: a second call differs"

    for i in (0, 1):
        part = row(case, i)
        for mode, batch in (("default", default), ("contrast", contrast)):
            alone = bt.explain(
                *part["args"], target=case.row_target(i), mode=mode, **part["kwargs"],
                **case.options,
            )
            for a, b in zip(maps(alone.relevance), maps(batch.relevance), strict=True):
                scale = b.abs().max().item()
                close(a[0], b[i], f"{mode}: row {i} alone vs in the batch", scale)
    for name_, value in state.items():
        assert torch.equal(value, case.model.state_dict()[name_]), f"{name_} was written"


@pytest.mark.parametrize("name", am.MOE_FAMILIES)
def test_expert_relevance_adds_up(name: str) -> None:
    case = am.family(name, "sdpa")
    bt = Backtrace(case.model)
    experts = find_expert_modules(case.model)
    assert len(experts) == 2  # one MoE block per decoder layer
    exp, reports = explain_experts(case.model, backtrace=bt, target=case.lm_target,
                                   **case.kwargs, **case.options)  # fmt: skip
    assert exp.conservation_error <= REL
    whole = bt.explain(target=case.lm_target, layers=list(experts), **case.kwargs, **case.options)
    for report in reports:
        at_output = whole.layers[report.layer].sum(dim=-1).reshape(report.routed.shape[:2])
        close(report.routed.sum(dim=-1), at_output, f"{report.layer}: experts vs module output")
        assert report.per_expert.sum() > 0
        assert (report.shared is not None) == (name == "qwen2_moe")
    # Tokens never routed to an expert give it nothing: top-2 of 4 leaves two zeros per token.
    zeros = (reports[0].routed == 0).sum(dim=-1)
    assert (zeros >= 2).all()


def test_default_moe_kernel_is_switched_for_export_and_restored() -> None:
    """HF's default CPU kernel (grouped_mm) does not export; explain_experts switches."""
    from transformers import MixtralConfig, MixtralForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cfg = MixtralConfig(**am.DECODER, num_local_experts=4, num_experts_per_tok=2)
        model = MixtralForCausalLM._from_config(cfg).eval()
    before = model.get_experts_implementation()
    ids = torch.randint(3, am.VOCAB, (1, am.SEQ))
    exp, reports = explain_experts(model, input_ids=ids, use_cache=False)
    assert exp.conservation_error <= 1e-4 and len(reports) == 2
    assert model.get_experts_implementation() == before


def test_dense_model_has_no_experts() -> None:
    case = am.family("qwen2", "sdpa")
    with pytest.raises(Exception, match="no mixture-of-experts layers"):
        explain_experts(case.model, **case.kwargs, **case.options)
