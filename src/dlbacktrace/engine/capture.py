"""Capture a model with ``torch.export`` and analyse its graph for the relevance sweep.

The captured graph is functional ATen (in-place ops removed by ``run_decompositions({})``), so
recorded activations are never overwritten. Ops without a relevance rule are decomposed with
PyTorch's own decomposition table where one exists (for example ``aten.lstm``); whatever is
left without a rule is reported by :func:`check_rules` as an error, never passed through.
"""

from __future__ import annotations

import inspect
import logging
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.fx as fx
import torch.utils._pytree as pytree
from torch.export import Dim, ExportedProgram
from torch.export.graph_signature import InputKind, OutputKind

from dlbacktrace.engine.errors import CaptureError, UnsupportedOperationError
from dlbacktrace.engine.rules import registry
from dlbacktrace.engine.rules.spec import Family, OpSpec

_MAX_DECOMPOSITION_ROUNDS = 4
logger = logging.getLogger(__name__)

logger = logging.getLogger(__name__)


@dataclass
class CapturedGraph:
    """An exported program plus what the sweep needs to know about each node."""

    program: ExportedProgram
    graph: fx.Graph
    nodes: list[fx.Node]
    user_inputs: list[fx.Node]  # placeholders for the flattened user inputs, in order
    input_names: list[str]  # a readable name per user input
    state_targets: dict[fx.Node, tuple[InputKind, str]]  # placeholder -> (kind, fqn/constant)
    output_nodes: list[Any]  # flat user outputs (nodes or constants)
    output_positions: list[int]  # where each user output sits among all graph outputs
    out_spec: pytree.TreeSpec
    data: set[fx.Node] = field(default_factory=set)  # nodes that can carry relevance
    gates: set[fx.Node] = field(default_factory=set)  # probability-like nodes (sigmoid/softmax)
    # Softmax outputs, and data movement of them, that feed a product of two data tensors
    # (attention probabilities; DESIGN.md 2.2): the nodes the softmax rule applies to.
    attention_probs: set[fx.Node] = field(default_factory=set)
    saturation: dict[fx.Node, tuple[float | None, float | None]] = field(default_factory=dict)
    # The sides of ``saturation`` on which a saturated output can carry relevance: a ReLU-like
    # low side (output exactly 0 below the bound) whose consumers give zero-valued elements no
    # relevance never does, so its rule needs no saturated form there (decided here, from the
    # op declarations and the graph, never from the data).
    live_saturation: dict[fx.Node, tuple[float | None, float | None]] = field(
        default_factory=dict
    )
    relevant: dict[int, list[fx.Node]] = field(default_factory=dict)  # per output, checked
    # Bias written as a separate op (``x @ W + b``, Keras Dense, ONNX MatMul+Add): the
    # bias-free affine node -> the add/sub that applies its constant bias. The pair is
    # explained as one affine op with that bias (DESIGN.md 2.1), like nn.Linear.
    bias_add: dict[fx.Node, fx.Node] = field(default_factory=dict)
    bias_source: dict[fx.Node, fx.Node] = field(default_factory=dict)  # add -> affine node


def export_model(
    model: torch.nn.Module, args: tuple, kwargs: dict, dynamic: bool = True
) -> CapturedGraph:
    """Export ``model`` (already in eval mode) and build the analysed graph.

    ``dynamic``: export the batch and sequence dimensions (dims 0 and 1 of every tensor input)
    as symbolic sizes, so that one graph serves every batch size and length; a model that
    cannot be exported so (data-dependent guards, specialisation errors) is exported with the
    example's static shapes instead, logged at debug level.

    Parameters
    ----------
    model
        The module to export, in eval mode.
    args
        Its positional example inputs.
    kwargs
        Its keyword example inputs.
    dynamic
        Try symbolic batch and sequence dimensions first.
    """
    if dynamic:
        shapes = dynamic_shapes(model, args, kwargs)
        if shapes is not None:
            try:
                wide_args, wide_kwargs = widened(args, kwargs)
                program = _program(model, wide_args, wide_kwargs, shapes)
                return _analysed(program, args, kwargs)
            except Exception as exc:  # torch raises many unrelated types here
                first = f"{type(exc).__name__}: {exc}".splitlines()[0]
                logger.debug("dynamic export of %s failed, exporting static shapes: %s",
                             type(model).__name__, first)
    try:
        program = _program(model, args, kwargs, None)
    except Exception as exc:
        raise CaptureError(_capture_hint(exc)) from exc
    return _analysed(program, args, kwargs)


# Dimensions exported as symbolic sizes: the batch (0) and the sequence (1). Export keeps a
# dimension the model fixes (features, channels) static by itself (``Dim.AUTO``).
DYNAMIC_DIMS = (0, 1)


def _marked(leaf: torch.Tensor) -> list[int]:
    return [d for d in DYNAMIC_DIMS if d < leaf.dim() and leaf.shape[d] > 0]


def dynamic_shapes(model: torch.nn.Module, args: tuple, kwargs: dict) -> dict | None:
    """``torch.export`` dynamic-shape specs (by ``forward`` parameter) marking the batch and
    sequence dims, or None when no input has such a dimension (nothing to make dynamic).

    Parameters
    ----------
    model
        The module to export.
    args
        Its positional example inputs.
    kwargs
        Its keyword example inputs.
    """
    try:
        bound = inspect.signature(model.forward).bind(*args, **kwargs).arguments
    except (TypeError, ValueError):
        return None  # the plain forward reports the mismatch
    marked = False

    def spec(leaf: Any) -> Any:
        nonlocal marked
        if not isinstance(leaf, torch.Tensor):
            return None
        dims = {d: Dim.AUTO for d in _marked(leaf)}
        marked = marked or bool(dims)
        return dims or None

    specs = {name: pytree.tree_map(spec, value) for name, value in bound.items()}
    return specs if marked else None


def widened(args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """The example with every size-1 batch or sequence dimension repeated to size 2.

    Export specialises a dimension whose example size is 1 (a batch of one) to 1; exporting a
    size-2 example instead keeps it symbolic. Such a graph assumes sizes of at least 2; that it
    also computes the model at size 1 is checked on the call's own inputs before it is used
    there (``Backtrace``), since a model may branch on a size being 1.

    Parameters
    ----------
    args
        Positional example inputs.
    kwargs
        Keyword example inputs.
    """

    def widen(leaf: Any) -> Any:
        if not isinstance(leaf, torch.Tensor):
            return leaf
        for d in _marked(leaf):
            if leaf.shape[d] == 1:
                leaf = torch.cat([leaf, leaf], dim=d)
        return leaf

    return pytree.tree_map(widen, (args, kwargs))


def _program(
    model: torch.nn.Module, args: tuple, kwargs: dict, shapes: dict | None
) -> ExportedProgram:
    program = torch.export.export(model, args, kwargs, dynamic_shapes=shapes, strict=False)
    # Ops already in the exported graph that have no rule are decomposed in this same pass
    # (each pass costs about as much as the export itself for a transformer).
    return program.run_decompositions(_unruled_decompositions(program))


def _analysed(program: ExportedProgram, args: tuple, kwargs: dict) -> CapturedGraph:
    program = with_recorded_extras(_decompose_unruled(program))
    return analyse(program, args, kwargs)


def _capture_hint(exc: Exception) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    hints = [
        "torch.export could not capture the model: " + first,
        "What to try: remove Python control flow that depends on tensor values (use torch.where "
        "or torch.cond), avoid .item()/.tolist() on data, return tensors (or tuples/dicts of "
        "tensors) from forward.",
    ]
    if "Cache" in text or "pytree" in text:
        hints.append("The model returns a non-tensor object; for Hugging Face models pass "
                     "use_cache=False.")
    return "\n".join(hints)


def _unruled_decompositions(program: ExportedProgram) -> dict:
    """PyTorch's decompositions of the graph's ops that have no rule (e.g. LSTM, GRU)."""
    table = torch.export.default_decompositions()
    return {
        node.target: table[node.target]
        for node in program.graph.nodes
        if node.op == "call_function"
        and isinstance(node.target, torch._ops.OpOverload)
        and registry.lookup(node.target) is None
        and node.target in table
        # size reads of a dynamic graph (sym_size) carry no relevance and decompose to
        # themselves
        and any(isinstance(v, torch.Tensor) for v in node_vals(node))
    }


def _decompose_unruled(program: ExportedProgram) -> ExportedProgram:
    """Decompose ops that have no rule but have a PyTorch decomposition (e.g. LSTM, GRU)."""
    before: set = set()
    for _ in range(_MAX_DECOMPOSITION_ROUNDS):
        decompositions = _unruled_decompositions(program)
        missing = set(decompositions)
        if not missing or missing == before:
            break
        before = missing
        try:
            program = program.run_decompositions(decompositions)
        except Exception as exc:
            names = ", ".join(sorted(str(op) for op in missing))
            raise CaptureError(f"decomposing {names} failed: {exc}") from exc
    return program


# Ops whose decomposition also returns what their rule needs: max-pools their arg-max indices,
# layer and group norm their mean and 1/σ. Recorded once in the forward, these spare the rules
# a second forward (issue 15). (max_pool1d decomposes to an op without a declared rule: it
# stays.)
_WITH_RECORDED_EXTRAS = ("max_pool2d", "max_pool3d", "layer_norm", "group_norm")


def with_recorded_extras(program: ExportedProgram) -> ExportedProgram:
    """Rewrite max-pools and layer/group norms as the ops that also return indices /
    statistics."""
    table = torch.export.default_decompositions()
    ops = {getattr(torch.ops.aten, name).default for name in _WITH_RECORDED_EXTRAS}
    present = {
        node.target for node in program.graph.nodes
        if node.op == "call_function" and node.target in ops and node.target in table
    }
    if not present:
        return program
    try:
        return program.run_decompositions({op: table[op] for op in present})
    except Exception:  # torch raises many types here; the plain ops keep their own rules
        logger.debug("decomposition of %s failed; the ops keep their own rules", present)
        return program


def analyse(program: ExportedProgram, args: tuple, kwargs: dict) -> CapturedGraph:
    graph = program.graph
    nodes = list(graph.nodes)
    placeholders = [n for n in nodes if n.op == "placeholder"]
    specs = program.graph_signature.input_specs
    state_targets: dict[fx.Node, tuple[InputKind, str]] = {}
    user_inputs: list[fx.Node] = []
    by_name = {n.name: n for n in placeholders}
    for spec in specs:
        node = by_name[spec.arg.name]
        if spec.kind == InputKind.USER_INPUT:
            user_inputs.append(node)
        elif spec.kind in (
            InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR, InputKind.TOKEN
        ):
            state_targets[node] = (spec.kind, spec.target)
        else:
            raise CaptureError(f"unsupported graph input kind {spec.kind} for {spec.arg.name}")

    input_names = _input_names(args, kwargs)
    if len(input_names) != len(user_inputs):  # e.g. non-tensor inputs that export specialised
        input_names = [n.name for n in user_inputs]

    output_node = next(n for n in reversed(nodes) if n.op == "output")
    out_specs = program.graph_signature.output_specs
    user_positions = [i for i, s in enumerate(out_specs) if s.kind == OutputKind.USER_OUTPUT]
    output_nodes = [output_node.args[0][i] for i in user_positions]
    out_spec = program.call_spec.out_spec

    captured = CapturedGraph(
        program=program,
        graph=graph,
        nodes=nodes,
        user_inputs=user_inputs,
        input_names=input_names,
        state_targets=state_targets,
        output_nodes=output_nodes,
        output_positions=user_positions,
        out_spec=out_spec,
    )
    _mark_data(captured)
    _mark_gates(captured)
    _mark_attention_probs(captured)
    _mark_bias_adds(captured)
    _mark_saturation(captured)
    return captured


def _input_names(args: tuple, kwargs: dict) -> list[str]:
    names: list[str] = []
    for i, a in enumerate(args):
        leaves = pytree.tree_leaves(a)
        many = len(leaves) != 1
        names += [f"input{i}.{j}" for j in range(len(leaves))] if many else [f"input{i}"]
    for k, v in kwargs.items():
        leaves = pytree.tree_leaves(v)
        names += [k] if len(leaves) == 1 else [f"{k}.{j}" for j in range(len(leaves))]
    return names


def node_vals(node: fx.Node) -> list[Any]:
    """The example values (fake tensors) of a node's output, flattened."""
    val = node.meta.get("val")
    return pytree.tree_leaves(val) if val is not None else []


def _is_float_node(node: fx.Node) -> bool:
    return any(isinstance(v, torch.Tensor) and v.is_floating_point() for v in node_vals(node))


def _is_int_tensor_node(node: fx.Node) -> bool:
    vals = node_vals(node)
    return bool(vals) and all(
        isinstance(v, torch.Tensor) and not v.is_floating_point() and v.dtype != torch.bool
        for v in vals
    )


def input_nodes(node: fx.Node) -> list[fx.Node]:
    return list(node.all_input_nodes)


def _spec(node: fx.Node) -> OpSpec:
    """The declaration of a node's op (every analysis below reads only this)."""
    return registry.spec_of(node.target)


def _family(node: fx.Node) -> Family:
    return _spec(node).family


def _mark_data(g: CapturedGraph) -> None:
    """Data = float tensors that depend on a float user input or on an embedded token id."""
    data: set[fx.Node] = set()
    id_candidates: set[fx.Node] = set()
    for node in g.user_inputs:
        if _is_float_node(node):
            data.add(node)
        elif _is_int_tensor_node(node):
            id_candidates.add(node)
    embeddings: list[fx.Node] = []
    for node in g.nodes:
        if node.op != "call_function":
            continue
        ins = input_nodes(node)
        family = _family(node)
        if family is Family.EMBEDDING:
            indices = node.args[1]
            if indices in id_candidates:
                data.add(node)
                embeddings.append(node)
            elif node.args[0] in data:  # a data-dependent table: its rule says it is refused
                data.add(node)
            continue
        if _is_int_tensor_node(node) and family is Family.MOVEMENT:
            if any(i in id_candidates for i in ins):
                id_candidates.add(node)
            continue
        if node.target is operator.getitem:
            if node.args[0] in data and _is_float_node(node):
                data.add(node)
            continue
        if family is Family.SHAPE_ONLY:
            continue  # zeros_like(x) and friends: constants of x's shape
        if _is_float_node(node) and any(i in data for i in ins):
            data.add(node)
    # Token-id nodes are data only on the path from an integer input to an embedding.
    stack = [e.args[1] for e in embeddings]
    while stack:
        node = stack.pop()
        if node in data or node not in id_candidates:
            continue
        data.add(node)
        stack.extend(i for i in input_nodes(node) if i in id_candidates)
    g.data = data


def _mark_gates(g: CapturedGraph) -> None:
    """Probability-like tensors: outputs of gate ops and what stays a gate."""
    gates: set[fx.Node] = set()
    for node in g.nodes:
        if node.op != "call_function":
            continue
        if _family(node) is Family.GATE or _keeps_gate(node, gates, g.data):
            gates.add(node)
    g.gates = gates


def _keeps_gate(node: fx.Node, gates: set[fx.Node], data: set[fx.Node]) -> bool:
    """Values that stay probability-like when computed from a gate.

    Moves and selections of a gate (MoE top-k routing weights, ``gather``), a gate divided by
    anything (top-k weights renormalised by their sum) and a gate scaled by a constant (a
    routing scale factor) are gates (the op's ``keeps_gate``); ``1 − gate`` too
    (``complement_arg``).
    """
    spec = _spec(node)
    if spec.is_complement(node):  # before the first operand: ``rsub(gate, 1)`` is 1 − gate
        return any(i in gates for i in node.all_input_nodes)
    first = node.args[0] if node.args else None
    if not isinstance(first, fx.Node) or first not in gates:
        return False
    if node.target is operator.getitem:
        return True
    passage = spec.gate_passage
    if passage == "constant":
        return not any(isinstance(a, fx.Node) and a in data for a in node.args[1:])
    return passage == "any"


def _mark_attention_probs(g: CapturedGraph) -> None:
    """Softmax nodes whose output reaches a data·data matrix product through moves only."""
    found: set[fx.Node] = set()
    for node in g.nodes:
        if node.op != "call_function" or not _spec(node).attention_probs:
            continue
        chain, frontier, feeds = {node}, [node], False
        while frontier:
            current = frontier.pop()
            for user in current.users:
                if user.op != "call_function" or user not in g.data:
                    continue
                if _is_data_product(user, g.data):
                    feeds = True
                elif _family(user) is Family.MOVEMENT and user.args[0] is current:
                    chain.add(user)
                    frontier.append(user)
        if feeds:
            found |= chain
    g.attention_probs = found


def _is_data_product(node: fx.Node, data: set[fx.Node]) -> bool:
    """A matrix product of two data tensors (attention's ``A·V``)."""
    if not _spec(node).data_product:
        return False
    return sum(isinstance(a, fx.Node) and a in data for a in node.args[:2]) == 2


def _shape(node: Any) -> tuple | None:
    vals = node_vals(node) if isinstance(node, fx.Node) else []
    return tuple(vals[0].shape) if len(vals) == 1 and isinstance(vals[0], torch.Tensor) else None


def _consumers(g: CapturedGraph, node: fx.Node) -> list[fx.Node]:
    """Users that read the value (metadata checks such as _assert_tensor_metadata do not)."""
    return [u for u in node.users if u.op == "output" or u in g.data]


def _bias_free_affine(g: CapturedGraph, node: fx.Node) -> bool:
    """An affine op with constant weights and no bias of its own."""
    if node.op != "call_function" or node not in g.data or len(_consumers(g, node)) != 1:
        return False
    if not _spec(node).accepts_bias_add(node):
        return False
    operands = [a for a in node.args[:2] if isinstance(a, fx.Node)]
    return sum(a in g.data for a in operands) == 1


def _mark_bias_adds(g: CapturedGraph) -> None:
    """Find ``affine(x) + c`` with a constant ``c`` that keeps the affine output's shape."""
    for node in g.nodes:
        if node.op != "call_function" or not _spec(node).adds_bias(node):
            continue
        a, b = node.args[:2]
        for affine, const in ((a, b), (b, a)):
            if not isinstance(affine, fx.Node) or not _bias_free_affine(g, affine):
                continue
            if isinstance(const, fx.Node) and const in g.data:
                continue
            if _spec(node).bias_sign < 0 and affine is not a:
                continue  # c - affine(x) negates the weights: leave it to the add rule
            if _shape(node) != _shape(affine):
                continue
            g.bias_add[affine] = node
            g.bias_source[node] = affine
            break


def _constant_scalar(g: CapturedGraph, value: Any) -> float | None:
    """The value of a constant one-element argument (a number, a lifted constant tensor or a
    ``full``/``full_like``/``scalar_tensor`` node), or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, fx.Node) or value in g.data:
        return None
    while value.op == "call_function" and _spec(value).identity:
        value = value.args[0]  # lift_fresh_copy / clone / _to_copy of a constant
        if not isinstance(value, fx.Node):
            return _constant_scalar(g, value)
    if value in g.state_targets:
        kind, target = g.state_targets[value]
        tensor = g.program.constants.get(target) if kind == InputKind.CONSTANT_TENSOR else None
        if isinstance(tensor, torch.Tensor) and tensor.numel() == 1:
            return float(tensor)
        return None
    fill_arg = _spec(value).fill_arg if value.op == "call_function" else None
    if fill_arg is not None and len(value.args) > fill_arg:
        fill = value.args[fill_arg]  # full(size, 2.0), scalar_tensor(2.0)
        if isinstance(fill, (int, float)) and not isinstance(fill, bool):
            return float(fill)
    return None


def _mark_saturation(g: CapturedGraph) -> None:
    """For affine nodes whose output feeds only an activation, remember its saturation range."""
    for node in g.nodes:
        if node.op != "call_function" or _family(node) is not Family.AFFINE:
            continue
        current = node
        while True:
            users = _consumers(g, current)
            if len(users) != 1:
                break
            user = users[0]
            if user.op != "call_function":
                break
            if (
                (user.target is operator.getitem and user.args[1] == 0)
                or _spec(user).bijective
                or g.bias_source.get(user) is current
            ):
                current = user
                continue
            bounds = _spec(user).saturation_bounds(user, lambda a: _constant_scalar(g, a))
            if bounds is not None:
                chained, chain = _chained_bounds(g, user, bounds)
                g.saturation[node] = chained
                live = _live_sides(g, chain, chained)
                if live is not None:
                    g.live_saturation[node] = live
            break


def _live_sides(
    g: CapturedGraph, chain: list[fx.Node], bounds: tuple
) -> tuple[float | None, float | None] | None:
    """``bounds`` without a low side that can never carry relevance (None: neither side can).

    Below its low bound a ReLU-like activation outputs exactly 0; if every consumer of the
    activation gives zero-valued elements exactly zero relevance, the saturated-low outputs
    receive none, and the rule's low-side shares are never used.
    """
    low, high = bounds
    first = _spec(chain[0])
    zero_below = (first.zero_below and len(chain) == 1) or (
        low == 0.0 and all(_spec(n).clamps for n in chain)
    )
    if low is not None and zero_below and _zero_stays_silent(g, chain[-1], {}):
        low = None
    return None if low is None and high is None else (low, high)


def _zero_stays_silent(g: CapturedGraph, node: fx.Node, memo: dict[fx.Node, bool]) -> bool:
    """Whether every rule downstream of ``node`` gives its zero-valued elements no relevance.

    Affine rules share by contributions ``w·x`` (zero for ``x = 0``): they end the question.
    Products and quotients of two data tensors are zero where an operand is, and movement and
    selection keep values: for them the question moves on to their own consumers. Anything
    else (an output, a normalisation, an elementwise function with ``f(0) ≠ 0``) may not.
    """
    if node in memo:
        return memo[node]
    memo[node] = False  # cycles cannot occur in a DAG; this guards re-entry only
    silent = True
    for user in _consumers(g, node):
        if user.op != "call_function":
            silent = False
        elif user.target is operator.getitem:
            silent = _zero_stays_silent(g, user, memo)
        else:
            spec = _spec(user)
            if spec.family is Family.AFFINE and not spec.normalises:
                operands = [a for a in user.all_input_nodes if a in g.data]
                sums = spec.bias_sign is not None or spec.complement_arg is not None  # a ± b
                if len(operands) > 1 and not sums:  # a product of two data tensors is zero
                    silent = _zero_stays_silent(g, user, memo)  # where an operand is: follow
            elif spec.family is Family.ATTENTION:
                pass  # its rules share by contributions of each operand
            elif spec.family in (Family.MOVEMENT, Family.SELECTION) and spec.saturation is None:
                silent = _zero_stays_silent(g, user, memo)
            else:
                silent = False
        if not silent:
            break
    memo[node] = silent
    return silent


def _chained_bounds(
    g: CapturedGraph, act: fx.Node, bounds: tuple
) -> tuple[tuple, list[fx.Node]]:
    """Clamp-like ops in a row (``maximum(minimum(y, 1), −1)``) saturate at both bounds.

    Returns the combined bounds and the ops of the row whose bounds they combine.
    """
    low, high = bounds
    chain = [act]
    while _spec(chain[-1]).clamps:
        users = _consumers(g, chain[-1])
        if len(users) != 1 or not _spec(users[0]).clamps:
            break
        more = _spec(users[0]).saturation_bounds(users[0], lambda a: _constant_scalar(g, a))
        if more is None:
            break
        chain.append(users[0])
        if more[0] is not None:
            low = more[0] if low is None else max(low, more[0])
        if more[1] is not None:
            high = more[1] if high is None else min(high, more[1])
    return (low, high), chain


def relevant_nodes(g: CapturedGraph, output: fx.Node) -> list[fx.Node]:
    """Data nodes from which ``output`` can be reached, in topological order."""
    reach: set[fx.Node] = set()
    stack = [output]
    while stack:
        node = stack.pop()
        if node in reach or node not in g.data:
            continue
        reach.add(node)
        stack.extend(input_nodes(node))
    return [n for n in g.nodes if n in reach]


def blocking_node(g: CapturedGraph, output: fx.Node) -> fx.Node | None:
    """Why an output that depends on an input carries no relevance: the first op on a path from
    a user input to ``output`` whose result is not a relevance-carrying float tensor (a complex
    FFT, a bucketize into ids, an embedding bag), or None if the output ignores the inputs."""
    depends: set[fx.Node] = set(g.user_inputs)
    for node in g.nodes:
        if node.op == "call_function" and any(i in depends for i in node.all_input_nodes):
            if any(isinstance(v, torch.Tensor) for v in node_vals(node)):  # not a size read
                depends.add(node)
    ancestors: set[fx.Node] = set()
    stack = [output]
    while stack:
        node = stack.pop()
        if node in ancestors:
            continue
        ancestors.add(node)
        stack.extend(node.all_input_nodes)
    cut = [n for n in g.nodes if n.op == "call_function" and n in depends and n in ancestors
           and n not in g.data]
    # moves of integer ids (a view before an embedding bag) are not the reason: name the op
    named = [n for n in cut if _family(n) is not Family.MOVEMENT]
    return (named or cut or [None])[0]


def check_rules(g: CapturedGraph, nodes: list[fx.Node]) -> None:
    """Fail before any computation if an op on the relevance path has no rule."""
    for node in nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        if registry.lookup(node.target) is None:
            raise UnsupportedOperationError(describe_unsupported(node))


def describe_unsupported(node: fx.Node, why: str | None = None) -> str:
    target = node.target
    if target is torch.ops.higher_order.with_effects:  # side-effecting op wrapped by export
        target = node.args[1]
    op = str(target)
    source = user_source_line(node)
    module = node.meta.get("nn_module_stack")
    where = ""
    if module:
        path, cls = list(module.values())[-1]
        cls_name = getattr(cls, "__name__", str(cls)).rsplit(".", 1)[-1]
        where = f" in module '{path}' ({cls_name})" if path else f" in {cls_name}.forward"
    what = why or f"no relevance rule for ATen op '{op}'"
    return (
        f"{what} (graph node '{node.name}'){where}.\n"
        f"  source: {source}\n"
        "  dlbacktrace never passes relevance through an op silently. Register a rule with "
        f"dlbacktrace.register_rule(torch.ops.{op.rsplit('.', 1)[0]}, rule_fn), or rewrite "
        "this part of the model with supported ops."
    )


def user_source_line(node: fx.Node) -> str:
    trace = node.meta.get("stack_trace") or ""
    lines = [ln.strip() for ln in trace.strip().splitlines() if ln.strip()]
    # The last 'File ...' frame is the user's own code; the line after it is the statement.
    for i in range(len(lines) - 1, -1, -1):
        if lines[i].startswith("File "):
            code = lines[i + 1] if i + 1 < len(lines) else ""
            return f"{lines[i]}: {code}" if code else lines[i]
    return "unknown (no stack trace in the export metadata)"


def module_output_nodes(g: CapturedGraph, names: list[str] | None) -> dict[str, fx.Node]:
    """The node holding each named module's output (last node of its scope used outside it)."""
    scopes: dict[str, list[fx.Node]] = {}
    for node in g.nodes:
        stack = node.meta.get("nn_module_stack") or {}
        for path, _cls in stack.values():
            if path:
                scopes.setdefault(path, []).append(node)
    if names is not None:
        unknown = [n for n in names if n not in scopes]
        if unknown:
            known = ", ".join(sorted(scopes)[:20])
            raise KeyError(f"unknown module name(s) {unknown}; known modules include: {known}")
    result: dict[str, fx.Node] = {}
    for path, members in scopes.items():
        if names is not None and path not in names:
            continue
        inside = set(members)
        exits = [n for n in members if any(u not in inside for u in n.users) and n in g.data]
        if exits:
            result[path] = exits[-1]
    return result
