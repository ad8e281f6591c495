"""Tutorial: compare DLBacktrace with other attribution methods on your own model and data."""

# ruff: noqa: E402  (each section imports what it introduces, as the page shows it)

# --8<-- [start:setup]
import torch

from dlbacktrace.evaluation import metrics as M
from dlbacktrace.evaluation.baselines import METHODS, explain
from dlbacktrace.examples.datasets import load_german_credit
from dlbacktrace.examples.zoo import train_tabular_mlp

data = load_german_credit()
train, test = data.split(test_fraction=0.2, seed=0)
model = train_tabular_mlp(train.x, train.y, seed=0)
x = torch.from_numpy(test.x[:64])
# --8<-- [end:setup]

# --8<-- [start:methods]
print(list(METHODS))                       # every registered method, by name
for name in ["dlb-contrast", "integrated-gradients", "saliency", "random"]:
    exp = explain(model, x, method=name)   # the same Explanation for every method
    curves = M.curves(model, x, exp.relevance, exp.target, steps=20, removal="zero")
    abpc = curves.abpc.numpy()             # per instance: LeRF area - MoRF area
    print(f"{name:22s} ABPC {abpc.mean():.3f} ± {abpc.std(ddof=1) / len(abpc) ** 0.5:.3f}")
# --8<-- [end:methods]

# --8<-- [start:context]
ig = explain(model, x, method="integrated-gradients", n_steps=32)
ctx = M.EvaluationContext(model=model, inputs=x, targets=ig.target,
                          attributions=ig.relevance, method=METHODS["integrated-gradients"],
                          forward=model, removal="zero")
scores = M.evaluate(ctx)                   # every metric whose needs the context meets
for name, values in scores.items():
    print(f"{name:28s} {values.double().mean().item():.4f}  (n={len(values)})")
# --8<-- [end:context]
assert "abpc" in scores

# --8<-- [start:evaluate]
from dlbacktrace.evaluation.evaluate import evaluate

result = evaluate(model, test.x, methods="dlb,dlb-contrast,integrated-gradients,saliency,random",
                  instances=32, seed=0, feature_names=data.feature_names, quick=True,
                  out="eval")                  # report.html, results.json, results.csv
print(result.ranking)                          # methods by ABPC, best first
for method, lines in result.verdicts.items():  # plain-language verdicts (2 SE rule)
    print(method, "-", "; ".join(lines))
print(result.score("dlb-contrast", "abpc"))    # a plain float; values(): a NumPy array
frame = result.to_dataframe()                  # every number with its n and standard error
# --8<-- [end:evaluate]
assert result.ranking[-1] == "random" or result.score("random", "abpc") < 0.5
