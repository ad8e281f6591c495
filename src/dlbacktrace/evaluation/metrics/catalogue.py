"""The registered metrics: each function of this package bound to an evaluation context.

:data:`METRICS` holds one :class:`~.metric.Metric` per score, in table order. Sample counts
follow the benchmark's budget (``context.quick``, text or not). Adding a metric is one
``METRICS.register(Metric(...))`` call, here or in user code.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from dlbacktrace.evaluation.metrics import faithfulness as F
from dlbacktrace.evaluation.metrics._perturb import removal_value
from dlbacktrace.evaluation.metrics.complexity import entropy, sparseness
from dlbacktrace.evaluation.metrics.conservation import completeness_error, conservation_error
from dlbacktrace.evaluation.metrics.context import EvaluationContext
from dlbacktrace.evaluation.metrics.metric import Category, Metric
from dlbacktrace.evaluation.metrics.randomisation import (
    cascading_randomisation,
    randomisation_score,
)
from dlbacktrace.evaluation.metrics.robustness import sensitivities
from dlbacktrace.evaluation.metrics.stability import determinism, run_variance
from dlbacktrace.evaluation.registry import Registry

FAITHFULNESS = Category.FAITHFULNESS


def _mean_curves(c: F.Curves) -> dict[str, list[float]]:
    return {
        "fractions": c.fractions.tolist(),
        "morf": c.morf.mean(0).tolist(),
        "lerf": c.lerf.mean(0).tolist(),
        "insertion": c.insertion.mean(0).tolist(),
    }


def _curves(ctx: EvaluationContext) -> F.Curves:
    def compute() -> F.Curves:
        c = F.curves(ctx.forward, ctx.inputs, ctx.attributions, ctx.targets, steps=ctx.steps,
                     fractions=ctx.fractions, **ctx.perturbation_options())  # fmt: skip
        ctx.details["curves"] = _mean_curves(c)  # the plots' mean curves
        return c

    return ctx.shared("curves", compute)


def _masked_options(ctx: EvaluationContext) -> dict:
    return dict(ctx.perturbation_options(), removal=ctx.masked_removal)


def _masked_curves(ctx: EvaluationContext) -> F.Curves:
    return ctx.shared("masked_curves", lambda: F.curves(
        ctx.masked_forward, ctx.inputs, ctx.attributions, ctx.targets, steps=ctx.steps,
        fractions=ctx.fractions, **_masked_options(ctx),
    ))  # fmt: skip


def _eraser(ctx: EvaluationContext) -> dict[str, torch.Tensor]:
    """Read off the curves when the task's bins lie on them, else ERASER's own bins."""
    if ctx.eraser_bins is not None:
        return ctx.shared("eraser", lambda: _curves(ctx).eraser(ctx.eraser_bins))
    return ctx.shared("eraser", lambda: F.eraser(
        ctx.forward, ctx.inputs, ctx.attributions, ctx.targets, **ctx.perturbation_options()
    ))  # fmt: skip


def _faithfulness_correlation(ctx: EvaluationContext) -> torch.Tensor:
    samples = 12 if ctx.tokens else (20 if ctx.quick else 50)
    return F.faithfulness_correlation(ctx.forward, ctx.inputs, ctx.attributions, ctx.targets,
                                      n_samples=samples, seed=ctx.seed,
                                      **ctx.perturbation_options())  # fmt: skip


def _faithfulness_correlation_mask(ctx: EvaluationContext) -> torch.Tensor:
    return F.faithfulness_correlation(ctx.masked_forward, ctx.inputs, ctx.attributions,
                                      ctx.targets, n_samples=12, seed=ctx.seed,
                                      **_masked_options(ctx))  # fmt: skip


def _infidelity(ctx: EvaluationContext) -> torch.Tensor:
    x = ctx.inputs
    return F.infidelity(ctx.forward, x, ctx.attributions, ctx.targets,
                        n_samples=16 if ctx.quick else 32, batch_size=ctx.batch_size,
                        noise_std=0.1 * float(x.std()), seed=ctx.seed,
                        additional_forward_args=ctx.additional_forward_args)  # fmt: skip


def _sensitivities(ctx: EvaluationContext) -> torch.Tensor:
    """``[few, samples]`` relative map changes under uniform noise of 2% of the value range."""

    def compute() -> torch.Tensor:
        few = ctx.few
        xs, ts = ctx.inputs[:few], ctx.targets[:few]

        def explain_fn(z: torch.Tensor) -> torch.Tensor:
            return ctx.explain_inputs(z, ts.repeat_interleave(z.shape[0] // few))

        radius = 0.02 * float(ctx.inputs.max() - ctx.inputs.min())
        return sensitivities(explain_fn, xs, n_samples=3 if ctx.quick else 5, radius=radius,
                             reference=ctx.attributions[:few], seed=ctx.seed)  # fmt: skip

    return ctx.shared("sensitivities", compute)


def _randomisation(ctx: EvaluationContext) -> torch.Tensor:
    xs, ts = ctx.first(ctx.few)
    sims = cascading_randomisation(
        ctx.model, lambda model: ctx.explain_inputs(xs, ts, model=model),
        layers=ctx.randomise_layers, seed=ctx.seed,
    )
    ctx.details["randomisation_layers"] = {k: float(v.mean()) for k, v in sims.items()}
    return randomisation_score(sims)


def _valid_maps(ctx: EvaluationContext) -> torch.Tensor:
    """The maps with non-features (padding, special tokens) set to zero."""
    valid = ctx.valid_elements
    return ctx.attributions if valid is None else ctx.attributions * valid.to(ctx.attributions)


def _determinism(ctx: EvaluationContext) -> torch.Tensor:
    # the measured maps are the first run: one rerun of the same instances
    runs = iter([ctx.attributions[: ctx.few]])

    def run() -> torch.Tensor:
        first = next(runs, None)
        return first if first is not None else ctx.explain_instances(ctx.few)

    return determinism(run, runs=2)


def _run_variance(ctx: EvaluationContext) -> torch.Tensor:
    # the measured maps are seed 0: two more seeds
    few = ctx.few
    return run_variance(
        lambda s: ctx.attributions[:few] if s == 0 else ctx.explain_instances(few, seed=s)
    )


def _completeness(ctx: EvaluationContext) -> torch.Tensor:
    """Against the all-removed input: the reference IG and DeepLift use here."""
    x, t = ctx.inputs, ctx.targets[:, None]
    with torch.no_grad():
        fx = ctx.forward(x).gather(1, t)[:, 0]
        f0 = ctx.forward(removal_value(x, ctx.removal)).gather(1, t)[:, 0]
    return completeness_error(ctx.attributions, fx, f0)


def _time_per_instance_ms(ctx: EvaluationContext) -> torch.Tensor:
    return torch.full((ctx.n,), 1000 * ctx.cost.seconds / ctx.n, dtype=torch.float64)


CURVES = ("forward",)
MASKED = ("masked_forward",)
# Token inputs are discrete: infidelity and sensitivity perturb inputs with small continuous
# noise, which token ids do not have. Completeness needs the methods' own reference, which for
# text also replaces special tokens. So these need continuous inputs.
FLOAT = ("forward", "continuous_inputs")
METRICS: Registry[Metric] = Registry("metric")
for _metric in (
    Metric(name="deletion_auc", higher_is_better=False, category=FAITHFULNESS, needs=CURVES,
           label="MoRF AUC", score=lambda ctx: _curves(ctx).deletion_auc),
    Metric(name="insertion_auc", higher_is_better=True, category=FAITHFULNESS, needs=CURVES,
           label="insertion AUC", score=lambda ctx: _curves(ctx).insertion_auc),
    Metric(name="lerf_auc", higher_is_better=True, category=FAITHFULNESS, needs=CURVES,
           label="LeRF AUC", score=lambda ctx: _curves(ctx).lerf_auc),
    Metric(name="abpc", higher_is_better=True, category=FAITHFULNESS, needs=CURVES,
           label="ABPC", score=lambda ctx: _curves(ctx).abpc),
    Metric(name="comprehensiveness", higher_is_better=True, category=FAITHFULNESS,
           needs=CURVES, label="compr.", score=lambda ctx: _eraser(ctx)["comprehensiveness"]),
    Metric(name="sufficiency", higher_is_better=False, category=FAITHFULNESS, needs=CURVES,
           label="suff.", score=lambda ctx: _eraser(ctx)["sufficiency"]),
    Metric(name="faithfulness_correlation", higher_is_better=True, category=FAITHFULNESS,
           needs=CURVES, label="faithf. corr.", score=_faithfulness_correlation),
    Metric(name="deletion_auc_mask", higher_is_better=False, category=FAITHFULNESS,
           needs=MASKED, label="MoRF AUC (mask)",
           score=lambda ctx: _masked_curves(ctx).deletion_auc),
    Metric(name="insertion_auc_mask", higher_is_better=True, category=FAITHFULNESS,
           needs=MASKED, label="insertion AUC (mask)",
           score=lambda ctx: _masked_curves(ctx).insertion_auc),
    Metric(name="lerf_auc_mask", higher_is_better=True, category=FAITHFULNESS, needs=MASKED,
           label="LeRF AUC (mask)", score=lambda ctx: _masked_curves(ctx).lerf_auc),
    Metric(name="abpc_mask", higher_is_better=True, category=FAITHFULNESS, needs=MASKED,
           label="ABPC (mask)", score=lambda ctx: _masked_curves(ctx).abpc),
    Metric(name="faithfulness_correlation_mask", higher_is_better=True, category=FAITHFULNESS,
           needs=MASKED, label="faithf. corr. (mask)", score=_faithfulness_correlation_mask),
    Metric(name="infidelity", higher_is_better=False, category=FAITHFULNESS, needs=FLOAT,
           label="infidelity", score=_infidelity),
    Metric(name="max_sensitivity", higher_is_better=False, category=Category.ROBUSTNESS,
           needs=("explain_inputs", "continuous_inputs"), label="max-sens.",
           score=lambda ctx: _sensitivities(ctx).amax(1)),
    Metric(name="avg_sensitivity", higher_is_better=False, category=Category.ROBUSTNESS,
           needs=("explain_inputs", "continuous_inputs"), label="avg-sens.",
           score=lambda ctx: _sensitivities(ctx).mean(1)),
    Metric(name="randomisation_similarity", higher_is_better=False,
           category=Category.RANDOMISATION, needs=("explain_inputs",), label="rand. sim.",
           score=_randomisation),
    Metric(name="sparseness", higher_is_better=True, category=Category.COMPLEXITY,
           label="Gini", score=lambda ctx: sparseness(_valid_maps(ctx))),
    Metric(name="entropy", higher_is_better=False, category=Category.COMPLEXITY,
           label="entropy", score=lambda ctx: entropy(_valid_maps(ctx))),
    Metric(name="determinism", higher_is_better=True, category=Category.STABILITY,
           needs=("explain_instances",), label="determ.", score=_determinism),
    Metric(name="run_variance", higher_is_better=False, category=Category.STABILITY,
           needs=("explain_instances", "sampling"), label="run var.", score=_run_variance),
    Metric(name="conservation_error", higher_is_better=False, category=Category.CONSERVATION,
           needs=("ledger",), label="cons. err.",
           score=lambda ctx: torch.tensor([conservation_error(e) for e in ctx.explanations],
                                          dtype=torch.float64)),
    # DLBacktrace distributes a unit seed (relevance as shares of the output, with bias
    # absorption in its ledger), so completeness against f(x) - f(x0) does not apply to it
    Metric(name="completeness_error", higher_is_better=False,
           category=Category.CONSERVATION, needs=(*FLOAT, "signed", "no_ledger"),
           label="compl. err.", score=_completeness),
    Metric(name="time_per_instance_ms", higher_is_better=False, category=Category.COST,
           needs=("cost",), label="ms/inst.", score=_time_per_instance_ms),
    Metric(name="peak_memory_mb", higher_is_better=False, category=Category.COST,
           needs=("cost",), label="peak MB",
           score=lambda ctx: torch.tensor([ctx.cost.peak_memory_mb], dtype=torch.float64)),
):  # fmt: skip
    METRICS.register(_metric)
del _metric


def evaluate(
    context: EvaluationContext, metrics: Iterable[Metric] | None = None
) -> dict[str, torch.Tensor]:
    """Every metric that applies to ``context``, by name (Quantus's ``evaluate`` for one
    method): metrics whose needs the context does not meet are left out.

    Parameters
    ----------
    context
        The method's maps and what the metrics may use.
    metrics
        The metrics to try (default: every registered one, in registry order).

    Returns
    -------
    dict
        ``{name: values}``, each ``[B]`` (or ``[1]`` for a value of the whole run).
    """
    chosen = METRICS.values() if metrics is None else metrics
    return {m.name: m(context) for m in chosen if m.applies_to(context)}


def higher_is_better() -> dict[str, bool]:
    """``{name: higher_is_better}`` of every registered metric (for result files)."""
    return {name: metric.higher_is_better for name, metric in METRICS.items()}


__all__ = ["METRICS", "evaluate", "higher_is_better"]
