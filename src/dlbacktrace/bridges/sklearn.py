"""scikit-learn neural models (``MLPClassifier`` / ``MLPRegressor``) as exact torch modules.

A fitted MLP is a chain of affine layers and one elementwise activation, so it is rebuilt as an
``nn.Sequential`` of ``nn.Linear`` layers holding the estimator's own weights, and explained with
the same engine as any PyTorch model. The output activation (softmax for multi-class, logistic
for binary / multi-label, identity for regression) is left out: what is explained is the
**logits** (pre-softmax / pre-logistic values), the quantity the classes are decided on.
A ``Pipeline`` of ``StandardScaler`` steps followed by the MLP is rebuilt with the scaling as a
first affine layer, so relevance lands on the raw (unscaled) features.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from dlbacktrace.bridges.base import Bridge, BridgedBacktrace
from dlbacktrace.engine.errors import InputError
from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.engine.targets import Target

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "logistic": nn.Sigmoid,
    "identity": nn.Identity,
}


def _sklearn() -> Any:
    try:
        import sklearn.neural_network as nn_mod
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "dlbacktrace.bridges.sklearn needs scikit-learn: pip install 'dlbacktrace[onnx]' "
            "(or pip install scikit-learn)"
        ) from exc
    return nn_mod


class _Standardize(nn.Module):
    """``(x − mean) / scale`` as in ``StandardScaler.transform`` (an affine op for the engine)."""

    def __init__(self, mean: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("scale", scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.scale


def _split_pipeline(estimator: Any) -> tuple[list[Any], Any]:
    """(scalers in order, final MLP) for a bare MLP or a Pipeline of StandardScalers + MLP."""
    steps = getattr(estimator, "steps", None)
    if steps is None:
        return [], estimator
    from sklearn.preprocessing import StandardScaler

    *pre, (_, final) = steps
    scalers = []
    for name, step in pre:
        if step is None or step == "passthrough":
            continue
        if not isinstance(step, StandardScaler):
            raise InputError(
                f"pipeline step {name!r} is a {type(step).__name__}; only StandardScaler steps "
                "before the MLP are supported (explain the MLP on transformed features instead)"
            )
        scalers.append(step)
    return scalers, final


def mlp_to_torch(estimator: Any, dtype: torch.dtype | None = None) -> nn.Sequential:
    """An ``nn.Sequential`` that computes the fitted MLP's logits with its exact weights.

    Parameters
    ----------
    estimator
        A fitted ``MLPClassifier``/``MLPRegressor`` or a ``Pipeline`` of ``StandardScaler``
        steps ending in one.
    dtype
        The module's dtype; defaults to the dtype of the fitted weights (float64 unless the
        model was fitted on float32 data).
    """
    nn_mod = _sklearn()
    scalers, mlp = _split_pipeline(estimator)
    if not isinstance(mlp, (nn_mod.MLPClassifier, nn_mod.MLPRegressor)):
        raise InputError(
            f"expected an MLPClassifier or MLPRegressor (or a Pipeline ending in one), got "
            f"{type(mlp).__name__}"
        )
    if not hasattr(mlp, "coefs_"):
        raise InputError(f"this {type(mlp).__name__} is not fitted yet; call fit() first")
    if mlp.activation not in _ACTIVATIONS:
        raise InputError(f"unsupported hidden activation {mlp.activation!r}")
    if dtype is None:
        dtype = torch.float32 if mlp.coefs_[0].dtype == np.float32 else torch.float64
    layers: list[nn.Module] = []
    for scaler in scalers:
        mean = scaler.mean_ if scaler.with_mean else np.zeros(scaler.n_features_in_)
        scale = scaler.scale_ if scaler.with_std else np.ones(scaler.n_features_in_)
        layers.append(_Standardize(torch.as_tensor(mean, dtype=dtype),
                                   torch.as_tensor(scale, dtype=dtype)))
    n_layers = len(mlp.coefs_)
    for i, (coef, intercept) in enumerate(zip(mlp.coefs_, mlp.intercepts_, strict=True)):
        linear = nn.Linear(coef.shape[0], coef.shape[1], dtype=dtype)
        with torch.no_grad():
            linear.weight.copy_(torch.as_tensor(coef.T, dtype=dtype))
            linear.bias.copy_(torch.as_tensor(intercept, dtype=dtype))
        layers.append(linear)
        if i < n_layers - 1:
            layers.append(_ACTIVATIONS[mlp.activation]())
    return nn.Sequential(*layers).eval()


def _as_input(X: Any, n_features: int, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        x = X.to(dtype)
    else:
        try:
            x = torch.as_tensor(np.asarray(X, dtype=np.float64), dtype=dtype)
        except (TypeError, ValueError) as exc:
            raise InputError(f"X must be numeric (rows × {n_features} features): {exc}") from exc
    if x.dim() == 1:
        x = x.unsqueeze(0)
    if x.dim() != 2 or x.shape[1] != n_features:
        raise InputError(
            f"X has shape {tuple(x.shape)}, but the model was fitted on {n_features} features"
        )
    return x


class SklearnBridge(Bridge):
    """A fitted MLP (or scaler Pipeline + MLP) as :func:`mlp_to_torch`; rows as arrays,
    DataFrames or tensors.

    Parameters
    ----------
    estimator
        A fitted ``MLPClassifier``/``MLPRegressor`` or a Pipeline of scalers and one.
    dtype
        The module's dtype (default: that of the fitted weights).
    """

    def __init__(self, estimator: Any, dtype: torch.dtype | None = None) -> None:
        self.module = mlp_to_torch(estimator, dtype)
        first = next(m for m in self.module if isinstance(m, nn.Linear))
        self.n_features = first.in_features
        self.dtype = first.weight.dtype

    def adapt(self, inputs: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
        """One argument ``X``: rows × features (a single row is promoted to a batch of one).

        Parameters
        ----------
        inputs
            ``(X,)``: an array, DataFrame or tensor, cast to the module's dtype.
        """
        if len(inputs) != 1:
            raise InputError(f"a scikit-learn MLP takes one input X, got {len(inputs)}")
        return (_as_input(inputs[0], self.n_features, self.dtype),)


def mlp_backtrace(estimator: Any, mode: str = "default", dtype: torch.dtype | None = None,
                  **kwargs: Any) -> BridgedBacktrace:
    """A reusable explainer over :func:`mlp_to_torch` (captures once per input shape).

    Parameters
    ----------
    estimator
        A fitted ``MLPClassifier``/``MLPRegressor`` or a Pipeline of scalers and one.
    mode
        ``"default"`` or ``"contrast"``.
    dtype
        The module's dtype (default: that of the fitted weights, float64 unless the model
        was fitted on float32 data).
    **kwargs
        Further :class:`~dlbacktrace.Backtrace` options.
    """
    return BridgedBacktrace(SklearnBridge(estimator, dtype), mode=mode, **kwargs)


def explain_mlp(
    estimator: Any,
    X: Any,
    target: Target = None,
    mode: str = "default",
    dtype: torch.dtype | None = None,
    **kwargs: Any,
) -> Explanation:
    """Explain a fitted scikit-learn MLP on rows ``X`` (array, DataFrame or tensor).

    The relevance is for the logits and is shaped like ``X`` (rows × features).

    Parameters
    ----------
    estimator
        A fitted ``MLPClassifier``/``MLPRegressor`` or a Pipeline of scalers and one.
    X
        Rows × features (a single row is promoted to a batch of one).
    target
        Indexes ``estimator.classes_`` for multi-class models (None: the predicted class); a
        binary classifier has one logit (``"positive"`` explains ``classes_[1]``,
        ``"negative"`` ``classes_[0]``); for a regressor it is the output unit.
    mode
        ``"default"`` or ``"contrast"``.
    dtype
        The module's dtype (default: that of the fitted weights).
    **kwargs
        Further keywords of ``Backtrace.explain``.
    """
    return mlp_backtrace(estimator, mode=mode, dtype=dtype).explain(X, target=target, **kwargs)
