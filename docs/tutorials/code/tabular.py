"""Tutorial: explain a tabular classifier (German credit MLP)."""

# ruff: noqa: E402  (each section imports what it introduces, as the page shows it)

# --8<-- [start:train]
import torch

from dlbacktrace import Backtrace
from dlbacktrace.examples.datasets import load_german_credit
from dlbacktrace.examples.zoo import train_tabular_mlp

data = load_german_credit()                      # 1000 applicants, one-hot encoded
train, test = data.split(test_fraction=0.2, seed=0)  # standardised with train statistics
model = train_tabular_mlp(train.x, train.y, seed=0)  # Linear-ReLU stack, eval mode
x = torch.from_numpy(test.x[:8])                 # 8 applicants to explain
# --8<-- [end:train]

# --8<-- [start:default]
bt = Backtrace(model)
exp = bt.explain(x, feature_names=data.feature_names, output_names=data.class_names)
print(exp.relevance.shape)          # torch.Size([8, 61]): one value per feature
print(exp.target)                   # the predicted class of each row
print(exp.conservation_error)       # tiny (at most ~1e-6 in float32): the ledger balances
# --8<-- [end:default]
assert exp.relevance.shape == x.shape
assert (exp.relevance >= 0).all()
assert exp.conservation_error < 1e-5

# --8<-- [start:contrast]
exp = bt.explain(x, target=1, mode="contrast", feature_names=data.feature_names)
logit = model(x)[:, 1]
# per row: relevance + absorbed (absorbed_rows[:-1], float64) = the logit of class 1
ledger = exp.relevance.sum(dim=1).double() + exp.absorbed_rows[:-1]
print(torch.allclose(ledger, logit.double(), atol=1e-4))  # True
print(torch.equal(exp.relevance, exp.positive - exp.negative))     # True
# --8<-- [end:contrast]
assert torch.allclose(ledger, logit.double(), atol=1e-4)
assert torch.equal(exp.relevance, exp.positive - exp.negative)

# --8<-- [start:table]
frame = exp.to_dataframe()          # one row per (row, feature): names, values, relevance
print(frame.head())
row0 = exp[0]                       # the explanation of the first applicant alone
top = row0.relevance[0].abs().argsort(descending=True)[:5]
for i in top.tolist():
    print(f"{data.feature_names[i]:50s} {row0.relevance[0, i].item():+.3f}")
# --8<-- [end:table]

# --8<-- [start:save]
exp.save("credit.npz")              # .npz + JSON header, never unpickled
from dlbacktrace import Explanation

again = Explanation.load("credit.npz")
print(torch.equal(again.relevance, exp.relevance))  # True
# --8<-- [end:save]
assert torch.equal(again.relevance, exp.relevance)

# --8<-- [start:attribute]
attr = bt.attribute(x, target=1)    # Captum-compatible: a tensor shaped like x
# --8<-- [end:attribute]
assert attr.shape == x.shape
