"""Tutorial: models from other frameworks (scikit-learn, ONNX, Keras 3 on its torch backend)."""

# ruff: noqa: E402  (each section imports what it introduces, as the page shows it)

# --8<-- [start:sklearn]
import numpy as np
import torch
from sklearn.datasets import load_breast_cancer
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from dlbacktrace.bridges.sklearn import explain_mlp, mlp_to_torch

X, y = load_breast_cancer(return_X_y=True)
clf = make_pipeline(StandardScaler(), MLPClassifier((16,), max_iter=500, random_state=0))
clf.fit(X, y)
exp = explain_mlp(clf, X[:5], target="positive", mode="contrast")  # binary: one logit
print(exp.relevance.shape)                 # torch.Size([5, 30]): on the raw features
module = mlp_to_torch(clf)                 # nn.Sequential with the estimator's exact weights
proba = torch.sigmoid(module(torch.as_tensor(X[:5]))).squeeze(-1).detach().numpy()
print(np.allclose(proba, clf.predict_proba(X[:5])[:, 1]))   # True
# --8<-- [end:sklearn]
assert np.allclose(proba, clf.predict_proba(X[:5])[:, 1])

# --8<-- [start:onnx]
from skl2onnx import to_onnx

from dlbacktrace.bridges.onnx import OnnxBacktrace

# skl2onnx writes scalers as ai.onnx.ml operators, which onnx2torch does not convert:
# export the MLP step and feed it standardised rows.
mlp, rows = clf[-1], clf[0].transform(X[:5]).astype(np.float32)
onnx_model = to_onnx(mlp, rows[:1], options={"zipmap": False})
with open("cancer.onnx", "wb") as f:
    f.write(onnx_model.SerializeToString())
ob = OnnxBacktrace("cancer.onnx", outputs=["probabilities"])   # drop the ArgMax label branch
onnx_exp = ob.explain(rows, target=1)    # inputs carry the ONNX input names
print(onnx_exp.relevance.shape)            # torch.Size([5, 30])
# --8<-- [end:onnx]
