"""``Backtrace``: the public entry point that ties capture, record, seed and sweep together."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.fx as fx
import torch.utils._pytree as pytree

from dlbacktrace.engine import capture as capture_mod
from dlbacktrace.engine import capture_cache
from dlbacktrace.engine.capture import CapturedGraph
from dlbacktrace.engine.errors import (
    ConservationError,
    InputError,
    RuleError,
    TargetError,
    UnsupportedOperationError,
)
from dlbacktrace.engine.explanation import Explanation
from dlbacktrace.engine.record import needed_values, needs_upcast, record
from dlbacktrace.engine.rules.base import AbsCache, RuleOptions, default_epsilon
from dlbacktrace.engine.state import inference_state
from dlbacktrace.engine.sweep import sweep
from dlbacktrace.engine.targets import Target, make_seed

logger = logging.getLogger(__name__)

MODES = ("default", "contrast")
ATTENTION = ("value", "split")
# The attention rule each mode uses unless told otherwise (DESIGN.md 2.2: contrast splits, the
# measured winner; default mode keeps relevance on the values).
DEFAULT_ATTENTION = {"default": "value", "contrast": "split"}
NORM_RULES = ("centre", "identity")
# How each mode explains layer/group norm unless told otherwise (DESIGN.md 2.3): contrast mode
# needs the centring (signed shares explode without it); in default mode identity measured as
# good or better on the MiniLM text task (benchmarks/rule_choice.py).
DEFAULT_NORM = {"default": "identity", "contrast": "centre"}
# The rule set this library computes; audit records carry it (a change of rules means a
# recorded explanation cannot re-verify bit for bit). 3: a linear node's few saturated outputs
# are corrected at their sites (same rule, float32 rounding differs where it applies). 4:
# ``rsub(gate, 1)`` (``1 - torch.sigmoid(x)``) is a gate, as ``sub(1, gate)`` was.
RULE_SET = "4"


@contextlib.contextmanager
def _buffers_restored(model: torch.nn.Module) -> Iterator[None]:
    """Buffers a forward updates in place (running statistics, counters) are put back."""
    saved = [(b, b.detach().clone()) for b in model.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in saved:
                if not torch.equal(buffer, value):
                    buffer.copy_(value)


def _as_tensor(value: Any) -> Any:
    return torch.from_numpy(value) if isinstance(value, np.ndarray) else value


def _fresh(value: Any, node: fx.Node, sizes: dict) -> Any:
    """A float input copied into a new, aligned buffer with the strides it was exported with.

    BLAS kernels may choose a different summation order for unaligned data (slices, mmap'ed
    files), which would break bit-identical reruns on equal values; and the exported graph may
    rely on the capture-time strides (a ``view`` after a permute of a channels-last tensor).
    ``sizes``: the values of the graph's symbolic sizes for these inputs.
    """
    if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
        return value
    example = node.meta.get("val")
    shape = strides = None
    if isinstance(example, torch.Tensor):
        shape = capture_cache.concrete_sizes(example.shape, sizes)
        strides = capture_cache.concrete_sizes(example.stride(), sizes)
    if strides is None or shape != tuple(value.shape):
        return value.detach().clone(memory_format=torch.contiguous_format)
    fresh = torch.empty_strided(value.shape, strides, dtype=value.dtype, device=value.device)
    return fresh.copy_(value.detach())


def _check_finite(flat: list[Any], names: list[str]) -> None:
    for name, value in zip(names, flat, strict=False):
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            if not bool(torch.isfinite(value).all()):
                raise InputError(f"input '{name}' contains NaN or Inf values")


# DESIGN.md 2.4: an explanation whose ledger is off by more than this (relative to Σ|seed|)
# is an error, never a result.
LEDGER_TOLERANCE = 1e-4


def _check_ledger(exp: Explanation) -> None:
    error = exp.conservation_error
    if math.isfinite(error) and error <= LEDGER_TOLERANCE:
        return
    broken = [n for n, v in exp.absorbed.items() if not math.isfinite(v)]
    where = (
        f"non-finite absorbed relevance at node(s) {', '.join(broken[:5])}"
        if broken
        else "relevance vanished on the way to the inputs" if not exp.absorbed
        else "largest absorbed entries: " + ", ".join(
            f"{n} ({v:.3g})" for n, v in sorted(
                exp.absorbed.items(), key=lambda kv: -abs(kv[1]))[:3]
        )
    )
    raise ConservationError(
        f"the relevance ledger does not balance (relative error {error:.3g} > "
        f"{LEDGER_TOLERANCE:g}): an intermediate value overflowed or lost precision "
        f"({where}). Explain in float64, or with inputs of a smaller magnitude."
    )


def _features_per_row(value: torch.Tensor) -> set[int]:
    """Feature counts a name list may have: per row (dims after the first) or in all."""
    per_row = math.prod(value.shape[1:]) if value.dim() >= 1 else 1
    return {int(per_row), int(value.numel())}


def _context(
    names: list[str],
    flat: list[Any],
    feature_names: Sequence[str] | Mapping[str, Sequence[str]] | None,
    tokens: Sequence[str] | Sequence[Sequence[str]] | None,
) -> dict[str, Any]:
    """Feature names and tokens checked against the inputs, as Explanation fields."""
    tensors = {n: v for n, v in zip(names, flat, strict=False) if isinstance(v, torch.Tensor)}
    out: dict[str, Any] = {}
    if feature_names is not None:
        if isinstance(feature_names, str):
            raise InputError("feature_names must be a list of names, not one string")
        given = (dict(feature_names) if isinstance(feature_names, Mapping)
                 else {next(iter(tensors), ""): feature_names})
        by_name = {}
        for name, labels in given.items():
            if name not in tensors:
                raise InputError(f"feature_names given for unknown input {name!r}; inputs: "
                                 f"{list(tensors)}")
            labels = [str(x) for x in labels]
            allowed = _features_per_row(tensors[name])
            if len(labels) not in allowed:
                raise InputError(f"{len(labels)} feature names for input {name!r}, whose rows "
                                 f"have {min(allowed)} features")
            by_name[name] = labels
        out["feature_names_by_name"] = by_name
    if tokens is not None:
        name = "input_ids" if "input_ids" in tensors else next(
            (n for n, v in tensors.items() if not v.is_floating_point()), None)
        if name is None:
            raise InputError("tokens= needs an integer token-id input")
        ids = tensors[name]
        ids = ids.reshape(1, -1) if ids.dim() < 2 else ids.reshape(ids.shape[0], -1)
        rows = [list(tokens)] * ids.shape[0] if all(isinstance(t, str) for t in tokens) else [
            list(r) for r in tokens]
        if len(rows) != ids.shape[0] or any(len(r) != ids.shape[1] for r in rows):
            raise InputError(f"tokens must give {ids.shape[1]} strings for each of the "
                             f"{ids.shape[0]} rows of input {name!r}")
        out["tokens"] = [[str(t) for t in r] for r in rows]
        out["token_input"] = name
    return out


def _check_output_names(names: Sequence[str] | None, output: torch.Tensor) -> None:
    if names is None:
        return
    classes = int(output.shape[-1]) if output.dim() else 1
    if isinstance(names, str) or len(names) != classes:
        raise InputError(f"output_names must name each of the {classes} outputs (the last "
                         f"dimension), got {1 if isinstance(names, str) else len(names)}")


class Backtrace:
    """Explain any ``nn.Module`` that ``torch.export`` can capture.

    The model is captured lazily, once per dynamic input signature (dtypes, devices and ranks
    of the inputs, keyword names and non-tensor arguments): the batch and sequence dimensions
    are exported as symbolic sizes, so one capture serves every batch size and length (models
    that cannot be exported so get one static capture per shape). Captures are shared by every
    ``Backtrace`` of the same model object and read its current weights; ``dynamic=False``
    always exports the given shapes; after changing the model's structure or ``forward`` in
    place, call :meth:`forget_captures`. The model is explained in eval mode; the user's flags
    are restored.
    ``cache_abs_weights=False`` recomputes ``|w|`` on every call instead of keeping a copy.

    ``attention``: ``"value"`` or ``"split"``; None uses each mode's default (default mode
    ``"value"``, contrast ``"split"``). ``norm``: how layer/group norm's centring is explained,
    ``"centre"`` (an affine op, DESIGN.md 2.3) or ``"identity"``; None uses each mode's
    default (default mode ``"identity"``, contrast ``"centre"``).
    ``epsilon``: the stabiliser of contrast mode's signed shares (None: 1e-6, or 1e-12 when
    the relevance is float64).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        mode: str = "default",
        attention: str | None = None,
        output: str | int | None = None,
        cache_abs_weights: bool = True,
        norm: str | None = None,
        epsilon: float | None = None,
        dynamic: bool = True,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"Backtrace needs a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.mode = self._check_mode(mode)
        self.attention = None if attention is None else self._check_attention(attention)
        if norm is not None and norm not in NORM_RULES:
            raise ValueError(f"norm must be one of {NORM_RULES}, got {norm!r}")
        self.norm = norm
        if epsilon is not None and not epsilon > 0:
            raise ValueError(f"epsilon must be positive, got {epsilon!r}")
        self.epsilon = epsilon
        self.output = output
        self.dynamic = bool(dynamic)
        # The captures this Backtrace has used (they live in the model's shared cache).
        self._cache: dict[tuple, CapturedGraph] = {}
        # |w| of each parameter, kept between calls: one weight-sized copy buys ~2x speed on
        # weight-dominated models (an MLP at batch 1). Updated weights are detected.
        self._abs_weights = AbsCache() if cache_abs_weights else None

    @staticmethod
    def _check_mode(mode: str) -> str:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        return mode

    def attention_for(self, mode: str | None = None, attention: str | None = None) -> str:
        """The attention rule an explanation in ``mode`` uses (explicit, then set, then default)."""
        if attention is not None:
            return self._check_attention(attention)
        if self.attention is not None:
            return self.attention
        return DEFAULT_ATTENTION[self._check_mode(mode or self.mode)]

    def _options(self, mode: str, attention: str | None, dtype: torch.dtype) -> RuleOptions:
        return RuleOptions(
            attention=self.attention_for(mode, attention),
            signed=mode == "contrast",
            epsilon=self.epsilon if self.epsilon is not None else default_epsilon(dtype),
            centring=(self.norm or DEFAULT_NORM[mode]) == "centre",
        )

    @staticmethod
    def _check_attention(attention: str) -> str:
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
        return attention

    # ---- capture -------------------------------------------------------------------------------
    def capture(self, *args: Any, **kwargs: Any) -> CapturedGraph:
        """The captured graph for these inputs (exported on first use, then cached)."""
        args = tuple(_as_tensor(a) for a in args)
        kwargs = {k: _as_tensor(v) for k, v in kwargs.items()}
        with inference_state(self.model):
            return self._captured(args, kwargs)

    def forget_captures(self) -> None:
        """Drop every capture of this model, for all its ``Backtrace`` objects: needed after a
        change of the model's structure or ``forward`` in place (weight updates need none)."""
        capture_cache.clear_captures(self.model)
        self._cache.clear()

    def _captured(self, args: tuple, kwargs: dict) -> CapturedGraph:
        key = capture_cache.signature(self.model, args, kwargs, self.dynamic)
        graph, ones = capture_cache.find(self.model, key, args, kwargs)
        if graph is None or ones:
            with _buffers_restored(self.model):  # a forward may update buffers (DESIGN.md 4)
                graph, ones = self._new_capture(key, graph, ones, args, kwargs)
            capture_cache.remember(self.model, key, graph, ones)
        self._cache[(key, id(graph))] = graph
        return graph

    def _new_capture(self, key: tuple, found: CapturedGraph | None, ones: frozenset,
                     args: tuple, kwargs: dict) -> tuple[CapturedGraph, frozenset]:
        """A graph for inputs no checked capture takes: ``found`` once it is seen to compute
        the model with these sizes of 1, else a new export (static if the dynamic one fails
        that check)."""
        expected = self._validate_by_running(args, kwargs)
        if found is not None and self._reproduces(found, args, kwargs, expected):
            return found, ones
        if found is None:
            graph = capture_mod.export_model(self.model, args, kwargs, dynamic=self.dynamic)
            flat = capture_cache.user_leaves(graph, args, kwargs)
            sizes = None if flat is None else capture_cache.bind_sizes(graph, flat)
            ones = frozenset() if sizes is None else capture_cache.size_ones(graph, sizes)
            if sizes is not None and (not ones or self._reproduces(graph, args, kwargs,
                                                                   expected)):
                return graph, ones  # (a widened example may have specialised to size 2)
        logger.debug("the dynamic capture of %s differs from the model with a size of 1; "
                     "exporting static shapes", type(self.model).__name__)
        return capture_mod.export_model(self.model, args, kwargs, dynamic=False), frozenset()

    def _reproduces(self, g: CapturedGraph, args: tuple, kwargs: dict, expected: Any) -> bool:
        """Whether running ``g`` on these inputs gives the model's own outputs."""
        flat = capture_cache.user_leaves(g, args, kwargs)
        wanted = [v for v in pytree.tree_leaves(expected) if isinstance(v, torch.Tensor)]
        try:
            _, outputs = record(g, self.model, flat, set())
        except Exception:  # a runtime assertion of the graph: it does not take these sizes
            return False
        got = [v for v in outputs if isinstance(v, torch.Tensor)]
        if len(got) != len(wanted):
            return False
        for a, b in zip(got, wanted, strict=True):
            if a.shape != b.shape or a.dtype != b.dtype:
                return False
            if a.is_floating_point():
                tolerance = 1e-2 if a.dtype in (torch.float16, torch.bfloat16) else 1e-4
                scale = float(b.abs().max()) if b.numel() else 0.0
                if not bool(((a - b).abs() <= tolerance * scale + 1e-6).all()):
                    return False
            elif not torch.equal(a, b):
                return False
        return True

    def _validate_by_running(self, args: tuple, kwargs: dict) -> Any:
        """Plain forward first: shape/dtype mistakes get a clear message, not an export trace.
        Returns the model's output."""
        try:
            with torch.no_grad():
                return self.model(*args, **kwargs)
        except Exception as exc:
            shapes = [
                f"{tuple(t.shape)} {t.dtype}" if isinstance(t, torch.Tensor) else repr(t)
                for t in pytree.tree_leaves((args, kwargs))
            ]
            raise InputError(
                f"the model failed on the given inputs (shapes/dtypes: {', '.join(shapes)}): "
                f"{type(exc).__name__}: {exc}"
            ) from exc

    # ---- explain -------------------------------------------------------------------------------
    def explain(
        self,
        *inputs: Any,
        target: Target = None,
        mode: str | None = None,
        seed: torch.Tensor | None = None,
        scale: float = 1.0,
        output: str | int | None = None,
        layers: list[str] | str | None = None,
        position: int | None = None,
        attention: str | None = None,
        feature_names: Sequence[str] | Mapping[str, Sequence[str]] | None = None,
        output_names: Sequence[str] | None = None,
        tokens: Sequence[str] | Sequence[Sequence[str]] | None = None,
        targets: Sequence[Target] | None = None,
        seeds: torch.Tensor | None = None,
        **model_kwargs: Any,
    ) -> Explanation:
        """Explain the model's output for ``inputs`` (keyword inputs go to the model too).

        Contrast mode explains the *value* of the selected outputs: the relevance placed on the
        output is ``seed ⊙ output`` (one-hot × logit for a class), so the signed map is an
        additive decomposition of the explained logit (``Σ relevance + Σ absorbed = logit``)
        and positive relevance always means "pushes the output up", whatever its sign.
        The explanation keeps the inputs it explained and the names given here, for its views
        (``plot()``, ``to_dataframe()``, HTML); the names never reach the model.

        Parameters
        ----------
        *inputs
            The model's positional inputs (tensors or NumPy arrays).
        target
            Class index (int or one per row), ``"positive"``/``"negative"`` for a single
            logit, None for the predicted class.
        mode
            ``"default"`` or ``"contrast"``; None uses the Backtrace's mode.
        seed
            A custom seed shaped like the output (instead of ``target``).
        scale
            Multiplies the seed.
        output
            Which model output to explain (a key such as ``"logits"`` or an index).
        layers
            Module names (or ``"all"``) whose output relevance to keep; graph node names
            (``capture(...).nodes``) are accepted too.
        position
            For sequence outputs: the position whose logits are explained.
        attention
            ``"value"`` or ``"split"`` for this call; None uses the Backtrace's choice.
        feature_names
            One name per feature of a row (the dimensions after the batch dimension, row-major):
            a list for the first input, or a mapping from input name to list.
        output_names
            The name of each output class (the output's last dimension).
        tokens
            Token strings of the token-id input: one list for every row, or one per row.
        targets
            Several targets explained on one forward record (each given as ``target`` is):
            the record and the shares are computed once, only the transposed ops run per
            target. The explanation has one row per target and input row, target-major (rows
            ``k·B … k·B + B − 1`` explain ``targets[k]``), equal to explaining the inputs
            repeated ``len(targets)`` times with one target per copy. Every input needs the
            output's batch dimension first; ``layers`` without it are left out (as row slices
            of an explanation leave them out).
        seeds
            Several custom seeds, ``[K, *output.shape]``, explained like ``targets``.
        **model_kwargs
            Keyword inputs of the model.
        """
        mode = self._check_mode(mode or self.mode)
        if attention is not None:
            self._check_attention(attention)
        args = tuple(_as_tensor(a) for a in inputs)
        kwargs = {k: _as_tensor(v) for k, v in model_kwargs.items()}
        with inference_state(self.model):
            g = self._captured(args, kwargs)
            given = self._flat_inputs(g, args, kwargs)
            sizes = capture_cache.bind_sizes(g, given) or {}
            flat = [_fresh(v, n, sizes) for v, n in zip(given, g.user_inputs, strict=True)]
            _check_finite(flat, g.input_names)
            context = _context(g.input_names, flat, feature_names, tokens)
            out_index = self._select_output(g, output if output is not None else self.output)
            out_node = g.output_nodes[out_index]
            if not isinstance(out_node, fx.Node) or out_node not in g.data:
                blocked = (
                    capture_mod.blocking_node(g, out_node) if isinstance(out_node, fx.Node)
                    else None
                )
                if blocked is not None:
                    raise UnsupportedOperationError(capture_mod.describe_unsupported(
                        blocked,
                        f"relevance cannot pass ATen op '{blocked.target}': its result is not "
                        "a real floating-point tensor (complex, integer or boolean), so the "
                        "output is cut off from the inputs",
                    ))
                raise TargetError(
                    f"the selected output (index {out_index}) does not depend on any input"
                )
            relevant = g.relevant.get(out_index)
            if relevant is None:
                relevant = capture_mod.relevant_nodes(g, out_node)
                capture_mod.check_rules(g, relevant)
                g.relevant[out_index] = relevant
            layer_map = self._layer_nodes(g, layers)
            upcast = needs_upcast(g, self.model, flat)  # half models: float32 arithmetic
            try:
                env, outputs = record(g, self.model, flat,
                                      needed_values(relevant) | set(layer_map), upcast=upcast)
            except Exception:
                # A shared capture takes any size: inputs the model itself rejects (a text
                # longer than its positions) get the plain forward's clear message.
                with _buffers_restored(self.model):
                    self._validate_by_running(args, kwargs)
                raise
            out_value = outputs[out_index]
            if out_value.is_floating_point() and not bool(torch.isfinite(out_value).all()):
                raise InputError(
                    "the model output contains NaN or Inf for these inputs; there is nothing "
                    "meaningful to explain (check the inputs, the attention mask and the dtype)"
                )
            _check_output_names(output_names, out_value)
            streamed = targets is not None or seeds is not None
            if streamed:
                signed_seed, target_idx = _stream_seeds(out_value, target, seed, targets, seeds,
                                                       scale, position)
            else:
                one, target_idx = make_seed(out_value, target, scale, seed, position)
                signed_seed = one.unsqueeze(0)
            dtype = out_value.dtype if out_value.dtype in (torch.float32, torch.float64) else (
                torch.float32
            )
            options = self._options(mode, attention, dtype)
            if mode == "contrast":
                signed_seed = signed_seed * out_value.detach()
            else:
                signed_seed = signed_seed.abs()
            seed_streams = signed_seed.to(dtype)
            result = sweep(
                g, env, relevant, out_node, seed_streams, options, set(layer_map), self._abs_weights
            )
        for node, rel in result.inputs.items():
            if not bool(torch.isfinite(rel).all()):
                raise RuleError(
                    f"relevance for input '{node.name}' is not finite; an intermediate value of "
                    "the model overflowed. Try float64 or a smaller scale="
                )
        if streamed:
            result, flat, out_value, context = _rows_per_stream(
                result, g, flat, out_value, signed_seed.shape[0], context)
        exp = self._explanation(g, flat, result, mode, signed_seed.flatten(0, 1) if streamed
                                else signed_seed[0], target_idx, out_value, layer_map,
                                single=len(args) + len(kwargs) == 1, dtype=dtype)
        _check_ledger(exp)
        return dataclasses.replace(
            exp, output_names=None if output_names is None else [str(n) for n in output_names],
            **context,
        )

    def attribute(
        self,
        inputs: torch.Tensor | tuple[torch.Tensor, ...],
        target: Target = None,
        additional_forward_args: Any = None,
        **kwargs: Any,
    ) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """Captum-style: relevance shaped like each input (contrast mode gives the net map)."""
        single = isinstance(inputs, torch.Tensor)
        ins = (inputs,) if single else tuple(inputs)
        extra = additional_forward_args
        extra = () if extra is None else (extra if isinstance(extra, tuple) else (extra,))
        exp = self.explain(*ins, *extra, target=target, **kwargs)
        maps = exp.relevance_by_name
        values = tuple(maps[name] for name in exp.input_names[: len(ins)])
        return values[0] if single else values

    # ---- helpers -------------------------------------------------------------------------------
    @staticmethod
    def _flat_inputs(g: CapturedGraph, args: tuple, kwargs: dict) -> list[Any]:
        leaves = capture_cache.user_leaves(g, args, kwargs)
        if leaves is None:
            given = [x for x in pytree.tree_leaves((args, kwargs)) if isinstance(x, torch.Tensor)]
            raise InputError(
                f"expected {len(g.user_inputs)} tensor inputs for the captured graph, got "
                f"{len(given)}"
            )
        return leaves

    @staticmethod
    def _select_output(g: CapturedGraph, selector: str | int | None) -> int:
        indexed = pytree.tree_unflatten(list(range(len(g.output_nodes))), g.out_spec)
        if selector is None:
            if isinstance(indexed, int):
                return indexed
            if hasattr(indexed, "keys") and "logits" in indexed.keys():
                return indexed["logits"]
            leaves = pytree.tree_leaves(indexed)
            return leaves[0]
        try:
            chosen = indexed[selector]
        except (KeyError, IndexError, TypeError) as exc:
            raise TargetError(f"output selector {selector!r} not found in the output") from exc
        if not isinstance(chosen, int):
            raise TargetError(f"output selector {selector!r} selects a structure, not a tensor")
        return chosen

    @staticmethod
    def _layer_nodes(g: CapturedGraph, layers: list[str] | str | None) -> dict[fx.Node, str]:
        if layers is None:
            return {}
        names = None if layers == "all" else ([layers] if isinstance(layers, str) else layers)
        # Names of graph nodes (``CapturedGraph.nodes``) are accepted too, for task helpers
        # that need relevance inside a module (e.g. each routed expert's weighted output).
        by_node = {n.name: n for n in g.nodes if n in g.data}
        node_names = [n for n in names or [] if n in by_node]
        module_names = None if names is None else [n for n in names if n not in by_node]
        found = capture_mod.module_output_nodes(g, module_names) if module_names != [] else {}
        found.update({name: by_node[name] for name in node_names})
        return {node: name for name, node in found.items()}

    @staticmethod
    def _explanation(g, flat, result, mode, seed, target, out_value, layer_map, single, dtype):
        # Contrast mode carries one signed map: ``net`` is it, ``total = |net|`` (= positive +
        # negative). Default mode's map is ``total``.
        total: dict[str, torch.Tensor] = {}
        net: dict[str, torch.Tensor] | None = {} if mode == "contrast" else None
        names: list[str] = []
        for node, name, value in zip(g.user_inputs, g.input_names, flat, strict=True):
            if not isinstance(value, torch.Tensor):
                continue
            names.append(name)
            R = result.inputs.get(node)
            if R is None:
                R = torch.zeros((1, *value.shape), dtype=dtype, device=value.device)
            if net is not None:
                net[name] = R[0]
                total[name] = R[0].abs()
            else:
                total[name] = R[0]
        if mode == "contrast":
            layers = {layer_map[n]: r[0].abs() for n, r in result.layers.items()}
            layers_net = {layer_map[n]: r[0] for n, r in result.layers.items()}
        else:
            layers = {layer_map[n]: r[0] for n, r in result.layers.items()}
            layers_net = {}
        return Explanation(
            mode=mode,
            input_names=names,
            total_by_name=total,
            net_by_name=net,
            absorbed=result.absorbed,
            absorbed_rows=result.absorbed_rows,
            inputs_by_name={n: v.detach() for n, v in zip(g.input_names, flat, strict=True)
                            if isinstance(v, torch.Tensor)},
            seed=seed,
            target=target,
            output=out_value.detach(),
            layers=layers,
            layers_net=layers_net,
            single_input=single and len(names) == 1,
        )


def _stream_seeds(
    output: torch.Tensor, target: Target, seed: torch.Tensor | None,
    targets: Sequence[Target] | None, seeds: torch.Tensor | None, scale: float,
    position: int | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Seeds ``[K, *output.shape]`` for ``targets`` or ``seeds``, and the target index of each
    explanation row (target-major), or None for custom seeds."""
    if target is not None or seed is not None:
        raise TargetError("give target=/seed= for one target, or targets=/seeds= for several")
    if targets is not None and seeds is not None:
        raise TargetError("give either targets= or seeds=, not both")
    if output.dim() == 0:
        raise TargetError("several targets need an output with a batch dimension")
    if seeds is not None:
        stacked = torch.as_tensor(seeds, dtype=output.dtype, device=output.device)
        if stacked.dim() != output.dim() + 1 or stacked.shape[1:] != output.shape:
            raise TargetError(f"seeds must be shaped [K, {', '.join(map(str, output.shape))}] "
                              f"(one seed per stream), got {tuple(stacked.shape)}")
        if stacked.shape[0] == 0:
            raise TargetError("seeds= holds no seed")
        if not bool(torch.isfinite(stacked).all()):
            raise TargetError("seeds contain NaN or Inf")
        return stacked * scale, None
    if isinstance(targets, (str, torch.Tensor)) or not isinstance(targets, Sequence):
        raise TargetError("targets must be a list of targets (each as target= takes it)")
    if not targets:
        raise TargetError("targets= holds no target")
    made = [make_seed(output, t, scale, None, position) for t in targets]
    indices = [idx for _, idx in made]
    index = None if any(i is None for i in indices) else torch.cat(indices)
    return torch.stack([s for s, _ in made]), index


def _rows_per_stream(result, g: CapturedGraph, flat: list[Any], output: torch.Tensor,
                     streams: int, context: dict[str, Any]):
    """A streamed sweep's result as ``streams × B`` explanation rows (target-major): relevance
    maps and layers flattened, the inputs, output and tokens repeated once per stream."""
    batch = output.shape[0]

    def rows(t: torch.Tensor) -> torch.Tensor:
        return t.unsqueeze(0).expand(streams, *t.shape).flatten(0, 1)

    for node, R in result.inputs.items():
        if R.dim() < 2 or R.shape[1] != batch:
            raise InputError(f"several targets need every input to have the output's batch "
                             f"dimension ({batch}) first; input '{node.name}' has shape "
                             f"{tuple(R.shape[1:])}")
    inputs = {node: R.flatten(0, 1) for node, R in result.inputs.items()}
    layers = {node: R.flatten(0, 1) for node, R in result.layers.items()
              if R.dim() >= 2 and R.shape[1] == batch}
    repeated = [rows(v) if isinstance(v, torch.Tensor) and v.dim() >= 1 and v.shape[0] == batch
                else v for v in flat]
    context = dict(context)
    if context.get("tokens") is not None:
        context["tokens"] = [list(r) for _ in range(streams) for r in context["tokens"]]
    flattened = dataclasses.replace(result, inputs={n: r.unsqueeze(0) for n, r in inputs.items()},
                                    layers={n: r.unsqueeze(0) for n, r in layers.items()})
    return flattened, repeated, rows(output), context


def explain(model: torch.nn.Module, *inputs: Any, **kwargs: Any) -> Explanation:
    """One-shot ``Backtrace(model).explain(*inputs, **kwargs)``.

    Parameters
    ----------
    model
        The module to explain.
    *inputs
        Its positional inputs.
    **kwargs
        Options of :meth:`Backtrace.explain` and the model's keyword inputs.
    """
    return Backtrace(model).explain(*inputs, **kwargs)
