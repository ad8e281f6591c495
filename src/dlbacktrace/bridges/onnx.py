"""ONNX models: load an ``.onnx`` file, convert it to PyTorch with onnx2torch, explain it.

The converted model is an ``fx.GraphModule`` of ordinary torch ops, so it is captured and
explained by the same engine and rules as any PyTorch model. Problems are reported in ONNX
terms: a file that is not a valid ONNX model, an ONNX operator that onnx2torch cannot convert,
or one that converts to an ATen op without a relevance rule — each names the ONNX operator
and node. ``outputs=`` prunes the graph to the outputs you explain, which drops label branches
(``ArgMax``, ``ai.onnx.ml`` ops) that exporters such as skl2onnx add and that carry no relevance.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlbacktrace.bridges.base import Bridge, BridgedBacktrace
from dlbacktrace.engine.errors import CaptureError, InputError, UnsupportedOperationError
from dlbacktrace.engine.explanation import Explanation

OnnxSource = str | Path | Any  # a path or an onnx.ModelProto

_FALLBACK_OPSET = 17  # the newest opset onnx2torch converts (nearly) every operator of


class OnnxModelError(InputError):
    """The file is missing, is not a valid ONNX model, or the requested outputs do not exist."""


class OnnxConversionError(CaptureError):
    """onnx2torch failed to convert the model for a reason other than a missing operator."""


class UnsupportedOnnxOperatorError(UnsupportedOperationError):
    """An ONNX operator cannot be explained: no onnx2torch converter, or no relevance rule.

    Parameters
    ----------
    message
        The error message.
    operators
        The ONNX operator types concerned (kept as ``operators``; may be empty).
    """

    def __init__(self, message: str, operators: Sequence[str]) -> None:
        super().__init__(message)
        self.operators = list(operators)


def _onnx() -> Any:
    try:
        import onnx
        import onnx2torch
    except ImportError as exc:
        raise ImportError(
            "dlbacktrace.bridges.onnx needs onnx and onnx2torch: pip install 'dlbacktrace[onnx]'"
        ) from exc
    return onnx, onnx2torch


def read_onnx(source: OnnxSource, outputs: Sequence[str] | None = None) -> Any:
    """The validated ``onnx.ModelProto``, pruned to ``outputs`` (ONNX output names) if given.

    Raises :class:`OnnxModelError` for a missing, corrupt or invalid model or unknown outputs.

    Parameters
    ----------
    source
        A path to an ``.onnx`` file or an ``onnx.ModelProto``.
    outputs
        ONNX output (or intermediate value) names to keep; the graph is cut to what computes
        them.
    """
    onnx, _ = _onnx()
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise OnnxModelError(f"ONNX file not found: {path}")
        try:
            model = onnx.load(str(path))
        except Exception as exc:  # protobuf raises DecodeError, RuntimeError, ...
            raise OnnxModelError(
                f"{path} is not a readable ONNX model (corrupt or not ONNX): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        where = str(path)
    elif isinstance(source, onnx.ModelProto):
        model, where = source, "the ONNX model"
    else:
        raise OnnxModelError(
            f"expected a path to an .onnx file or an onnx.ModelProto, got {type(source).__name__}"
        )
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise OnnxModelError(f"{where} is not a valid ONNX model: {exc}") from exc
    if not model.graph.node:
        raise OnnxModelError(f"{where} has an empty graph (corrupt or not an ONNX model)")
    if outputs is not None:
        model = _prune(onnx, model, list(outputs))
    return model


def _prune(onnx: Any, model: Any, outputs: list[str]) -> Any:
    known = [o.name for o in model.graph.output]
    values = set(known) | {v for n in model.graph.node for v in n.output}
    missing = [o for o in outputs if o not in values]
    if missing or not outputs:
        raise OnnxModelError(f"outputs {missing or outputs} not in the model (outputs: {known})")
    init = {i.name for i in model.graph.initializer}
    inputs = [i.name for i in model.graph.input if i.name not in init]
    try:  # shape inference names the intermediate values, so they can be outputs too
        inferred = onnx.shape_inference.infer_shapes(model)
        return onnx.utils.Extractor(inferred).extract_model(inputs, outputs)
    except Exception as exc:
        raise OnnxModelError(f"could not prune the model to outputs {outputs}: {exc}") from exc


def _unconvertible(model: Any) -> list[str]:
    """ONNX nodes with no onnx2torch converter, as "op_type (domain, node 'name')"."""
    from onnx2torch.node_converters import get_converter

    opsets = {o.domain: o.version for o in model.opset_import}
    found = []
    for node in model.graph.node:
        domain = node.domain if node.domain != "ai.onnx" else ""
        version = opsets.get(node.domain, opsets.get("", 1))
        try:
            get_converter(domain=domain, operation_type=node.op_type, version=version)
        except NotImplementedError:
            found.append(_describe(node, version))
    return found


def _try_older_opset(onnx: Any, model: Any, missing: list[str]) -> tuple[Any, list[str]]:
    """onnx2torch lags behind new opsets (Cast 21, AveragePool 19): try the model at opset 17.

    ONNX's own version converter rewrites the graph; it is used only if it removes every
    missing converter, otherwise the original model and its missing operators are reported.
    """
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or opset <= _FALLBACK_OPSET:
        return model, missing
    try:
        older = onnx.version_converter.convert_version(model, _FALLBACK_OPSET)
    except Exception:  # no down-conversion adapter for some operator: report the original
        return model, missing
    still = _unconvertible(older)
    return (older, still) if not still else (model, missing)


def _describe(node: Any, opset: int | None = None) -> str:
    domain = f"domain '{node.domain}', " if node.domain not in ("", "ai.onnx") else ""
    version = f"opset {opset}, " if opset is not None else ""
    return f"{node.op_type} ({domain}{version}node '{node.name}')"


def load_onnx(source: OnnxSource, outputs: Sequence[str] | None = None) -> torch.nn.Module:
    """Convert an ONNX model (path or ModelProto) into a ``torch.fx.GraphModule``.

    Raises :class:`UnsupportedOnnxOperatorError` listing every ONNX operator onnx2torch cannot
    convert, and :class:`OnnxModelError` for missing or corrupt files.

    Parameters
    ----------
    source
        A path to an ``.onnx`` file or an ``onnx.ModelProto``.
    outputs
        ONNX output names to keep (the graph is pruned to them first).

    Returns
    -------
    The converted module, in eval mode.
    """
    return _convert(read_onnx(source, outputs))


def _convert(model: Any) -> torch.nn.Module:
    onnx, onnx2torch = _onnx()
    missing = _unconvertible(model)
    if missing:
        model, missing = _try_older_opset(onnx, model, missing)
    if missing:
        raise UnsupportedOnnxOperatorError(
            "onnx2torch has no converter for the ONNX operator(s): " + "; ".join(missing)
            + ". If they only compute outputs you do not explain (labels, post-processing), "
            "pass outputs=[names of the outputs to keep]; otherwise export the model without "
            "them (the model was also tried at opset 17, the newest onnx2torch covers well).",
            operators=[m.split(" ", 1)[0] for m in missing],
        )
    try:
        module = onnx2torch.convert(model)
    except NotImplementedError as exc:  # a converter rejected an attribute combination
        raise UnsupportedOnnxOperatorError(
            f"onnx2torch cannot convert this ONNX model: {exc}", operators=[]
        ) from exc
    except Exception as exc:
        raise OnnxConversionError(
            f"onnx2torch failed to convert the model: {type(exc).__name__}: {exc}"
        ) from exc
    return module.eval()


def _node_by_name(model: Any, name: str) -> str | None:
    for node in model.graph.node:
        if node.name == name:
            return _describe(node)
    return None


def _io_spec(model: Any) -> dict[str, list]:
    from onnx.helper import tensor_dtype_to_np_dtype

    init = {i.name for i in model.graph.initializer}
    ins = []
    for value in model.graph.input:
        if value.name in init:
            continue
        t = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        ins.append((value.name, tensor_dtype_to_np_dtype(t.elem_type), dims))
    return {"inputs": ins, "outputs": [o.name for o in model.graph.output]}


def _shape_fits(dims: list, shape: tuple) -> bool:
    """Declared ONNX dims (None/0 = dynamic) against an actual shape; no dims = unknown."""
    if not dims:
        return True
    return len(dims) == len(shape) and all(d in (None, 0) or d == s for d, s in zip(
        dims, shape, strict=True))


class OnnxBridge(Bridge):
    """An ONNX graph converted by onnx2torch; inputs in graph order or a dict by input name.

    Parameters
    ----------
    proto
        A validated ``onnx.ModelProto`` (see :func:`read_onnx`).
    """

    def __init__(self, proto: Any) -> None:
        self.module = _convert(proto)
        spec = _io_spec(proto)
        self.input_spec: list[tuple[str, Any, list]] = spec["inputs"]
        self.output_names: list[str] = spec["outputs"]
        self.input_names = [name for name, _, _ in self.input_spec]
        # submodule name -> ONNX node, to name the operator when a rule is missing
        self._nodes = {name: _node_by_name(proto, name) for name, _ in self.module.named_children()}

    def adapt(self, inputs: tuple[Any, ...]) -> tuple[torch.Tensor, ...]:
        """NumPy inputs are cast to the dtype the graph declares; shapes are checked.

        Parameters
        ----------
        inputs
            One array/tensor per graph input in graph order, or a single dict by ONNX input
            name (every input must be given).
        """
        spec = self.input_spec
        if len(inputs) == 1 and isinstance(inputs[0], dict):
            given = inputs[0]
            unknown = set(given) - set(self.input_names)
            if unknown:
                raise InputError(f"unknown ONNX inputs {sorted(unknown)}; the model has "
                                 f"{self.input_names}")
            inputs = tuple(given.get(name) for name in self.input_names)
        if len(inputs) != len(spec) or any(x is None for x in inputs):
            raise InputError(f"the ONNX model takes {len(spec)} input(s) "
                             f"{self.input_names}, got {len(inputs)}")
        out = []
        for x, (name, np_dtype, dims) in zip(inputs, spec, strict=True):
            dtype = torch.from_numpy(np.zeros(0, np_dtype)).dtype
            t = x.to(dtype) if isinstance(x, torch.Tensor) else torch.as_tensor(
                np.asarray(x, dtype=np_dtype))
            if not _shape_fits(dims, tuple(t.shape)):
                shown = ["?" if d in (None, 0) else d for d in dims]
                raise InputError(f"ONNX input {name!r} expects shape {shown}, got "
                                 f"{tuple(t.shape)}")
            out.append(t)
        return tuple(out)

    def translate(self, exc: UnsupportedOperationError) -> UnsupportedOnnxOperatorError:
        """Name the ONNX operator behind the ATen op that has no rule.

        Parameters
        ----------
        exc
            The engine's error; the converted submodule it names is mapped to its ONNX node.
        """
        text = str(exc)
        match = re.search(r"in module '([^']+)'", text)
        node = self._nodes.get(match.group(1)) if match else None
        if node is None:
            return UnsupportedOnnxOperatorError(text, operators=[])
        return UnsupportedOnnxOperatorError(
            f"ONNX operator {node} has no relevance rule in dlbacktrace:\n{text}",
            operators=[node.split(" ", 1)[0]],
        )


class OnnxBacktrace(BridgedBacktrace):
    """Explain an ONNX model: converted once, captured once per input signature, reused.

    Inputs are NumPy arrays or tensors in the ONNX graph's input order (or a dict by ONNX input
    name); NumPy inputs are cast to the dtype the graph declares. The explanation's inputs
    carry the ONNX input names.

    Parameters
    ----------
    source
        A path to an ``.onnx`` file or a ``ModelProto``.
    outputs
        ONNX output names to keep (the graph is pruned to them first).
    mode
        ``"default"`` or ``"contrast"``.
    **backtrace_kwargs
        Further :class:`~dlbacktrace.Backtrace` options.
    """

    def __init__(self, source: OnnxSource, outputs: Sequence[str] | None = None,
                 mode: str = "default", **backtrace_kwargs: Any) -> None:
        bridge = OnnxBridge(read_onnx(source, outputs))
        super().__init__(bridge, mode=mode, **backtrace_kwargs)
        self.input_spec = bridge.input_spec
        self.output_names = bridge.output_names

    def _output_index(self, output: str | int | None) -> int | None:
        if isinstance(output, str):
            if output not in self.output_names:
                raise InputError(f"output {output!r} not in {self.output_names}")
            return self.output_names.index(output)
        return output

    def explain(self, *inputs: Any, output: str | int | None = None, **kwargs: Any
                ) -> Explanation:
        """Explain one output.

        Parameters
        ----------
        *inputs
            Arrays/tensors in graph input order, or one dict by ONNX input name.
        output
            An ONNX output name or index (default: the first).
        **kwargs
            Keywords of ``Backtrace.explain`` (``target``, ``seed``, ``scale``, ...).
        """
        index = self._output_index(output)
        if len(self.output_names) == 1:
            index = None  # the converted module returns a bare tensor
        return super().explain(*inputs, output=index, **kwargs)


def explain_onnx(source: OnnxSource, *inputs: Any, outputs: Sequence[str] | None = None,
                 output: str | int | None = None, mode: str = "default", **kwargs: Any
                 ) -> Explanation:
    """One-shot: convert the ONNX model and explain ``output`` for ``inputs``.

    Parameters
    ----------
    source
        A path to an ``.onnx`` file or an ``onnx.ModelProto``.
    *inputs
        Arrays/tensors in graph input order, or one dict by ONNX input name.
    outputs
        ONNX output names to keep (the graph is pruned to them first).
    output
        The ONNX output name or index explained (default: the first).
    mode
        ``"default"`` or ``"contrast"``.
    **kwargs
        Keywords of ``Backtrace.explain`` (``target``, ``seed``, ``scale``, ...).
    """
    return OnnxBacktrace(source, outputs=outputs, mode=mode).explain(
        *inputs, output=output, **kwargs)
