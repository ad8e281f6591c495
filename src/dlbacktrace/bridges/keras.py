"""Keras 3 models, explained by the same engine through Keras' torch backend.

Under ``KERAS_BACKEND=torch`` every Keras 3 layer and model *is* a ``torch.nn.Module``, so a
model loaded from a ``.keras`` file (backend-independent: it may have been trained with
TensorFlow or JAX) or a legacy ``.h5`` file is captured with ``torch.export`` like any PyTorch
model. The graph Keras produces (decomposed batch normalisation as sub/mul/rsqrt/add with
constants, ``matmul`` + bias ``add`` for Dense, layout permutes around convolutions, dtype
conversions) is handled by the engine's general rules; nothing here is Keras-specific math.

The backend must be chosen before Keras is imported: set ``KERAS_BACKEND=torch`` in the
environment (or ``"backend": "torch"`` in ``~/.keras/keras.json``). This module never changes
the environment itself; it raises :class:`KerasBackendError` when the backend is wrong.

Inputs are in Keras' layout (channels-last, NHWC for images) and relevance comes back in that
same layout, named after the model's inputs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlbacktrace.bridges.base import Bridge, BridgedBacktrace
from dlbacktrace.engine.errors import DLBacktraceError, InputError
from dlbacktrace.engine.explanation import Explanation

_FIX = (
    "Set the environment variable KERAS_BACKEND=torch before keras is imported (for example "
    "`KERAS_BACKEND=torch python ...`, or os.environ['KERAS_BACKEND'] = 'torch' at the very "
    "top of your program), then restart the Python process."
)


class KerasBackendError(DLBacktraceError):
    """Keras is (or would be) running on a backend other than torch."""


class KerasModelError(InputError):
    """The Keras model file is missing, corrupt, or not a Keras model."""


def _keras() -> Any:
    """The ``keras`` module, checked to run on the torch backend (imported lazily)."""
    if "keras" not in sys.modules:
        wanted = os.environ.get("KERAS_BACKEND")
        if wanted is not None and wanted != "torch":
            raise KerasBackendError(f"KERAS_BACKEND is {wanted!r}; dlbacktrace explains Keras "
                                    f"models through the torch backend. {_FIX}")
    try:
        import keras
    except ImportError as exc:
        if exc.name == "keras":
            raise ImportError(
                "dlbacktrace.bridges.keras needs Keras 3: pip install 'dlbacktrace[keras]'"
            ) from exc
        raise KerasBackendError(
            f"importing keras failed on its configured backend ({type(exc).__name__}: {exc}). "
            f"Keras defaults to the TensorFlow backend. {_FIX}"
        ) from exc
    backend = keras.backend.backend()
    if backend != "torch":
        raise KerasBackendError(f"keras is running on the {backend!r} backend, not 'torch'. {_FIX}")
    return keras


def load_keras(path: str | Path) -> Any:
    """Load a ``.keras`` file or a legacy ``.h5`` file (weights and architecture), uncompiled.

    Parameters
    ----------
    path
        A ``.keras``, ``.h5`` or ``.hdf5`` file; raises :class:`KerasModelError` if it is
        missing or cannot be loaded.
    """
    keras = _keras()
    path = Path(path)
    if not path.is_file():
        raise KerasModelError(f"Keras model file not found: {path}")
    if path.suffix.lower() not in (".keras", ".h5", ".hdf5"):
        raise KerasModelError(f"{path}: expected a .keras or legacy .h5/.hdf5 model file")
    try:
        return keras.models.load_model(str(path), compile=False)
    except Exception as exc:  # zip, h5py and deserialisation raise many types
        raise KerasModelError(
            f"could not load the Keras model {path} (corrupt, truncated, or not a saved Keras "
            f"model; custom layers need custom_objects): {type(exc).__name__}: {exc}"
        ) from exc


class KerasModule(torch.nn.Module):
    """A Keras model as a plain torch module: ``forward(*inputs)`` in ``model.inputs`` order.

    Parameters
    ----------
    model
        A ``keras.Model`` on the torch backend.
    """

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.n_inputs = len(_model_inputs(model)) or 1

    def forward(self, *inputs: torch.Tensor) -> Any:
        """The Keras model's output in inference mode (``training=False``).

        Parameters
        ----------
        *inputs
            One tensor per model input, in ``model.inputs`` order.
        """
        return self.model(inputs[0] if self.n_inputs == 1 else list(inputs), training=False)


def _model_inputs(model: Any) -> list[Any]:
    try:
        return list(model.inputs or [])
    except (AttributeError, ValueError):  # a Sequential model that was never built
        return []


class KerasBridge(Bridge):
    """A Keras 3 model as a torch module; inputs as an array, a list or a dict by input name.

    Parameters
    ----------
    model
        A ``keras.Model`` on the torch backend; its declared inputs give the names, shapes
        and dtypes the inputs are checked against.
    """

    def __init__(self, model: Any) -> None:
        self.model = model
        specs = _model_inputs(model)
        self.input_names = [_input_name(t, i) for i, t in enumerate(specs)] or ["input"]
        self.input_shapes = [tuple(t.shape) for t in specs] or [None]
        self.input_dtypes = [str(t.dtype) for t in specs] or ["float32"]
        self.module = KerasModule(model)

    def _device(self) -> torch.device:
        for weight in self.model.weights:
            return weight.value.device
        return torch.device("cpu")

    def adapt(self, inputs: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
        """One argument: an array/tensor, a list in ``model.inputs`` order, or a dict by name.

        Parameters
        ----------
        inputs
            What the user passed; values are converted to the declared dtype, moved to the
            weights' device and checked against the declared shapes (channels-last images).
        """
        names = self.input_names
        inputs = inputs[0] if len(inputs) == 1 else list(inputs)
        n = len(names)
        if isinstance(inputs, Mapping):
            unknown = set(inputs) - set(names)
            if unknown or len(inputs) != n:
                raise InputError(f"inputs by name must be exactly {names}, got "
                                 f"{sorted(inputs)}")
            values = [inputs[name] for name in names]
        elif isinstance(inputs, (list, tuple)) and n > 1:
            values = list(inputs)
        else:
            values = [inputs]
        if len(values) != n:
            raise InputError(f"the model takes {n} inputs {names}, got {len(values)}")
        device = self._device()
        return tuple(
            _input_tensor(value, name, shape, dtype, device)
            for value, name, shape, dtype in zip(values, names, self.input_shapes,
                                                 self.input_dtypes, strict=True)
        )


def _input_tensor(value: Any, name: str, shape: tuple | None, dtype: str,
                  device: torch.device) -> torch.Tensor:
    tdtype = getattr(torch, dtype, torch.float32)
    if isinstance(value, torch.Tensor):
        t = value.to(device=device, dtype=tdtype)
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=dtype), device=device)
        except (TypeError, ValueError) as exc:
            raise InputError(f"input {name!r} is not numeric: {exc}") from exc
    if shape is not None and (len(shape) != t.dim() or any(
            d is not None and d != s for d, s in zip(shape, t.shape, strict=True))):
        raise InputError(
            f"input {name!r} has shape {tuple(t.shape)}; the model expects {shape} "
            "(None = any size). Keras models take channels-last (NHWC) images."
        )
    return t


class KerasBacktrace(BridgedBacktrace):
    """Explain a Keras 3 model; captured once per input signature and reused across calls.

    The captured graph reads the Keras variables on every call, so later weight updates
    (``variable.assign``) are seen without recapturing.

    Parameters
    ----------
    model_or_path
        A ``keras.Model`` or a path to a ``.keras`` / legacy ``.h5`` file.
    mode
        ``"default"`` or ``"contrast"``.
    **backtrace_kwargs
        Further :class:`~dlbacktrace.Backtrace` options.
    """

    def __init__(self, model_or_path: Any, mode: str = "default",
                 **backtrace_kwargs: Any) -> None:
        keras = _keras()
        if isinstance(model_or_path, (str, Path)):
            model = load_keras(model_or_path)
        elif isinstance(model_or_path, keras.Model):
            model = model_or_path
        else:
            raise InputError(
                f"expected a keras.Model or a path to a .keras/.h5 file, got "
                f"{type(model_or_path).__name__}"
            )
        bridge = KerasBridge(model)
        super().__init__(bridge, mode=mode, **backtrace_kwargs)
        self.model = model
        self.input_shapes = bridge.input_shapes
        self.input_dtypes = bridge.input_dtypes

    def predict(self, inputs: Any) -> Any:
        """The torch module's output (the same numbers as ``model.predict``).

        Parameters
        ----------
        inputs
            An array/tensor, a list in ``model.inputs`` order, or a dict by input name.
        """
        return super().predict(inputs)

    def explain(self, inputs: Any, **kwargs: Any) -> Explanation:
        """Explain the model for ``inputs``.

        Parameters
        ----------
        inputs
            An array/tensor, a list in ``model.inputs`` order, or a dict by input name.
        **kwargs
            Keywords of ``Backtrace.explain`` (``target``, ``mode``, ``seed``, ``output``, ...).
            Relevance has each input's (channels-last) shape.
        """
        return super().explain(inputs, **kwargs)


def _input_name(tensor: Any, index: int) -> str:
    name = getattr(tensor, "name", None) or f"input{index}"
    return name.split(":")[0]


def explain_keras(model_or_path: Any, inputs: Any, mode: str = "default",
                  **kwargs: Any) -> Explanation:
    """One-shot: load (if a path) and explain a Keras 3 model; see :class:`KerasBacktrace`.

    Parameters
    ----------
    model_or_path
        A ``keras.Model`` or a path to a ``.keras`` / legacy ``.h5`` file.
    inputs
        An array/tensor, a list in ``model.inputs`` order, or a dict by input name.
    mode
        ``"default"`` or ``"contrast"``.
    **kwargs
        Keywords of ``Backtrace.explain`` (``target``, ``seed``, ``output``, ...).
    """
    return KerasBacktrace(model_or_path, mode=mode).explain(inputs, **kwargs)


__all__: Sequence[str] = [
    "KerasBackendError", "KerasBacktrace", "KerasBridge", "KerasModelError", "KerasModule",
    "explain_keras",
    "load_keras",
]
