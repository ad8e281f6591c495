"""ATen op → relevance rule, plus the op families the graph analysis needs to know.

Rules are looked up by op packet (``aten.add``) so every overload of an op shares its rule.
Users extend the table with :func:`register_rule`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from dlbacktrace.engine.rules import arithmetic, attention, linear_ops, movement, norm

aten = torch.ops.aten

Rule = Callable[..., Any]

_RULES: dict[Any, Rule] = {}


def _register(ops: list, rule: Rule) -> None:
    for op in ops:
        _RULES[op] = rule


def _packets(*names: str) -> list:
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


# Activations and other elementwise nonlinear ops: identity (saturation is handled upstream).
ACTIVATIONS = _packets(
    "relu", "gelu", "silu", "tanh", "sigmoid", "hardsigmoid", "hardswish", "hardtanh", "relu6",
    "leaky_relu", "elu", "selu", "celu", "softplus", "mish", "prelu", "_prelu_kernel", "exp",
    "log", "pow", "rsqrt", "sqrt", "neg", "abs", "_softmax", "softmax", "_log_softmax",
    "log_softmax", "erf", "sin", "cos", "reciprocal", "square", "clamp", "clamp_min",
    "clamp_max", "logit", "sign", "gelu_", "log1p", "expm1", "softsign", "threshold",
)
IDENTITY_MOVES = _packets(
    "clone", "alias", "contiguous", "_to_copy", "to", "lift_fresh_copy", "detach",
)
RESHAPES = _packets(
    "view", "_unsafe_view", "reshape", "squeeze", "unsqueeze", "flatten", "unflatten",
    "view_as", "_reshape_alias",
)
GENERIC_MOVES = _packets(
    "cat", "concat", "stack", "split", "split_with_sizes", "chunk", "unbind", "slice", "select",
    "index", "index_select", "gather", "flip", "constant_pad_nd", "pad", "reflection_pad1d",
    "reflection_pad2d", "replication_pad1d", "replication_pad2d", "narrow", "roll", "repeat",
    "tile", "movedim", "diagonal", "take_along_dim", "repeat_interleave", "pixel_shuffle",
    "pixel_unshuffle", "channel_shuffle", "upsample_nearest1d", "upsample_nearest2d",
    "upsample_nearest3d", "_upsample_nearest_exact1d", "_upsample_nearest_exact2d",
    "_upsample_nearest_exact3d", "scatter", "slice_scatter", "select_scatter",
    "unfold", "as_strided", "masked_scatter", "tril", "triu", "zero_pad2d", "copy",
)
SELECTIONS = _packets(
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices",
    "max_pool3d_with_indices", "adaptive_max_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d", "max", "min", "amax", "amin", "topk", "sort", "maximum", "minimum",
    "fmax", "fmin", "kthvalue", "median", "cummax", "cummin",
)
CONVOLUTIONS = _packets(
    "convolution", "_convolution", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
    "conv_transpose2d", "conv_transpose3d",
)
WEIGHT_FREE = _packets(
    "avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
    "adaptive_avg_pool3d", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "mean", "sum",
    "upsample_bilinear2d", "upsample_linear1d", "upsample_trilinear3d",
    "_upsample_bilinear2d_aa", "cumsum",
)

_SELECTION_SET = set(SELECTIONS)

_register(ACTIVATIONS, movement.identity)
_register(IDENTITY_MOVES, movement.identity)
_register(RESHAPES, movement.reshape_like)
_register(GENERIC_MOVES + SELECTIONS, movement.adjoint)
_register(_packets("minimum", "maximum", "fmin", "fmax"), movement.clamp_like)
_register(_packets("copy"), movement.copy)
_register(_packets("type_as"), movement.type_as)
_register(_packets("dropout", "feature_dropout", "alpha_dropout"), movement.dropout)
_register(_packets("permute"), movement.permute)
_register(_packets("transpose", "t", "swapaxes"), movement.transpose)
_register(_packets("expand", "expand_as", "broadcast_to"), movement.expand)
_register(_packets("embedding"), movement.embedding)
_register(_packets("where"), movement.where)
_register(_packets("masked_fill"), movement.masked_fill)
_register(CONVOLUTIONS, linear_ops.convolution)
_register(WEIGHT_FREE, linear_ops.weight_free)
# Summing maps (DESIGN.md 2.3): affine, never the movement adjoint (which copies relevance).
SUMMING = _packets("index_add", "scatter_add", "col2im", "index_put", "_unsafe_index_put",
                   "scatter_reduce", "scatter")
_register(SUMMING, linear_ops.summing)
_register(_packets("im2col"), movement.adjoint)
# Interpolation with signed weights (bicubic): affine, magnitudes from the weights.
SIGNED_INTERPOLATION = _packets("upsample_bicubic2d", "_upsample_bicubic2d_aa")
_register(SIGNED_INTERPOLATION, linear_ops.interpolation)
_register(_packets("linear"), linear_ops.linear)
_register(_packets("mm", "matmul", "bmm"), linear_ops.matmul_like)
_register(_packets("addmm", "baddbmm"), linear_ops.addmm)
_register(_packets("add", "sub", "rsub"), arithmetic.add_sub)
_register(_packets("mul"), arithmetic.mul)
_register(_packets("div"), arithmetic.div)
_register(_packets("_native_batch_norm_legit_no_training"), norm.batch_norm_eval)
_register(_packets("batch_norm"), norm.batch_norm)
_register(_packets("_native_batch_norm_legit"), norm.batch_norm_with_input_stats)
_register(_packets("layer_norm", "native_layer_norm"), norm.layer_norm)
_register(_packets("group_norm", "native_group_norm"), norm.group_norm)
_register(_packets("rms_norm"), norm.rms_norm)
_register(_packets("scaled_dot_product_attention"), attention.sdpa)
_register(_packets("_softmax", "softmax"), attention.softmax)

AFFINE = set(
    CONVOLUTIONS + WEIGHT_FREE + SIGNED_INTERPOLATION + _packets(
        "linear", "mm", "matmul", "bmm", "addmm", "baddbmm", "add", "sub", "rsub", "mul", "div",
        "_native_batch_norm_legit_no_training", "_native_batch_norm_legit", "batch_norm",
        "layer_norm", "native_layer_norm",
        "group_norm", "native_group_norm", "rms_norm",
    )
)
_MOVEMENT = set(IDENTITY_MOVES + RESHAPES + GENERIC_MOVES) | set(
    _packets("permute", "transpose", "t", "swapaxes", "expand", "expand_as", "broadcast_to",
             "dropout", "type_as")
)
_BIJECTIVE = set(IDENTITY_MOVES + RESHAPES) | set(_packets("permute", "transpose", "t"))
_GATES = set(_packets("sigmoid", "hardsigmoid", "_softmax", "softmax"))

# Saturation ranges of DESIGN.md 2.1: (low, high); None = unbounded on that side.
_SATURATION: dict[Any, tuple[float | None, float | None]] = {
    aten.relu: (0.0, None),
    aten.relu6: (0.0, 6.0),
    aten.sigmoid: (-4.0, 4.0),
    aten.hardsigmoid: (-4.0, 4.0),
    aten.tanh: (-2.0, 2.0),
    aten.silu: (-6.0, None),
    aten.gelu: (-6.0, None),
    aten.mish: (-6.0, None),
}


def _packet(target: Any) -> Any:
    return getattr(target, "overloadpacket", target)


def lookup(target: Any) -> Rule | None:
    return _RULES.get(_packet(target))


def register_rule(op: Any, rule: Rule) -> None:
    """Register (or replace) the relevance rule of an ATen op.

    ``rule(call, R) -> Contribution``: ``call`` holds the node, its materialised args and output
    (:class:`dlbacktrace.engine.rules.base.Call`); ``R`` is the relevance of the output with a
    leading
    stream dimension. Return the relevance of each data input and the absorbed amount.
    """
    _RULES[_packet(op)] = rule


def is_movement(target: Any) -> bool:
    return _packet(target) in _MOVEMENT


def is_bijective(target: Any) -> bool:
    return _packet(target) in _BIJECTIVE


def is_embedding(target: Any) -> bool:
    return _packet(target) is aten.embedding


def is_gate_op(target: Any) -> bool:
    return _packet(target) in _GATES


# Ops whose result depends only on the shape/dtype of their data input, never on its values:
# constants, not data (DESIGN.md 2: they never receive relevance).
_SHAPE_ONLY = set(_packets(
    "full_like", "zeros_like", "ones_like", "empty_like", "new_zeros", "new_ones", "new_full",
    "new_empty", "empty_strided", "scalar_tensor", "sym_size", "sym_numel",
))


def is_shape_only(target: Any) -> bool:
    return _packet(target) in _SHAPE_ONLY


def is_softmax(target: Any) -> bool:
    return _packet(target) in (aten._softmax, aten.softmax)


_DATA_PRODUCTS = set(_packets("mm", "matmul", "bmm"))


def is_data_product(node: fx.Node, data: set[fx.Node]) -> bool:
    """A matrix product of two data tensors (attention's ``A·V``)."""
    if _packet(node.target) not in _DATA_PRODUCTS:
        return False
    return sum(isinstance(a, fx.Node) and a in data for a in node.args[:2]) == 2


_BIAS_FREE = set(_packets("mm", "matmul", "bmm"))
_WITH_OPTIONAL_BIAS = {aten.linear: 2, **{c: 2 for c in CONVOLUTIONS}}


def accepts_bias_add(node: fx.Node) -> bool:
    """A weight op without its own bias, whose bias may be applied by a following add."""
    packet = _packet(node.target)
    if packet in _BIAS_FREE:
        return True
    index = _WITH_OPTIONAL_BIAS.get(packet)
    if index is None:
        return False
    bias = node.args[index] if len(node.args) > index else node.kwargs.get("bias")
    return bias is None


def is_bias_add_op(node: fx.Node) -> bool:
    """``add(a, b)`` / ``sub(a, b)`` with the default ``alpha`` of 1."""
    if _packet(node.target) not in (aten.add, aten.sub) or len(node.args) < 2:
        return False
    return node.kwargs.get("alpha", 1) == 1


def is_sub(node: fx.Node) -> bool:
    return _packet(node.target) is aten.sub


def is_selection(target: Any) -> bool:
    return _packet(target) in _SELECTION_SET


def is_gate_preserving(node: fx.Node, gates: set[fx.Node], data: set[fx.Node]) -> bool:
    """Values that stay probability-like when computed from a gate.

    Moves and selections of a gate (MoE top-k routing weights, ``gather``), a gate divided by
    anything (top-k weights renormalised by their sum) and a gate scaled by a constant (a
    routing scale factor) are gates; ``1 − gate`` too (see :func:`is_complement`).
    """
    first = node.args[0] if node.args else None
    if not isinstance(first, fx.Node) or first not in gates:
        return is_complement(node) and any(i in gates for i in node.all_input_nodes)
    packet = _packet(node.target)
    if node.target is operator.getitem or packet in _MOVEMENT or packet in _SELECTION_SET:
        return True
    if packet is aten.div:
        return True
    if packet is aten.mul:
        return not any(isinstance(a, fx.Node) and a in data for a in node.args[1:])
    return False


def is_affine(target: Any) -> bool:
    return _packet(target) in AFFINE


def is_complement(node: fx.Node) -> bool:
    """``1 − x`` (rsub(x, 1) or sub(1, x)): the complement of a gate is a gate."""
    packet = _packet(node.target)
    if packet is aten.rsub:
        return len(node.args) > 1 and node.args[1] == 1
    if packet is aten.sub:
        return len(node.args) > 1 and node.args[0] == 1 and isinstance(node.args[1], fx.Node)
    return False


_CLAMP_LIKE = set(_packets("hardtanh", "clamp", "clamp_min", "clamp_max", "minimum", "maximum"))


def is_clamp_like(target: Any) -> bool:
    return _packet(target) in _CLAMP_LIKE


def is_identity_move(target: Any) -> bool:
    return _packet(target) in set(IDENTITY_MOVES)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def saturation_bounds(
    node: fx.Node, constant: Callable[[Any], float | None] | None = None
) -> tuple[float | None, float | None] | None:
    """The saturation range ``(l, u)`` of an activation-like op, or None.

    Clamp-like selection saturates at its bounds (DESIGN.md 2.3): hardtanh, clamp,
    clamp_min/clamp_max and minimum/maximum against a constant; ``constant(arg)`` gives the
    value of a constant tensor argument when the graph knows it.
    """
    packet = _packet(node.target)

    def arg(i: int, name: str | None = None, default: Any = None) -> Any:
        return node.args[i] if len(node.args) > i else node.kwargs.get(name, default)

    if packet is aten.hardtanh:
        return (float(arg(1, "min_val", -1.0)), float(arg(2, "max_val", 1.0)))
    if packet is aten.clamp:
        low, high = _number(arg(1, "min")), _number(arg(2, "max"))
        return (low, high) if low is not None or high is not None else None
    if packet in (aten.clamp_min, aten.clamp_max):
        bound = _number(arg(1))
        if bound is None:
            return None
        return (bound, None) if packet is aten.clamp_min else (None, bound)
    if packet in (aten.minimum, aten.maximum) and constant is not None:
        bounds = [b for b in (constant(a) for a in node.args[:2]) if b is not None]
        if len(bounds) != 1:
            return None
        bound = bounds[0]
        return (None, bound) if packet is aten.minimum else (bound, None)
    return _SATURATION.get(packet)

