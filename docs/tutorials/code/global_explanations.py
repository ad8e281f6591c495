"""Tutorial: global explanations over a whole data set, and comparing two models."""

# ruff: noqa: E402  (each section imports what it introduces, as the page shows it)

# --8<-- [start:aggregate]
import numpy as np
import pandas as pd

from dlbacktrace.aggregate import GlobalExplanation, aggregate, compare
from dlbacktrace.examples.datasets import load_german_credit
from dlbacktrace.examples.zoo import train_tabular_mlp

data = load_german_credit()
train, test = data.split(test_fraction=0.2, seed=0)
model = train_tabular_mlp(train.x, train.y, seed=0)

frame = pd.DataFrame(test.x, columns=data.feature_names)
frame["label"] = test.y
g = aggregate(model, frame, labels="label", mode="contrast", batch_size=64,
              class_names=data.class_names)    # one batched explain per 64 rows
print(g.to_dataframe().head())                  # per feature x class: count, mean, mean_abs, ...
importance = g.importance()                     # mean |relevance| per feature
for i in np.argsort(importance)[::-1][:5]:
    print(f"{g.feature_labels()[i]:45s} {importance[i]:.3f}")
print(g.quantiles([0.1, 0.5, 0.9]).shape)       # from a fixed-size deterministic sample
# --8<-- [end:aggregate]
assert g.class_counts().sum() == len(test)

# --8<-- [start:save]
g.save("global.npz")
same = GlobalExplanation.load("global.npz")
print(np.array_equal(same.importance(), g.importance()))   # True
# --8<-- [end:save]
assert np.array_equal(same.importance(), g.importance())

# --8<-- [start:compare]
# Retrain without the most important feature (shuffled) and compare the two models.
top = int(np.argmax(importance))
shuffled = train.x.copy()
shuffled[:, top] = np.random.default_rng(0).permutation(shuffled[:, top])
retrained = train_tabular_mlp(shuffled, train.y, seed=0)
after = aggregate(retrained, frame, labels="label", mode="contrast", batch_size=64,
                  class_names=data.class_names)
cmp = compare(g, after, names=("before", "after"))
print(cmp.summary())        # biggest losses and gains, with standard errors
print(cmp.lost(3))          # the shuffled feature comes first
table = cmp.table()         # per feature: importance before/after, change, standard error
# --8<-- [end:compare]
assert cmp.lost(1)[0] == data.feature_names[top]

# --8<-- [start:bias]
# Bias lens: statistics per group of rows, and the share of relevance on sensitive features.
female = frame["status_sex=female : divorced/separated/married"] > 0   # standardised one-hot
groups = np.where(female, "female", "male")
lens = aggregate(model, frame, labels="label", mode="contrast", batch_size=64,
                 class_names=data.class_names, groups=groups, sensitive=["age", "status_sex"])
shares = lens.sensitive_shares()     # per group and "(all rows)": mean share of |R| and its SE
print(shares)
print(lens.group_table().head())     # per group and feature: count, mean, mean |R|, std
# --8<-- [end:bias]
assert set(shares["group"]) >= {"female", "male", "(all rows)"}

# --8<-- [start:plots]
from dlbacktrace.viz import save_figure
from dlbacktrace.viz.global_plots import plot_beeswarm, plot_feature_importance

save_figure(plot_feature_importance(g), "importance.png")
save_figure(plot_beeswarm(g), "beeswarm.png")
# --8<-- [end:plots]
