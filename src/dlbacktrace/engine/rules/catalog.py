"""Every built-in op, declared once with the public :func:`register_rule` (rule, family, traits).

Ops that this torch build does not have are skipped, so declarations for older exports can stay.
Adding an op is one line here (and its rule in the family's module).
"""

from __future__ import annotations

from typing import Any

import torch

from dlbacktrace.engine.rules import arithmetic, attention, linear_ops, movement, norm
from dlbacktrace.engine.rules.registry import register_rule
from dlbacktrace.engine.rules.spec import CONSTANT_OPERAND, BoundArg, Family, Rule

aten = torch.ops.aten

AFFINE = Family.AFFINE
SUMMING = Family.SUMMING
MOVEMENT = Family.MOVEMENT
SELECTION = Family.SELECTION
GATE = Family.GATE
ELEMENTWISE = Family.ELEMENTWISE


def _declare(names: str, rule: Rule | None, family: Family, **traits: Any) -> None:
    """Declare each op of the whitespace-separated ``names`` that exists in this build."""
    for name in names.split():
        if hasattr(aten, name):
            register_rule(getattr(aten, name), rule, family, **traits)


# ---- elementwise nonlinear ops: identity (saturation is handled by the producer, DESIGN 2.1)
_declare("relu", movement.identity, ELEMENTWISE, saturation=(0.0, None), zero_below=True)
_declare("relu6", movement.identity, ELEMENTWISE, saturation=(0.0, 6.0), zero_below=True)
_declare("tanh", movement.identity, ELEMENTWISE, saturation=(-2.0, 2.0))
_declare("silu gelu mish", movement.identity, ELEMENTWISE, saturation=(-6.0, None))
_declare("hardtanh", movement.identity, ELEMENTWISE,
         saturation=(BoundArg(1, "min_val", -1.0), BoundArg(2, "max_val", 1.0)))
_declare("clamp", movement.identity, ELEMENTWISE,
         saturation=(BoundArg(1, "min"), BoundArg(2, "max")))
_declare("clamp_min", movement.identity, ELEMENTWISE, saturation=(BoundArg(1), None))
_declare("clamp_max", movement.identity, ELEMENTWISE, saturation=(None, BoundArg(1)))
_declare(
    "hardswish leaky_relu elu selu celu softplus prelu _prelu_kernel exp log pow rsqrt sqrt neg "
    "abs _log_softmax log_softmax erf sin cos reciprocal square logit sign gelu_ log1p expm1 "
    "softsign threshold",
    movement.identity, ELEMENTWISE,
)
_declare("where", movement.where, ELEMENTWISE)
_declare("masked_fill", movement.masked_fill, ELEMENTWISE)

# ---- gates: probability-like outputs (DESIGN.md 2.2)
_declare("sigmoid", movement.identity, GATE, saturation=(-4.0, 4.0))
_declare("hardsigmoid", movement.identity, GATE, saturation=(-4.0, 4.0), zero_below=True)
_declare("_softmax softmax", attention.softmax, GATE, attention_probs=True)

# ---- data movement: index maps, routed by their exact adjoint (DESIGN.md 2.3)
_declare("clone alias contiguous _to_copy to lift_fresh_copy detach", movement.identity,
         MOVEMENT, identity=True)
_declare("view _unsafe_view reshape squeeze unsqueeze flatten unflatten view_as _reshape_alias",
         movement.reshape_like, MOVEMENT, bijective=True)
_declare("permute", movement.permute, MOVEMENT, bijective=True)
_declare("transpose t swapaxes", movement.transpose, MOVEMENT, bijective=True)
_declare("expand expand_as broadcast_to", movement.expand, MOVEMENT)
_declare("dropout feature_dropout alpha_dropout", movement.dropout, MOVEMENT)
_declare("type_as", movement.type_as, MOVEMENT)
_declare("copy", movement.copy, MOVEMENT)
_declare("slice", movement.slice_adjoint, MOVEMENT)
_declare("select", movement.select_adjoint, MOVEMENT)
_declare("index_select", movement.index_select_adjoint, MOVEMENT)
_declare("cat concat", movement.cat_adjoint, MOVEMENT)
_declare("constant_pad_nd pad", movement.pad_adjoint, MOVEMENT)
_declare(
    "stack split split_with_sizes chunk unbind index "
    "gather flip reflection_pad1d reflection_pad2d replication_pad1d "
    "replication_pad2d narrow roll repeat tile movedim diagonal take_along_dim "
    "repeat_interleave pixel_shuffle pixel_unshuffle channel_shuffle upsample_nearest1d "
    "upsample_nearest2d upsample_nearest3d _upsample_nearest_exact1d _upsample_nearest_exact2d "
    "_upsample_nearest_exact3d slice_scatter select_scatter unfold as_strided masked_scatter "
    "tril triu zero_pad2d im2col",
    movement.adjoint, MOVEMENT,
)
# scatter overwrites (movement) unless it reduces with "add"; its rule tells the two apart.
_declare("scatter", linear_ops.summing, MOVEMENT)

# ---- selection: winner takes all
_declare(
    "max_pool1d max_pool2d max_pool3d max min amax amin topk sort kthvalue median cummax cummin",
    movement.adjoint, SELECTION,
)
# pooling that returns its arg-max indices: routed by the recorded indices, no re-run
_declare(
    "max_pool2d_with_indices max_pool3d_with_indices adaptive_max_pool1d adaptive_max_pool2d "
    "adaptive_max_pool3d",
    movement.max_pool, SELECTION,
)
# against a constant, minimum/maximum clamp: the constant is a saturation bound (DESIGN 2.3)
_declare("minimum", movement.clamp_like, SELECTION, saturation=(None, CONSTANT_OPERAND))
_declare("maximum", movement.clamp_like, SELECTION, saturation=(CONSTANT_OPERAND, None))
_declare("fmin fmax", movement.clamp_like, SELECTION)

# ---- affine ops (DESIGN.md 2.1)
_declare(
    "convolution _convolution conv1d conv2d conv3d conv_transpose1d conv_transpose2d "
    "conv_transpose3d",
    linear_ops.convolution, AFFINE, bias_arg=2,
)
_declare("linear", linear_ops.linear, AFFINE, bias_arg=2, saturated_sites=True)
_declare("mm matmul bmm", linear_ops.matmul_like, AFFINE, bias_free=True, data_product=True)
_declare("addmm baddbmm", linear_ops.addmm, AFFINE)
_declare(
    "avg_pool1d avg_pool2d avg_pool3d adaptive_avg_pool1d adaptive_avg_pool2d "
    "adaptive_avg_pool3d _adaptive_avg_pool2d _adaptive_avg_pool3d mean sum "
    "upsample_bilinear2d upsample_linear1d upsample_trilinear3d _upsample_bilinear2d_aa cumsum",
    linear_ops.weight_free, AFFINE,
)
# interpolation with signed weights (bicubic): magnitudes from the weights themselves
_declare("upsample_bicubic2d _upsample_bicubic2d_aa", linear_ops.interpolation, AFFINE)
_declare("add", arithmetic.add_sub, AFFINE, bias_sign=1)
_declare("sub", arithmetic.add_sub, AFFINE, bias_sign=-1, complement_arg=0)
_declare("rsub", arithmetic.add_sub, AFFINE, complement_arg=1)
_declare("mul", arithmetic.mul, AFFINE, keeps_gate="constant")  # a gate times a constant
_declare("div", arithmetic.div, AFFINE, keeps_gate="any")  # top-k weights over their sum
_declare("_native_batch_norm_legit_no_training", norm.batch_norm_eval, AFFINE)
_declare("batch_norm", norm.batch_norm, AFFINE)
_declare("_native_batch_norm_legit", norm.batch_norm_with_input_stats, AFFINE, normalises=True)
_declare("layer_norm native_layer_norm", norm.layer_norm, AFFINE, normalises=True)
_declare("group_norm native_group_norm", norm.group_norm, AFFINE, normalises=True)
_declare("rms_norm", norm.rms_norm, AFFINE, normalises=True)

# ---- summing maps: affine, never the movement adjoint (which copies relevance; DESIGN 2.3)
_declare("index_add scatter_add col2im index_put _unsafe_index_put scatter_reduce",
         linear_ops.summing, SUMMING)

# ---- the rest
_declare("embedding", movement.embedding, Family.EMBEDDING)
_declare("scaled_dot_product_attention", attention.sdpa, Family.ATTENTION)
# constants of a data tensor's shape: never data, so no rule (DESIGN.md 2)
_declare(
    "zeros_like ones_like empty_like new_zeros new_ones new_full new_empty empty_strided "
    "sym_size sym_numel",
    None, Family.SHAPE_ONLY,
)
_declare("full full_like", None, Family.SHAPE_ONLY, fill_arg=1)
_declare("scalar_tensor", None, Family.SHAPE_ONLY, fill_arg=0)
