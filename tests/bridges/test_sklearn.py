"""scikit-learn MLPs: the rebuilt torch module reproduces sklearn, and the direct route and the
ONNX route (skl2onnx → onnx2torch) give the same relevance on real bundled data."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from dlbacktrace import Backtrace, InputError

sk_datasets = pytest.importorskip("sklearn.datasets")
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier, MLPRegressor  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

from dlbacktrace.bridges.sklearn import explain_mlp, mlp_backtrace, mlp_to_torch  # noqa: E402


def _fit(est, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(X, y)


def _clf(hidden: tuple[int, ...], random_state: int = 0, **kw) -> MLPClassifier:
    return MLPClassifier(hidden_layer_sizes=hidden, random_state=random_state, **kw)


@pytest.fixture(scope="module")
def cancer():
    X, y = sk_datasets.load_breast_cancer(return_X_y=True)
    scaler = StandardScaler().fit(X[:400])
    Xs = scaler.transform(X)
    clf = _fit(_clf((16, 8), max_iter=200), Xs[:400], y[:400])
    return X, Xs, y, scaler, clf


def _close(a, b, tol=1e-5):
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    scale = max(float(b.abs().max()), 1e-12)
    assert float((a - b).abs().max()) <= tol * scale, float((a - b).abs().max()) / scale


def _per_unit(exp):
    """Relevance per unit of the explained value: contrast mode explains ``seed ⊙ output``, so
    maps of two outputs that differ by a monotone per-row factor (a logit and its probability)
    agree after dividing by the explained value; default-mode maps are returned as they are."""
    if exp.mode != "contrast":
        return exp.relevance
    return exp.relevance / exp.seed.reshape(exp.seed.shape[0], -1).sum(1, keepdim=True)


def test_breast_cancer_predictions_equal_sklearn(cancer):
    X, Xs, y, _, clf = cancer
    assert clf.score(Xs[400:], y[400:]) > 0.9  # a real, trained model
    module = mlp_to_torch(clf)
    assert next(module.parameters()).dtype == torch.float64
    with torch.no_grad():
        logit = module(torch.from_numpy(Xs)).squeeze(1)
    np.testing.assert_allclose(torch.sigmoid(logit).numpy(), clf.predict_proba(Xs)[:, 1],
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal((logit > 0).numpy().astype(int), clf.predict(Xs))


class _MatmulAdd(torch.nn.Module):
    """The MLP written as skl2onnx writes it: ``x @ W`` and ``+ b`` as two ops, logits out."""

    def __init__(self, clf) -> None:
        super().__init__()
        self.coefs = [torch.as_tensor(c, dtype=torch.float32) for c in clf.coefs_]
        self.intercepts = [torch.as_tensor(b, dtype=torch.float32) for b in clf.intercepts_]
        self.act = {"relu": torch.relu, "tanh": torch.tanh}[clf.activation]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, (w, b) in enumerate(zip(self.coefs, self.intercepts, strict=True)):
            x = torch.matmul(x, w) + b
            if i < len(self.coefs) - 1:
                x = self.act(x)
        return x


def _onnx_route(clf, rows, logits: bool = False):
    """skl2onnx export, explained through onnx2torch.

    skl2onnx adds a label branch (ArgMax, ai.onnx.ml ArrayFeatureExtractor): ``outputs=``
    prunes it away. It writes opset 21, which the loader converts to opset 17 for onnx2torch.
    ``logits=True`` explains the input of the final Sigmoid (an intermediate ONNX value).
    """
    pytest.importorskip("onnx2torch")
    skl2onnx = pytest.importorskip("skl2onnx")
    from dlbacktrace.bridges.onnx import OnnxBacktrace

    onx = skl2onnx.to_onnx(clf, rows[:1], options={id(clf): {"zipmap": False}})
    out = "probabilities"
    if logits:
        out = next(n.input[0] for n in onx.graph.node if n.op_type == "Sigmoid")
    return OnnxBacktrace(onx, outputs=[out])


def test_breast_cancer_onnx_route(cancer):
    _, Xs, _, _, clf = cancer
    rows = Xs[400:420].astype(np.float32)
    ob = _onnx_route(clf, rows)
    probs = ob.predict(rows).numpy()
    np.testing.assert_allclose(probs, clf.predict_proba(rows), rtol=1e-4, atol=1e-6)
    same_ops = Backtrace(_MatmulAdd(clf))
    logit_route = _onnx_route(clf, rows, logits=True)
    for mode in ("default", "contrast"):
        # class 1 is the single logit; in ONNX, column 1 = sigmoid(logit), column 0 = 1 − that
        ref = same_ops.explain(torch.from_numpy(rows), target="positive", mode=mode)
        via_logit = logit_route.explain(rows, mode=mode)
        _close(via_logit.relevance, ref.relevance)
        ref_unit = _per_unit(ref)
        via_prob = ob.explain(rows, target=1, mode=mode)
        assert via_prob.relevance.shape == rows.shape
        assert via_prob.conservation_error < 1e-5
        # explaining the probability differs only on rows whose logit saturates the sigmoid
        # (|logit| > 4: relevance goes to one side only, DESIGN 2.1)
        logit = same_ops.model(torch.from_numpy(rows)).detach().squeeze(1)
        calm = logit.abs() < 4
        assert 0 < int(calm.sum()) < len(rows)
        prob_unit = _per_unit(via_prob)
        _close(prob_unit[calm], ref_unit[calm])
        assert not torch.allclose(prob_unit[~calm], ref_unit[~calm], atol=1e-4)


@pytest.mark.parametrize("mode", ["default", "contrast"])
def test_breast_cancer_direct_equals_onnx_route(cancer, mode):
    _, Xs, _, _, clf = cancer
    rows = Xs[400:420].astype(np.float32)
    via_onnx = _onnx_route(clf, rows, logits=True).explain(rows, mode=mode)
    direct = explain_mlp(clf, rows, target="positive", mode=mode, dtype=torch.float32)
    _close(via_onnx.relevance, direct.relevance)


def test_direct_route_float64_and_float32(cancer):
    _, Xs, _, _, clf = cancer
    d64 = explain_mlp(clf, Xs[400:420])
    assert d64.relevance.dtype == torch.float64 and d64.conservation_error < 1e-12
    d32 = explain_mlp(clf, Xs[400:420].astype(np.float32), dtype=torch.float32)
    assert d32.relevance.dtype == torch.float32 and d32.conservation_error < 1e-5
    _close(d32.relevance, d64.relevance, tol=1e-4)


def test_multiclass_onnx_route_softmax():
    X, y = sk_datasets.load_wine(return_X_y=True)
    Xs = StandardScaler().fit_transform(X).astype(np.float32)
    clf = _fit(_clf((12,), activation="tanh", max_iter=300), Xs, y)
    rows = Xs[::20]
    ob = _onnx_route(clf, rows)
    ref = Backtrace(_MatmulAdd(clf)).explain(torch.from_numpy(rows), mode="contrast")
    via = ob.explain(rows, mode="contrast")  # softmax passes relevance on unchanged
    np.testing.assert_array_equal(via.target.numpy(), clf.predict(rows))
    # the probability route explains p, the logit route the logit: equal per explained unit
    _close(_per_unit(via), _per_unit(ref))


@pytest.mark.parametrize("activation", ["relu", "tanh", "logistic", "identity"])
def test_activations_predictions_and_conservation(activation):
    X, y = sk_datasets.load_iris(return_X_y=True)
    clf = _fit(_clf((7, 5), activation=activation, max_iter=150, random_state=1), X, y)
    module = mlp_to_torch(clf)
    with torch.no_grad():
        probs = torch.softmax(module(torch.from_numpy(X)), dim=1).numpy()
    np.testing.assert_allclose(probs, clf.predict_proba(X), rtol=1e-10, atol=1e-12)
    exp = explain_mlp(clf, X[:10], target=2)
    assert exp.conservation_error < 1e-12
    assert bool((exp.relevance >= 0).all())
    contrast = explain_mlp(clf, X[:10], target=2, mode="contrast")
    assert contrast.conservation_error < 1e-12
    assert torch.equal(contrast.positive - contrast.negative, contrast.relevance)


def test_regressor_on_diabetes_and_hand_computed_value():
    X, y = sk_datasets.load_diabetes(return_X_y=True)
    reg = _fit(MLPRegressor(hidden_layer_sizes=(10,), max_iter=100, random_state=0), X, y)
    with torch.no_grad():
        pred = mlp_to_torch(reg)(torch.from_numpy(X)).squeeze(1).numpy()
    np.testing.assert_allclose(pred, reg.predict(X), rtol=1e-12)
    assert explain_mlp(reg, X[:5]).conservation_error < 1e-12

    # identity activation, hand-set weights: h = W1 x + b1, out = w2·h + b2
    tiny = MLPRegressor(hidden_layer_sizes=(2,), activation="identity", max_iter=5)
    tiny = _fit(tiny, np.ones((4, 2)), np.ones(4))
    tiny.coefs_ = [np.array([[1.0, 0.0], [0.0, 2.0]]), np.array([[1.0], [1.0]])]
    tiny.intercepts_ = [np.array([0.0, 0.0]), np.array([1.0])]
    exp = explain_mlp(tiny, [[3.0, -1.0]])
    # out = 3 + (−2) + 1: shares |3|/6, |−2|/6, bias 1/6; the hidden layer passes them on
    _close(exp.relevance, torch.tensor([[0.5, 1.0 / 3.0]], dtype=torch.float64), tol=1e-12)
    assert exp.total_absorbed == pytest.approx(1.0 / 6.0, abs=1e-12)


def test_pipeline_with_scaler_explains_raw_features(cancer):
    X, Xs, y, _, _ = cancer
    pipe = _fit(make_pipeline(StandardScaler(), _clf((16,), max_iter=150)), X[:400], y[:400])
    module = mlp_to_torch(pipe)
    with torch.no_grad():
        p = torch.sigmoid(module(torch.from_numpy(X[400:]))).squeeze(1).numpy()
    np.testing.assert_allclose(p, pipe.predict_proba(X[400:])[:, 1], rtol=1e-10, atol=1e-12)
    bt = mlp_backtrace(pipe)
    exp = bt.explain(torch.from_numpy(X[400:410]))
    assert exp.relevance.shape == (10, 30) and exp.conservation_error < 1e-12
    again = bt.explain(torch.from_numpy(X[400:410]))
    assert torch.equal(again.relevance, exp.relevance)
    # the scaler's mean shift takes a share of the relevance (absorbed, like a bias)
    assert exp.total_absorbed > 0


def test_bad_inputs(cancer):
    X, Xs, _, _, clf = cancer
    with pytest.raises(InputError, match="not fitted"):
        mlp_to_torch(MLPClassifier())
    with pytest.raises(InputError, match="MLPClassifier or MLPRegressor"):
        mlp_to_torch(StandardScaler().fit(X))
    from sklearn.decomposition import PCA

    with pytest.raises(InputError, match="only StandardScaler"):
        mlp_to_torch(make_pipeline(PCA(2), clf))
    with pytest.raises(InputError, match="30 features"):
        explain_mlp(clf, Xs[:3, :10])
    with pytest.raises(InputError, match="numeric"):
        explain_mlp(clf, [["a"] * 30])
    with pytest.raises(InputError, match="NaN"):
        explain_mlp(clf, np.full((1, 30), np.nan))
