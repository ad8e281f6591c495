"""Core cost benchmark: DLBacktrace ``explain`` versus a plain gradient, in time and peak memory.

Run ``python benchmarks/bench_core.py`` (options: ``--device cuda``, ``--repeats N``,
``--quick``, ``--cases ...``, ``--json PATH``, ``--in-process``).  The Markdown tables go to
stdout, progress to stderr.  Times are never asserted; the targets are printed beside the
ratios.

Cases (all models random-init with fixed seeds, eval mode, fixed inputs and targets):

* ``mlp_b1`` / ``mlp_b8``: MLP 1024-4096-4096-10 with ReLU, batch 1 and batch 8;
* ``cnn_b8``: five conv-bn-relu blocks, two max-pools, global average pool, linear; 8x3x32x32;
* ``resnet18``: torchvision ``resnet18(weights=None)``, 1x3x224x224;
* ``bert_minilm``: ``BertForSequenceClassification`` with a MiniLM-sized ``BertConfig``
  (hidden 384, 6 layers, 12 heads, intermediate 1536, ``attn_implementation="sdpa"``),
  batch 1, 128 tokens, ``attention_mask`` with the last 16 tokens padded.

Baseline (the denominator of every ratio): one forward pass plus ``torch.autograd.grad`` of
the target logit (summed over the batch) with respect to the input.  For BERT the gradient is
taken with respect to the input embeddings: the word-embedding lookup of ``input_ids`` runs
inside the timed call, its output is detached, marked ``requires_grad`` and fed to the model
through ``inputs_embeds`` (the logits are identical to the ``input_ids`` path).

Timing: each case runs in its own fresh process (``multiprocessing`` spawn).  The first
``explain`` call is timed on its own and reported as the first-call (capture) time, since it
includes ``torch.export`` capture.  Then every callable gets warm-up runs, after which the
timed repeats are interleaved (baseline, default, contrast, baseline, ...) so that drift in
machine speed affects all three alike; the medians are compared.  Beside each median ratio
the ratio of the fastest repeats (``min``) is shown, and the baseline's min-max spread:
other processes competing for the cores only ever add time, so on a busy machine a wide
spread and a gap between the two ratios say the medians are disturbed.  (Process CPU time is
no cure: with OpenMP threads spinning at barriers it inflates together with wall time.)
On CUDA each timed call is bracketed by ``torch.cuda.synchronize()``.  Torch's default
thread count is used (printed with the load average).  The first-call table also shows
each ``Explanation.conservation_error`` as a sanity check that the engine computed
something meaningful.

Peers, measured in the same process, in a second interleaved loop with the baseline (Captum
LRP bumps the version counters of the model's parameters, which would make every explain
after it recompute its cached ``|w|``), each ratio against that loop's baseline medians:

* Captum LRP: ``captum.attr.LRP(model).attribute(x, target=...)`` with Captum's default rules
  (the ``activations`` dicts it leaves on the layers are dropped after each call);
* Zennit: the ``EpsilonPlusFlat`` composite (with ``SequentialMergeBatchNorm`` for the CNN and
  ``ResNetCanonizer`` for resnet18), hooks attached for the call only, relevance seeded with
  the target logit;
* IG-50: ``captum.attr.IntegratedGradients``, 50 steps, zero baseline, all steps in one batch.

On BERT the peers attribute the input embeddings, like the baseline.  A peer that fails on a
case (Captum LRP has no rule for ``nn.Flatten`` or ``nn.Embedding``), or has no rules for it
(Zennit on BERT), gets "–" and a footnote with the reason; it never stops the run.  A sanity
table gives each peer's attribution-sum error beside our conservation error (a peer that
misses its total by more than 100% gets a footnote: its figure is the cost of an invalid
attribution), and the script checks that no peer left the model changed.  The peers' first
calls, warm-up and peak memory come before the ``Backtrace`` object exists, like the
baseline's.

Counts: after the timed repeats each callable runs once more under ``_counting.count_call``:
the number of ATen ops dispatched (a ``TorchDispatchMode``), the host syncs (calls of
``Tensor.item``/``tolist``/``__bool__``/``__float__``/``__int__``/``__index__``/``cpu``/
``numpy`` from Python, counted by patching them for that call) and the ATen ops that read
device data on the host (``_local_scalar_dense``, data-dependent shapes, device-to-CPU copies).

Peak memory:

* CUDA: ``torch.cuda.reset_peak_memory_stats()`` right before one steady-state call, then
  ``torch.cuda.max_memory_allocated()``.  This is the footprint of everything torch holds on
  the device during the call: weights, inputs, whatever the engine keeps, plus transients.
* CPU: ``tracemalloc`` does not see torch's allocations, and ``ru_maxrss`` can never be
  lowered, so a warm-up or capture would hide the call's own peak.  Instead the script
  resets the kernel's peak-RSS counter (writing ``5`` to ``/proc/self/clear_refs``, Linux)
  right before one steady-state call and reads ``VmHWM`` from ``/proc/self/status`` after
  it.  The figure reported is that peak minus the RSS of the same process measured before
  the model was built: again weights + inputs + engine state + transients, the CPU analogue
  of the CUDA number.  Fixed one-time costs that are not per-model (importing torch,
  torchvision, transformers and dlbacktrace, and loading the ``torch.export`` machinery,
  warmed by exporting and explaining a tiny toy model) happen before that reference RSS is
  read.  The baseline's peak is measured before the ``Backtrace`` object exists, so it does
  not include the engine's captured program.  Where ``clear_refs`` cannot be written the
  script falls back to a 1 kHz RSS sampling thread and says so (that fallback can miss
  short spikes).  Page-granular RSS is noisy at the level of a few MB.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

TARGET_DEFAULT = 2.5  # median default-mode explain time / median baseline time
TARGET_CONTRAST = 4.0  # median contrast-mode explain time / median baseline time
TARGET_MEMORY = 2.0  # peak memory of explain / peak memory of baseline
NOISY_SPREAD = 1.5  # baseline max/min above this: the row's times were disturbed

CASES: dict[str, str] = {
    "mlp_b1": "MLP 1024-4096-4096-10, x 1x1024",
    "mlp_b8": "MLP 1024-4096-4096-10, x 8x1024",
    "cnn_b8": "small CNN (5 conv-bn-relu), x 8x3x32x32",
    "resnet18": "torchvision resnet18, x 1x3x224x224",
    "bert_minilm": "BERT MiniLM-size (sdpa), 1x128 tokens + attention_mask",
    "minilm_8x512": "real all-MiniLM-L6-v2 + mean pooling + linear head, 8x512 tokens",
}

BERT_BASELINE_NOTE = (
    "BERT baseline: grad of the target logit w.r.t. the input embeddings, passed via "
    "`inputs_embeds` (word-embedding lookup included in the timed call)"
)

MODES = ("baseline", "default", "contrast")


# --------------------------------------------------------------------------------------------
# Case construction (runs inside the worker process)
# --------------------------------------------------------------------------------------------


def _build_case(name: str, device: str) -> dict[str, Any]:
    """Model, inputs, target and baseline callable of one case; deterministic (fixed seeds)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)

    if name in ("mlp_b1", "mlp_b8"):
        batch = 1 if name == "mlp_b1" else 8
        model = nn.Sequential(
            nn.Linear(1024, 4096),
            nn.ReLU(),
            nn.Linear(4096, 4096),
            nn.ReLU(),
            nn.Linear(4096, 10),
        )
        x = torch.randn(batch, 1024, generator=gen)
        target = 3
    elif name == "cnn_b8":

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()
            )

        model = nn.Sequential(
            block(3, 32),
            block(32, 32),
            nn.MaxPool2d(2),
            block(32, 64),
            block(64, 64),
            nn.MaxPool2d(2),
            block(64, 128),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(128, 10),
        )
        # Non-trivial batch-norm statistics, so eval-mode BN is not an identity.
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.normal_(0.0, 0.1, generator=gen)
                    m.running_var.uniform_(0.5, 1.5, generator=gen)
                    m.weight.uniform_(0.5, 1.5, generator=gen)
                    m.bias.normal_(0.0, 0.1, generator=gen)
        x = torch.randn(8, 3, 32, 32, generator=gen)
        target = 3
    elif name == "resnet18":
        import torchvision

        model = torchvision.models.resnet18(weights=None)
        x = torch.randn(1, 3, 224, 224, generator=gen)
        target = 3
    elif name == "bert_minilm":
        return _build_bert(device)
    elif name == "minilm_8x512":
        return _build_minilm(device)
    else:
        raise ValueError(f"unknown case {name!r}")

    model = model.eval().to(device)
    x = x.to(device)
    x_leaf = x.detach().clone().requires_grad_(True)

    def baseline() -> Any:
        out = model(x_leaf)
        (grad,) = torch.autograd.grad(out[:, target].sum(), x_leaf)
        return grad

    return {
        "model": model,
        "args": (x,),
        "kwargs": {},
        "target": target,
        "baseline": baseline,
        "baseline_note": "grad of the target logit w.r.t. the input tensor",
        # What the peers attribute: a module taking the input tensor, and that tensor.
        "peer_model": model,
        "peer_input": lambda: x.detach(),  # an alias: Captum flips requires_grad on it
        "peer_extra": (),
        "zennit_canonizers": _ZENNIT_CANONIZERS[name],
    }


def _build_bert(device: str) -> dict[str, Any]:
    import torch
    from transformers import BertConfig, BertForSequenceClassification
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    cfg = BertConfig(
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=12,
        intermediate_size=1536,
        attn_implementation="sdpa",
    )
    model = BertForSequenceClassification(cfg).eval().to(device)
    seq, n_pad = 128, 16
    input_ids = torch.randint(0, cfg.vocab_size, (1, seq), generator=gen).to(device)
    attention_mask = torch.ones(1, seq, dtype=torch.long)
    attention_mask[:, seq - n_pad :] = 0
    attention_mask = attention_mask.to(device)
    target = 1
    word_emb = model.bert.embeddings.word_embeddings

    class EmbedsToLogits(torch.nn.Module):
        """``inputs_embeds, attention_mask -> logits``: the module the peers attribute."""

        def __init__(self, bert: torch.nn.Module) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
            return self.bert(inputs_embeds=embeds, attention_mask=mask).logits

    def baseline() -> Any:
        emb = word_emb(input_ids).detach().requires_grad_(True)
        out = model(inputs_embeds=emb, attention_mask=attention_mask).logits
        (grad,) = torch.autograd.grad(out[:, target].sum(), emb)
        return grad

    # The peers attribute the input embeddings, like the baseline's gradient; the lookup runs
    # inside each timed call.
    return _token_case(model, input_ids, attention_mask, target, baseline,
                       peer_model=EmbedsToLogits(model),
                       peer_input=lambda: word_emb(input_ids).detach(),
                       peer_extra=(attention_mask,))


def _token_case(model: Any, input_ids: Any, attention_mask: Any, target: int,
                baseline: Callable[[], Any], **peers: Any) -> dict[str, Any]:
    """The spec of a case explained through ``input_ids`` (baseline: the input embeddings)."""
    return {
        "model": model,
        "args": (),
        "kwargs": {"input_ids": input_ids, "attention_mask": attention_mask},
        "target": target,
        "baseline": baseline,
        "baseline_note": BERT_BASELINE_NOTE,
        "peer_model": None,
        "peer_input": None,
        "peer_extra": (),
        "zennit_canonizers": None,
        **peers,
    }


MINILM_PEERS_REASON = (
    "not run at 8x512 tokens: Captum LRP has no Embedding rule and Zennit no transformer rules "
    "(see bert_minilm); IG-50 would be 50 forward + backward passes of the whole batch"
)


def _build_minilm(device: str) -> dict[str, Any]:
    """The real MiniLM encoder at 8 texts x 512 tokens (the last 64 of the second half of the
    rows padded), explained through ``input_ids``; baseline w.r.t. the input embeddings."""
    import torch

    from dlbacktrace.examples.zoo import SentenceClassifier, load_minilm

    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(1234)
    encoder, _ = load_minilm()
    model = SentenceClassifier(encoder, 2).eval().to(device)
    batch, seq = 8, 512
    input_ids = torch.randint(1000, 20000, (batch, seq), generator=gen).to(device)
    attention_mask = torch.ones(batch, seq, dtype=torch.long)
    attention_mask[batch // 2:, seq - 64:] = 0
    attention_mask = attention_mask.to(device)
    target = 1
    word_emb = encoder.embeddings.word_embeddings

    def baseline() -> Any:
        emb = word_emb(input_ids).detach().requires_grad_(True)
        hidden = encoder(inputs_embeds=emb, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        out = model.head((hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0))
        (grad,) = torch.autograd.grad(out[:, target].sum(), emb)
        return grad

    return _token_case(model, input_ids, attention_mask, target, baseline,
                       skip_peers=MINILM_PEERS_REASON)


# --------------------------------------------------------------------------------------------
# Peers: other attribution methods, measured in the same process as the baseline and ours
# --------------------------------------------------------------------------------------------

PEERS: dict[str, str] = {
    "captum_lrp": "Captum LRP",
    "zennit": "Zennit EpsilonPlusFlat",
    "ig50": "IG-50",
}
CALLABLES = MODES + tuple(PEERS)  # the order of the interleaved timed repeats

# Zennit canonizers by case: the batch-norm merge for the CNN, the torchvision ResNet
# canonizer (batch-norm merge + explicit residual sum) for resnet18.
_ZENNIT_CANONIZERS: dict[str, tuple[str, ...]] = {
    "mlp_b1": (),
    "mlp_b8": (),
    "cnn_b8": ("SequentialMergeBatchNorm",),
    "resnet18": ("ResNetCanonizer",),
}
# A peer whose attribution sum misses its total by more than the total itself has not
# computed a valid attribution on that case: its cost is shown, flagged.
INVALID_PEER_ERROR = 1.0
INVALID_PEER_NOTE = (
    "it runs, but its attribution sum misses the total by more than 100% (sanity table), so "
    "this is the cost of an invalid attribution"
)
ZENNIT_BERT_REASON = (
    "Zennit 0.5 has rules for linear, convolution, pooling and batch-norm layers only, none "
    "for embeddings, LayerNorm, softmax or the attention products, so EpsilonPlusFlat on BERT "
    "is not an LRP attribution; not run"
)


def _zennit_canonizers(names: tuple[str, ...]) -> list[Any]:
    from zennit import canonizers
    from zennit import torchvision as zennit_torchvision

    found = []
    for cname in names:
        cls = getattr(canonizers, cname, None) or getattr(zennit_torchvision, cname)
        found.append(cls())
    return found


def _drop_captum_leftovers(model: Any) -> None:
    """Captum's LRP leaves an ``activations`` dict (holding the forward activations) on every
    layer it hooked; drop it so it neither holds memory nor reaches the next call."""
    for module in model.modules():
        module.__dict__.pop("activations", None)


def _peer_logits(spec: dict[str, Any]) -> Any:
    import torch

    with torch.no_grad():
        return spec["peer_model"](spec["peer_input"](), *spec["peer_extra"]).detach().clone()


def _relative_error(attribution: Any, expected: float) -> float:
    """``|sum(attribution) - expected| / |expected|``: how far the attribution is from the
    total it should distribute (LRP: the target logit; IG: logit(x) - logit(0))."""
    return abs(float(attribution.detach().sum()) - expected) / max(abs(expected), 1e-12)


def _peer_fns(
    spec: dict[str, Any],
) -> tuple[dict[str, Callable[[], Any]], dict[str, str], dict[str, float]]:
    """The peer callables of one case, the peers not run (with the reason) and the total each
    peer's attribution should sum to (for the sanity column)."""
    import torch
    from captum.attr import LRP, IntegratedGradients

    model, make_input = spec["peer_model"], spec["peer_input"]
    extra, target = spec["peer_extra"], spec["target"]
    fns: dict[str, Callable[[], Any]] = {}
    skipped: dict[str, str] = {}
    if spec.get("skip_peers"):
        return fns, {peer: spec["skip_peers"] for peer in PEERS}, {}

    def captum_lrp() -> Any:
        try:
            return LRP(model).attribute(
                make_input(), target=target, additional_forward_args=extra or None
            )
        finally:
            _drop_captum_leftovers(model)

    fns["captum_lrp"] = captum_lrp

    if spec["zennit_canonizers"] is None:
        skipped["zennit"] = ZENNIT_BERT_REASON
    else:
        from zennit.composites import EpsilonPlusFlat

        composite = EpsilonPlusFlat(canonizers=_zennit_canonizers(spec["zennit_canonizers"]))

        def zennit() -> Any:
            x = make_input().detach().requires_grad_(True)
            # The composite's hooks (and canonizers) are attached for this call only, so the
            # other callables, interleaved with it, see the plain model.
            with composite.context(model) as hooked:
                out = hooked(x, *extra)
                seed = torch.zeros_like(out)
                seed[:, target] = out[:, target].detach()
                (relevance,) = torch.autograd.grad(out, x, grad_outputs=seed)
            return relevance

        fns["zennit"] = zennit

    integrated_gradients = IntegratedGradients(model)

    def ig50() -> Any:
        return integrated_gradients.attribute(
            make_input(), target=target, n_steps=50, additional_forward_args=extra or None
        )

    fns["ig50"] = ig50

    with torch.no_grad():
        x = make_input()
        logit = float(model(x, *extra)[:, target].sum())
        at_zero = float(model(torch.zeros_like(x), *extra)[:, target].sum())
    expected = {"captum_lrp": logit, "zennit": logit, "ig50": logit - at_zero}
    return fns, skipped, expected

# --------------------------------------------------------------------------------------------
# Memory meters
# --------------------------------------------------------------------------------------------


def _proc_status_kb(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def _release_freed_heap() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``) so a call's peak is not
    inflated by memory an earlier, larger call freed but the allocator kept resident."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to release
        pass


class _CpuMeter:
    """Peak RSS of one call: kernel high-water mark reset (exact) or a sampling thread."""

    def __init__(self) -> None:
        self.method = "none"
        if not os.path.exists("/proc/self/status"):
            return
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            self.method = "VmHWM after /proc/self/clear_refs reset"
        except OSError:
            self.method = "RSS sampled at 1 kHz (approximate: may miss short spikes)"

    def current(self) -> int | None:
        if self.method == "none":
            return None
        return _proc_status_kb("VmRSS") * 1024

    def peak_of(self, fn: Callable[[], Any]) -> int | None:
        """Run ``fn`` once and return the peak RSS (bytes) during it; the result is kept
        alive until the peak has been read."""
        if self.method == "none":
            fn()
            return None
        _release_freed_heap()
        if self.method.startswith("VmHWM"):
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            result = fn()
            peak = _proc_status_kb("VmHWM") * 1024
            del result
            return peak
        page = os.sysconf("SC_PAGE_SIZE")
        stop = threading.Event()
        samples = [self.current() or 0]

        def sample() -> None:
            with open("/proc/self/statm") as fh:
                while not stop.is_set():
                    fh.seek(0)
                    samples.append(int(fh.read().split()[1]) * page)
                    time.sleep(0.001)

        thread = threading.Thread(target=sample, daemon=True)
        thread.start()
        result = fn()
        samples.append(self.current() or 0)
        stop.set()
        thread.join()
        del result
        return max(samples)


# --------------------------------------------------------------------------------------------
# Worker: one case, one fresh process
# --------------------------------------------------------------------------------------------


def _err(exc: BaseException) -> str:
    msg = " ".join(str(exc).split())
    if len(msg) > 300:
        msg = msg[:297] + "..."
    return f"{type(exc).__name__}: {msg}"


def _warm_export_machinery(device: str) -> str | None:
    """Load torch.export / dlbacktrace lazily-imported machinery on a toy model, so that this
    fixed per-process cost is not attributed to the first measured model."""
    import torch
    from torch import nn

    toy = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)).eval().to(device)
    x = torch.ones(1, 4, device=device)
    try:
        torch.export.export(toy, (x,)).run_decompositions()
    except Exception as exc:  # informational only
        return f"toy torch.export failed: {_err(exc)}"
    try:
        from dlbacktrace import Backtrace

        bt = Backtrace(toy)
        bt.explain(x, target=0)
        bt.explain(x, target=0, mode="contrast")
    except Exception as exc:  # informational only
        return f"toy explain failed: {_err(exc)}"
    return None


def _run_case(name: str, device: str, repeats: int, warmup: int) -> dict[str, Any]:
    import torch

    if name == "resnet18":
        import torchvision  # noqa: F401 - imported before the reference RSS is read
    if name == "bert_minilm":
        import transformers  # noqa: F401 - imported before the reference RSS is read

    res: dict[str, Any] = {"case": name, "description": CASES[name], "errors": {}}
    # The peers' libraries and the counters are imported before the reference RSS is read.
    from _counting import count_call

    try:
        import captum.attr  # noqa: F401
        import zennit.composites  # noqa: F401
    except Exception as exc:  # reported in the table
        res["errors"]["peers"] = _err(exc)
    try:
        from dlbacktrace import Backtrace
    except Exception as exc:  # reported in the table
        Backtrace = None
        res["errors"]["import"] = _err(exc)
    toy_note = _warm_export_machinery(device)
    if toy_note:
        res["warmup_note"] = toy_note

    cuda = device.startswith("cuda")

    def sync() -> None:
        if cuda:
            torch.cuda.synchronize()

    cpu_meter = None if cuda else _CpuMeter()
    res["memory_method"] = (
        "torch.cuda.max_memory_allocated after reset_peak_memory_stats" if cuda
        else cpu_meter.method
    )
    gc.collect()
    rss_ref = None if cuda else cpu_meter.current()
    res["rss_reference_bytes"] = rss_ref

    def peak_bytes(fn: Callable[[], Any]) -> int | None:
        gc.collect()
        if cuda:
            sync()
            torch.cuda.reset_peak_memory_stats()
            result = fn()
            sync()
            peak = torch.cuda.max_memory_allocated()
            del result
            return peak
        peak = cpu_meter.peak_of(fn)
        if peak is None or rss_ref is None:
            return None
        return peak - rss_ref

    def timed(fn: Callable[[], Any], keep: list | None = None) -> float:
        sync()
        t0 = time.perf_counter()
        result = fn()
        sync()
        dt = time.perf_counter() - t0
        if keep is not None:
            keep.append(result)
        del result
        return dt

    spec = _build_case(name, device)
    model, args, kwargs, target = spec["model"], spec["args"], spec["kwargs"], spec["target"]
    res["baseline_note"] = spec["baseline_note"]
    res["params"] = sum(p.numel() for p in model.parameters())
    fns: dict[str, Callable[[], Any]] = {"baseline": spec["baseline"]}

    # Baseline: warm-up, then its peak memory *before* the Backtrace object exists.
    for _ in range(warmup):
        timed(fns["baseline"])
    res["peak_bytes"] = {"baseline": peak_bytes(fns["baseline"])}

    # Peers: first call (which also checks them), warm-up and peak memory, all before the
    # Backtrace object exists, so their peaks hold weights + inputs + their own transients.
    res["peer_error"] = {}
    peer_fns: dict[str, Callable[[], Any]] = {}
    try:
        peer_fns, skipped, expected = _peer_fns(spec)
        res["peer_skipped"] = skipped
    except Exception as exc:  # reported in the table
        res["peer_skipped"] = {}
        res["errors"]["peers"] = _err(exc)
        expected = {}
    reference_logits = _peer_logits(spec) if peer_fns else None
    for peer in list(peer_fns):
        try:
            kept = []
            res.setdefault("first_call_s", {})[peer] = timed(peer_fns[peer], kept)
            res["peer_error"][peer] = _relative_error(kept[0], expected[peer])
            del kept
            for _ in range(warmup):
                timed(peer_fns[peer])
            res["peak_bytes"][peer] = peak_bytes(peer_fns[peer])
        except Exception as exc:  # a peer that cannot run on this case: "–" in the table
            res["peer_skipped"][peer] = _err(exc)
            del peer_fns[peer]
    drift = 0.0 if reference_logits is None else float(
        (_peer_logits(spec) - reference_logits).abs().max())
    if drift != 0.0:  # the engine would explain a different model than the baseline's
        res["errors"]["peers"] = f"the peers left the model changed: logits moved by {drift:.2e}"
    fns.update(peer_fns)

    # Capture + first calls.
    if Backtrace is not None:
        try:
            bt = Backtrace(model)
            fns["default"] = lambda: bt.explain(*args, target=target, **kwargs)
            fns["contrast"] = lambda: bt.explain(*args, target=target, mode="contrast", **kwargs)
        except Exception as exc:  # reported in the table
            res["errors"]["default"] = res["errors"]["contrast"] = _err(exc)
    res.setdefault("first_call_s", {})
    res["conservation_error"] = {}
    for mode in ("default", "contrast"):
        if mode not in fns:
            continue
        try:
            kept: list[Any] = []
            res["first_call_s"][mode] = timed(fns[mode], kept)
            # Sanity only (not timed): relevance conservation reported by the Explanation.
            cons = getattr(kept[0], "conservation_error", None)
            res["conservation_error"][mode] = None if cons is None else float(cons)
            del kept
        except Exception as exc:  # reported in the table
            res["errors"][mode] = _err(exc)
            res["tracebacks"] = res.get("tracebacks", {})
            res["tracebacks"][mode] = traceback.format_exc()
            del fns[mode]

    # Warm-up of the explain modes (the baseline and the peers are warm already).
    for mode in ("default", "contrast"):
        for _ in range(warmup):
            if mode in fns:
                timed(fns[mode])

    # Interleaved timed repeats: ours with the baseline, then the peers with the baseline. Two
    # loops, because a peer may touch the model's parameters in place (Captum LRP bumps their
    # version counters), which would make every following explain recompute its cached |w|.
    order = [c for c in CALLABLES if c in fns]
    ours = [c for c in order if c in ("baseline", "default", "contrast")]
    peers = ["baseline"] + [c for c in order if c not in ours]

    def interleaved(callables: list[str]) -> dict[str, list[float]]:
        got: dict[str, list[float]] = {c: [] for c in callables}
        for _ in range(repeats):
            for c in callables:
                got[c].append(timed(fns[c]))
        return got

    times = interleaved(ours)
    for mode in ("default", "contrast"):
        if mode in fns:
            res["peak_bytes"][mode] = peak_bytes(fns[mode])
    peer_times = interleaved(peers) if len(peers) > 1 else {}
    res["times_s"] = {**times, **{c: v for c, v in peer_times.items() if c != "baseline"}}
    res["median_s"] = {m: statistics.median(v) for m, v in res["times_s"].items()}
    res["min_s"] = {m: min(v) for m, v in res["times_s"].items()}
    peer_base = peer_times.get("baseline", times["baseline"])
    res["baseline_peers_s"] = peer_base

    # Counts (one extra, untimed call of each callable under the counters).
    res["counts"] = {}
    for c in order:
        try:
            _, counts = count_call(fns[c])
            res["counts"][c] = counts.as_dict()
        except Exception as exc:  # reported in the table
            res["errors"][f"counts {c}"] = _err(exc)

    base_t = res["median_s"]["baseline"]
    base_m = res["peak_bytes"]["baseline"]
    res["time_ratio"] = {}
    res["memory_ratio"] = {}
    for c in order[1:]:
        base_c, base_min = ((base_t, res["min_s"]["baseline"]) if c in ours
                            else (statistics.median(peer_base), min(peer_base)))
        res["time_ratio"][c] = res["median_s"][c] / base_c
        # Ratio of the fastest repeats: interference from other processes only ever adds
        # time, so on a busy machine this is the steadier estimate (shown beside it).
        res.setdefault("min_time_ratio", {})[c] = res["min_s"][c] / base_min
        pm = res["peak_bytes"].get(c)
        if pm is not None and base_m:
            res["memory_ratio"][c] = pm / base_m
    return res


def _run_guarded(name: str, device: str, repeats: int, warmup: int) -> dict[str, Any]:
    try:
        return _run_case(name, device, repeats, warmup)
    except Exception as exc:  # reported in the table
        return {"case": name, "description": CASES[name], "errors": {"case": _err(exc)},
                "traceback": traceback.format_exc()}


def _worker(name: str, device: str, repeats: int, warmup: int, conn: Any) -> None:
    res = _run_guarded(name, device, repeats, warmup)
    conn.send(res)
    conn.close()


def _run_in_subprocess(name: str, device: str, repeats: int, warmup: int,
                       timeout: float) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_worker, args=(name, device, repeats, warmup, send))
    proc.start()
    send.close()
    res: dict[str, Any] | None = None
    deadline = time.monotonic() + timeout
    while res is None:
        if recv.poll(1.0):
            try:
                res = recv.recv()
            except EOFError:
                break
        elif not proc.is_alive() or time.monotonic() > deadline:
            break
    if res is None:
        if proc.is_alive():
            proc.terminate()
            why = f"timed out after {timeout:.0f} s"
        else:
            why = f"worker process died (exit code {proc.exitcode})"
        res = {"case": name, "description": CASES[name], "errors": {"case": why}}
    proc.join()
    return res


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------


def _ratio_cell(res: dict[str, Any], kind: str, mode: str, target: float) -> str:
    value = res.get(kind, {}).get(mode)
    if value is None:
        errors = res.get("errors", {})
        return "ERROR (see below)" if (mode in errors or "case" in errors) else "n/a"
    verdict = "ok" if value <= target else "over"
    best = res.get("min_time_ratio", {}).get(mode) if kind == "time_ratio" else None
    extra = "" if best is None else f"; min {best:.2f}x"
    return f"{value:.2f}x ({verdict}{extra})"


def _mb(nbytes: int | None) -> str:
    return "n/a" if nbytes is None else f"{nbytes / 2**20:.0f}"


class _Footnotes:
    """Numbered reasons for the "–" cells; one number per distinct reason."""

    def __init__(self) -> None:
        self.numbers: dict[str, int] = {}
        self.cases: dict[str, list[str]] = {}

    def mark(self, case: str, label: str, reason: str) -> str:
        key = f"{label}: {reason}"
        number = self.numbers.setdefault(key, len(self.numbers) + 1)
        cases = self.cases.setdefault(key, [])
        if case not in cases:
            cases.append(case)
        return f"[{number}]"

    def lines(self) -> list[str]:
        return [
            f"[{n}] {key.split(': ', 1)[0]} on {', '.join(f'`{c}`' for c in self.cases[key])}: "
            f"{key.split(': ', 1)[1]}"
            for key, n in self.numbers.items()
        ]


def _peer_cell(res: dict[str, Any], kind: str, c: str, notes: _Footnotes) -> str:
    """One ratio cell of the peer tables: a number, or "–" with a footnote giving why."""
    label = PEERS.get(c, f"dlbacktrace {c}")
    value = res.get(kind, {}).get(c)
    if value is not None:
        best = res.get("min_time_ratio", {}).get(c) if kind == "time_ratio" else None
        cell = f"{value:.2f}x" + ("" if best is None else f" (min {best:.2f}x)")
        if res.get("peer_error", {}).get(c, 0.0) > INVALID_PEER_ERROR:
            cell += " " + notes.mark(res["case"], label, INVALID_PEER_NOTE)
        return cell
    errors = res.get("errors", {})
    reason = (
        res.get("peer_skipped", {}).get(c)
        or errors.get(c)
        or errors.get("case")
        or (errors.get("peers") if c in PEERS else None)
        or ("no peak memory measurement on this platform" if kind == "memory_ratio"
            else "not measured")
    )
    return "– " + notes.mark(res["case"], label, reason)


def _peer_tables(results: list[dict[str, Any]]) -> list[str]:
    notes = _Footnotes()
    columns = ("default", "contrast", *PEERS)
    header = "| case | " + " | ".join(
        f"dlbacktrace {c}" if c in MODES else PEERS[c] for c in columns
    ) + " |"
    rule = "|---|" + "---|" * len(columns)
    lines = [
        "",
        "Ours beside the peers, time ÷ baseline (medians; ours interleaved with the baseline, "
        "then the peers interleaved with the baseline; the ratio of the fastest repeats in "
        "brackets):",
        "",
        header,
        rule,
    ]
    for r in results:
        cells = [_peer_cell(r, "time_ratio", c, notes) for c in columns]
        lines.append(f"| {r['case']} | " + " | ".join(cells) + " |")
    lines += ["", "Peak memory ÷ baseline peak memory:", "", header, rule]
    for r in results:
        cells = [_peer_cell(r, "memory_ratio", c, notes) for c in columns]
        lines.append(f"| {r['case']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Sanity (not timed): dlbacktrace's conservation error, and each peer's "
        "|sum(attribution) − total| / |total|, total = the target logit for the LRP methods "
        "and logit(x) − logit(0) for IG (LRP epsilon rules let biases absorb relevance, so "
        "their figure is not expected to be 0):",
        "",
        header,
        rule,
    ]
    for r in results:
        cons, perr = r.get("conservation_error", {}), r.get("peer_error", {})
        cells = []
        for c in columns:
            value = cons.get(c) if c in MODES else perr.get(c)
            cells.append("n/a" if value is None else f"{value:.1e}")
        lines.append(f"| {r['case']} | " + " | ".join(cells) + " |")
    footnotes = notes.lines()
    if footnotes:
        lines += ["", *footnotes]
    return lines


def _count_table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "Counts per call (one extra, untimed call of each): ATen ops dispatched (forward and "
        "backward); host syncs = calls of `Tensor.item/tolist/__bool__/__float__/__int__/"
        "__index__/cpu/numpy` from Python (each blocks on an accelerator); ATen host reads = "
        "`_local_scalar_dense`, data-dependent-shape ops (`nonzero`, boolean indexing, ...) "
        "and device-to-CPU copies:",
        "",
        "| case | callable | ATen ops | host syncs | ATen host reads |",
        "|---|---|---:|---:|---:|",
    ]
    for r in results:
        for c, counts in r.get("counts", {}).items():
            label = PEERS.get(c, c)
            lines.append(
                f"| {r['case']} | {label} | {counts['aten_ops']} | {counts['host_sync_calls']} "
                f"| {counts['aten_host_reads']} |"
            )
    return lines


def _markdown(results: list[dict[str, Any]]) -> str:
    lines = [
        "| case | baseline ms, median (min-max) "
        f"| default / baseline (target <= {TARGET_DEFAULT}x) "
        f"| contrast / baseline (target <= {TARGET_CONTRAST}x) | peak MB base / def / con "
        f"| peak mem default / baseline (target <= {TARGET_MEMORY}x) "
        f"| peak mem contrast / baseline (target <= {TARGET_MEMORY}x) |",
        "|---|---:|---|---|---:|---|---|",
    ]
    for r in results:
        base = r.get("median_s", {}).get("baseline")
        base_s = "n/a"
        if base is not None:
            tb = r["times_s"]["baseline"]
            base_s = f"{base * 1e3:.1f} ({min(tb) * 1e3:.1f}-{max(tb) * 1e3:.1f})"
            if max(tb) > NOISY_SPREAD * min(tb):
                base_s += " NOISY"
        if base is None and r.get("errors", {}).get("case"):
            base_s = "ERROR (see below)"
        pk = r.get("peak_bytes", {})
        mem_s = " / ".join(_mb(pk.get(m)) for m in MODES)
        lines.append(
            f"| {r['case']} | {base_s} "
            f"| {_ratio_cell(r, 'time_ratio', 'default', TARGET_DEFAULT)} "
            f"| {_ratio_cell(r, 'time_ratio', 'contrast', TARGET_CONTRAST)} "
            f"| {mem_s} "
            f"| {_ratio_cell(r, 'memory_ratio', 'default', TARGET_MEMORY)} "
            f"| {_ratio_cell(r, 'memory_ratio', 'contrast', TARGET_MEMORY)} |"
        )
    lines += [
        "",
        "First call (includes `torch.export` capture), reported separately:",
        "",
        "| case | first default call (s) | median default (s) | first contrast call (s) "
        "| median contrast (s) | conservation error default / contrast |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        first = r.get("first_call_s", {})
        med = r.get("median_s", {})

        def s(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        cons = r.get("conservation_error", {})

        def e(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.1e}"

        lines.append(
            f"| {r['case']} | {s(first.get('default'))} | {s(med.get('default'))} "
            f"| {s(first.get('contrast'))} | {s(med.get('contrast'))} "
            f"| {e(cons.get('default'))} / {e(cons.get('contrast'))} |"
        )
    lines += _peer_tables(results)
    lines += _count_table(results)
    errors = [(r["case"], k, e) for r in results for k, e in r.get("errors", {}).items()]
    if errors:
        lines += ["", "Errors:", ""]
        lines += [f"- `{case}` ({what}): {err}" for case, what, err in errors]
    return "\n".join(lines)


def _version(package: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
    parser.add_argument("--repeats", type=int, default=None,
                        help="timed repeats per callable (default 7; 3 with --quick)")
    parser.add_argument("--warmup", type=int, default=None,
                        help="warm-up runs per callable (default 2; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and warm-ups")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES),
                        help="subset of cases to run")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON")
    parser.add_argument("--case-timeout", type=float, default=3600.0,
                        help="seconds before a case's worker process is abandoned")
    parser.add_argument("--in-process", action="store_true",
                        help="run the cases in this process, not each in a fresh one: faster "
                             "(smoke tests), but the memory figures then include whatever "
                             "this process already holds")
    args = parser.parse_args(argv)

    repeats = args.repeats if args.repeats is not None else (3 if args.quick else 7)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if repeats < 1 or warmup < 0:
        parser.error("--repeats must be >= 1 and --warmup >= 0")

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("--device cuda requested but torch.cuda.is_available() is False")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "device": args.device,
        "device_name": (torch.cuda.get_device_name(torch.device(args.device))
                        if args.device.startswith("cuda") else platform.processor() or "cpu"),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "repeats": repeats,
        "warmup": warmup,
        "captum": _version("captum"),
        "zennit": _version("zennit"),
    }
    load_start = os.getloadavg() if hasattr(os, "getloadavg") else None
    results = []
    for name in args.cases:
        print(f"[bench] {name}: {CASES[name]} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        if args.in_process:
            res = _run_guarded(name, args.device, repeats, warmup)
        else:
            res = _run_in_subprocess(name, args.device, repeats, warmup, args.case_timeout)
        res["wall_s"] = time.perf_counter() - t0
        for key, err in res.get("errors", {}).items():
            print(f"[bench]   {key}: {err}", file=sys.stderr, flush=True)
        print(f"[bench]   done in {res['wall_s']:.1f} s", file=sys.stderr, flush=True)
        results.append(res)

    methods = sorted({r["memory_method"] for r in results if "memory_method" in r})
    notes = sorted({r["warmup_note"] for r in results if "warmup_note" in r})
    print("# dlbacktrace core benchmark\n")
    print(f"- torch {env['torch']}, python {env['python']}, device `{env['device']}` "
          f"({env['device_name']}), torch threads {env['torch_threads']} "
          f"(of {env['cpu_count']} CPUs)")
    print(f"- {warmup} warm-up run(s) then {repeats} interleaved timed repeat(s) per callable; "
          "ratios compare medians (the ratio of the fastest repeats, `min`, is shown beside "
          f"it); baseline column: median (min-max), NOISY where max > {NOISY_SPREAD} x min")
    if load_start is not None:
        load_end = os.getloadavg()
        print(f"- 1-min load average at start / end: {load_start[0]:.2f} / {load_end[0]:.2f} "
              "(other processes competing for the CPUs distort the times)")
    print("- baseline: forward + `torch.autograd.grad` of the target logit (summed over the "
          "batch) w.r.t. the input tensor"
          + ("; " + BERT_BASELINE_NOTE if "bert_minilm" in args.cases else ""))
    print(f"- peak memory: {'; '.join(methods) or 'n/a'} (weights + inputs + engine state + "
          "transients; CPU figures are above the process's RSS before the model was built)")
    print(f"- peers (captum {env['captum']}, zennit {env['zennit']}), run in the same process "
          "and interleaved with the baseline (a loop of their own): Captum LRP = "
          "`captum.attr.LRP` with its default rules; Zennit = `EpsilonPlusFlat` composite, "
          "with `SequentialMergeBatchNorm` for the CNN and `ResNetCanonizer` for resnet18, "
          "relevance seeded with the target logit; IG-50 = `captum.attr.IntegratedGradients`, "
          "50 steps, zero baseline, one batch; on BERT they attribute the input embeddings, "
          "like the baseline")
    for note in notes:
        print(f"- note: {note}")
    print()
    print(_markdown(results))

    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"env": env, "targets": {"default_time": TARGET_DEFAULT,
                                               "contrast_time": TARGET_CONTRAST,
                                               "peak_memory": TARGET_MEMORY},
                       "results": results}, fh, indent=2)
        print(f"[bench] wrote {args.json}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
