"""Op zoo: small models built around uncommon ops, explained in both modes.

Each case either raises a dlbacktrace error (never a raw torch exception), or returns an
explanation that balances its ledger, is finite, is bit-identical on a rerun, is non-negative in
default mode and puts exactly zero relevance on input elements the output provably ignores.
Known defects are kept as strict xfails so a fix shows up as an XPASS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dlbacktrace import Backtrace, ConservationError, DLBacktraceError

pytestmark = pytest.mark.filterwarnings("ignore:The reduce argument of torch.scatter")

F64 = torch.float64
GEN = torch.Generator().manual_seed(0)
torch.manual_seed(0)


def rx(*shape: int, dtype: torch.dtype = F64, scale: float = 1.0, seed: int | None = None):
    """Random data; ``seed`` pins it for cases whose outcome depends on the exact values."""
    gen = GEN if seed is None else torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=gen, dtype=F64).mul(scale).to(dtype)


def lin(i: int, o: int, bias: bool = True, dtype: torch.dtype = F64, seed: int | None = None):
    if seed is None:
        return nn.Linear(i, o, bias=bias).to(dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return nn.Linear(i, o, bias=bias).to(dtype)


def idx(*values: int) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


def _overwrite(x: torch.Tensor) -> torch.Tensor:
    """``y[:, 1:3] = 0.5``: an index_put overwrite with a constant."""
    y = x.clone()
    y[:, 1:3] = 0.5
    return y


def _into_zeros(x: torch.Tensor) -> torch.Tensor:
    y = torch.zeros(x.shape[0], 6, dtype=x.dtype)
    y[:, :3] = x[:, :3]
    return y


def _put(x: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    y = x.clone()
    y[:, cols] = values
    return y


class Net(nn.Module):
    """``forward = fn(self, *inputs)``; keyword tensors become buffers, modules submodules."""

    def __init__(self, fn: Callable[..., Any], **parts: Any) -> None:
        super().__init__()
        for name, part in parts.items():
            if isinstance(part, torch.Tensor):
                self.register_buffer(name, part)
            else:
                setattr(self, name, part)
        self.fn = fn

    def forward(self, *inputs: torch.Tensor) -> Any:
        return self.fn(self, *inputs)


@dataclass
class Zoo:
    """A model, its inputs, which output to explain and the input elements it ignores."""

    model: nn.Module
    inputs: tuple
    ignored: dict[int, Any] = field(default_factory=dict)  # input index -> index expression
    output: str | int | None = None
    tol: float = 1e-5
    defect: str | dict[str, str] | None = None  # known defect, per mode if a dict (xfail)
    supported: bool = False  # the library documents support: a library error is a defect too
    mentions: str | None = None  # a refusal must name this op


ZOO: dict[str, Zoo] = {}


def zoo(name: str, model: nn.Module, *inputs: torch.Tensor, **kw: Any) -> None:
    assert name not in ZOO
    ZOO[name] = Zoo(model.eval(), inputs, **kw)


ALL = slice(None)
B = 3

# ---- summing and scattering ---------------------------------------------------------------------
zoo("index_add_const_base",
    Net(lambda m, x: m.l(m.base.expand(B, 6).index_add(1, m.i, x[:, :4])),
        l=lin(6, 3), base=rx(1, 6), i=idx(0, 2, 2, 5)),
    rx(B, 8), ignored={0: (ALL, slice(4, None))})
zoo("index_add_data_base",
    Net(lambda m, x: m.l(x[:, :6].index_add(1, m.i, x[:, 6:10])),
        l=lin(6, 3), i=idx(1, 1, 3, 0)),
    rx(B, 12), ignored={0: (ALL, slice(10, None))})
zoo("index_add_alpha",
    Net(lambda m, x: m.l(x[:, :6].index_add(1, m.i, x[:, 6:10], alpha=-2.0)),
        l=lin(6, 3), i=idx(1, 1, 3, 0)),
    rx(B, 10))
zoo("index_put_accumulate",
    Net(lambda m, x: m.l(torch.index_put(x[:, :6].t(), (m.i,), x[:, 6:10].t(),
                                         accumulate=True).t()),
        l=lin(6, 2), i=idx(0, 0, 4, 5)),
    rx(B, 11), ignored={0: (ALL, slice(10, None))})
zoo("index_put_overwrite_const",
    Net(lambda m, x: m.l(_overwrite(x)), l=lin(6, 3)),
    rx(B, 6), ignored={0: (ALL, slice(1, 3))})
zoo("index_put_overwrite_data",
    Net(lambda m, x: m.l(_put(x[:, :6], m.i, x[:, 6:8])), l=lin(6, 3), i=idx(1, 4)),
    rx(B, 9), ignored={0: (ALL, [1, 4, 8])})
zoo("scatter_add_zeros_base",
    Net(lambda m, x: m.l(torch.zeros(B, 5, dtype=F64).scatter_add(1, m.i, x[:, :4])),
        l=lin(5, 2), i=idx(0, 4, 4, 1, 2, 2, 3, 0, 1, 1, 1, 1).view(B, 4)),
    rx(B, 7), ignored={0: (ALL, slice(4, None))})
zoo("scatter_src",
    Net(lambda m, x: m.l(x[:, :6].scatter(1, m.i, x[:, 6:8])), l=lin(6, 2),
        i=idx(0, 3, 2, 5, 4, 1).view(B, 2)),
    rx(B, 8), ignored={0: ([0, 0, 1, 1, 2, 2], [0, 3, 2, 5, 4, 1])})
zoo("scatter_value",
    Net(lambda m, x: m.l(x.scatter(1, m.i, 0.5)), l=lin(5, 2), i=idx(0, 2, 1, 3, 4, 0).view(B, 2)),
    rx(B, 5), ignored={0: ([0, 0, 1, 1, 2, 2], [0, 2, 1, 3, 4, 0])})
zoo("scatter_reduce_add_arg",
    Net(lambda m, x: m.l(x[:, :4].scatter(1, m.i, x[:, 4:6], reduce="add")), l=lin(4, 2),
        i=idx(0, 0, 1, 3, 2, 2).view(B, 2)),
    rx(B, 6))
zoo("scatter_reduce_sum",
    Net(lambda m, x: m.l(x[:, :4].scatter_reduce(1, m.i, x[:, 4:7], "sum")), l=lin(4, 2),
        i=idx(0, 0, 1, 3, 2, 2, 1, 1, 1).view(B, 3)),
    rx(B, 8), ignored={0: (ALL, 7)}, supported=True)
zoo("scatter_reduce_mean",
    Net(lambda m, x: m.l(x[:, :4].scatter_reduce(1, m.i, x[:, 4:7], "mean")), l=lin(4, 2),
        i=idx(0, 0, 1, 3, 2, 2, 1, 1, 1).view(B, 3)),
    rx(B, 7), supported=True)
zoo("scatter_reduce_amax",
    Net(lambda m, x: m.l(x[:, :4].scatter_reduce(1, m.i, x[:, 4:7], "amax",
                                                 include_self=False)),
        l=lin(4, 2), i=idx(0, 0, 1, 3, 2, 2, 1, 1, 1).view(B, 3)),
    rx(B, 7), supported=True)
zoo("index_copy",
    Net(lambda m, x: m.l(x[:, :4].index_copy(1, m.i, x[:, 4:6])), l=lin(4, 2), i=idx(0, 2)),
    rx(B, 6), ignored={0: (ALL, [0, 2])})
zoo("index_fill",
    Net(lambda m, x: m.l(x.index_fill(1, m.i, -1.0)), l=lin(4, 2), i=idx(3, 1)),
    rx(B, 4), ignored={0: (ALL, [1, 3])})
zoo("slice_copy_into_zeros",
    Net(lambda m, x: m.l(_into_zeros(x)), l=lin(6, 2)),
    rx(B, 5), ignored={0: (ALL, slice(3, None))})
zoo("take_flat",
    Net(lambda m, x: m.l(torch.take(x, m.i)), l=lin(3, 2), i=idx(0, 5, 7)),
    rx(B, 4), ignored={0: ([0, 0, 0, 1, 1, 2, 2, 2, 2], [1, 2, 3, 0, 2, 0, 1, 2, 3])})
zoo("fold_overlapping",
    Net(lambda m, x: m.l(F.fold(x, (4, 4), 2).flatten(1)), l=lin(32, 3)),
    rx(2, 8, 9))
zoo("unfold_linear_fold",
    Net(lambda m, x: F.fold(m.l(F.unfold(x, 2, stride=2).transpose(1, 2)).transpose(1, 2),
                            (4, 4), 2, stride=2),
        l=lin(8, 8)),
    rx(2, 2, 4, 4))
zoo("fold_strided_padded",
    Net(lambda m, x: F.fold(x, (5, 5), 3, padding=1, stride=2).flatten(1)),
    rx(2, 9, 9))
zoo("tensor_unfold_windows",
    Net(lambda m, x: m.l(x.unfold(1, 2, 1)).flatten(1), l=lin(2, 2)),
    rx(B, 5))
zoo("unfold_padded",
    Net(lambda m, x: m.l(F.unfold(x, 3, padding=1).transpose(1, 2)).mean(1), l=lin(9, 2)),
    rx(2, 1, 3, 3))
zoo("embedding_bag_ids",
    Net(lambda m, ids: m.l(m.bag(ids)), bag=nn.EmbeddingBag(10, 4, mode="mean").double(),
        l=lin(4, 2)),
    torch.tensor([[1, 2, 3], [4, 5, 9]]), mentions="EmbeddingBag")
zoo("embedding_data_weight",
    Net(lambda m, w: F.embedding(m.ids, w).sum(0), ids=idx(0, 2, 1)),
    rx(4, 3), ignored={0: 3})
zoo("embedding_bag_weighted",
    Net(lambda m, w: m.l(F.embedding_bag(m.ids, m.table, m.off, per_sample_weights=w,
                                         mode="sum")),
        ids=idx(1, 2, 3, 4, 5, 9), off=idx(0, 3), table=rx(10, 4), l=lin(4, 2)),
    rx(6))
zoo("masked_scatter",
    Net(lambda m, x: m.l(x[:, :6].masked_scatter(m.mask, x[:, 6:8])), l=lin(6, 2),
        mask=torch.tensor([[1, 0, 0, 1, 0, 0], [0, 1, 1, 0, 0, 0], [0, 0, 0, 0, 1, 1]]).bool()),
    rx(B, 8), ignored={0: ([0, 0, 1, 1, 2, 2], [0, 3, 1, 2, 4, 5])})

# ---- interpolation ----------------------------------------------------------------------------
for _name, _kw in {
    "bicubic": {"scale_factor": 2, "mode": "bicubic", "align_corners": False},
    "bicubic_align_corners": {"size": (5, 7), "mode": "bicubic", "align_corners": True},
    "area": {"size": (2, 3), "mode": "area"},
    "bilinear_antialias": {"size": (2, 3), "mode": "bilinear", "antialias": True},
    "bicubic_antialias": {"size": (3, 2), "mode": "bicubic", "antialias": True},
    "bilinear": {"scale_factor": 1.5, "mode": "bilinear"},
    "nearest_exact": {"size": (7, 5), "mode": "nearest-exact"},
}.items():
    _out = F.interpolate(torch.zeros(1, 1, 4, 4), **_kw).shape[-2:].numel()
    zoo(f"interpolate_{_name}",
        Net(lambda m, x, kw=_kw: m.l(F.interpolate(x[:, :, :4, :4], **kw).flatten(2)),
            l=lin(_out, 3)),
        rx(2, 2, 5, 6), ignored={0: (ALL, ALL, slice(4, None))})
zoo("interpolate_trilinear",
    Net(lambda m, x: m.l(F.interpolate(x, scale_factor=2, mode="trilinear").flatten(1)),
        l=lin(128, 2)),
    rx(2, 2, 2, 2, 2))
zoo("interpolate_linear1d",
    Net(lambda m, x: m.l(F.interpolate(x, size=7, mode="linear", align_corners=True)),
        l=lin(7, 2)),
    rx(2, 3, 4))

# ---- scans, sorting, selection ------------------------------------------------------------------
zoo("cumsum_prefix",
    Net(lambda m, x: m.l(x.cumsum(1)[:, :3]), l=lin(3, 2)),
    rx(B, 6), ignored={0: (ALL, slice(3, None))})
zoo("cumprod", Net(lambda m, x: m.l(x.cumprod(1)), l=lin(4, 2)), rx(B, 4))
zoo("sort_values", Net(lambda m, x: m.l(torch.sort(x, 1).values), l=lin(5, 2)), rx(B, 5))
zoo("topk_sliced",
    Net(lambda m, x: m.l(x[:, :5].topk(2).values), l=lin(2, 2)),
    rx(B, 8), ignored={0: (ALL, slice(5, None))})
zoo("topk_unselected",
    Net(lambda m, x: x.topk(1).values * 2.0),
    torch.tensor([[0.1, 3.0, 0.2], [5.0, -1.0, 2.0]], dtype=F64),
    ignored={0: ([0, 0, 1, 1], [0, 2, 1, 2])})
zoo("kthvalue_median",
    Net(lambda m, x: m.l(torch.stack([x.kthvalue(2, 1).values, x.median(1).values], 1)),
        l=lin(2, 2)),
    rx(B, 5))
zoo("cummax", Net(lambda m, x: m.l(x.cummax(1).values), l=lin(4, 2)), rx(B, 4))
zoo("amax_amin", Net(lambda m, x: torch.stack([x.amax(1), x.amin(1)], 1)), rx(B, 6))
zoo("roll", Net(lambda m, x: m.l(torch.roll(x, 2, 1)), l=lin(5, 2)), rx(B, 5))
zoo("gather_cols",
    Net(lambda m, x: m.l(x.gather(1, m.i)), l=lin(2, 2), i=idx(0, 3, 1, 1, 2, 0).view(B, 2)),
    rx(B, 4), ignored={0: ([0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 1, 3])})
zoo("take_along_dim_argsort",
    Net(lambda m, x: m.l(torch.take_along_dim(x, x.argsort(1)[:, :2], 1)), l=lin(2, 2)),
    rx(B, 4))
zoo("diagonal_only",
    Net(lambda m, x: m.l(torch.diagonal(x, dim1=1, dim2=2)), l=lin(3, 2)),
    rx(2, 3, 3), ignored={0: (ALL, [0, 0, 1, 1, 2, 2], [1, 2, 0, 2, 0, 1])})
zoo("tril_data",
    Net(lambda m, x: m.l(torch.tril(x).flatten(1)), l=lin(9, 2)),
    rx(2, 3, 3), ignored={0: (ALL, [0, 0, 1], [1, 2, 2])})
zoo("repeat_interleave_flip_chunk",
    Net(lambda m, x: m.l(torch.cat(x.repeat_interleave(2, 1).flip(1).chunk(2, 1)[::-1], 1)),
        l=lin(8, 2)),
    rx(B, 4))
zoo("unbind_stack_narrow",
    Net(lambda m, x: m.l(torch.stack(x.narrow(1, 1, 3).unbind(1), 0).sum(0, keepdim=True).t()),
        l=lin(1, 2)),
    rx(B, 5), ignored={0: (ALL, [0, 4])})
zoo("as_strided_windows",
    Net(lambda m, x: m.l(x.contiguous().as_strided((B, 2, 2), (6, 1, 2)).flatten(1)),
        l=lin(4, 2)),
    rx(B, 6), ignored={0: (ALL, [4, 5])})
zoo("maxpool_corner",
    Net(lambda m, x: m.l(F.max_pool2d(x[:, :, :4, :4], 2).flatten(1)), l=lin(8, 2)),
    rx(2, 2, 6, 5), ignored={0: (ALL, ALL, slice(4, None))})
zoo("adaptive_maxpool",
    Net(lambda m, x: m.l(F.adaptive_max_pool2d(m.c(x), (2, 2)).flatten(1)),
        c=nn.Conv2d(2, 3, 3).double(), l=lin(12, 2)),
    rx(2, 2, 7, 6))

# ---- products and reductions ------------------------------------------------------------------
zoo("einsum_outer_data",
    Net(lambda m, x: m.o(torch.einsum("bi,bj->bij", m.a(x), m.b(x)).flatten(1)),
        a=lin(4, 3), b=lin(4, 2), o=lin(6, 2)),
    rx(B, 4))
zoo("einsum_bmm_data",
    Net(lambda m, x: torch.einsum("bij,bjk->bik", x[:, :, :2], x[:, :, 2:].transpose(1, 2))),
    rx(2, 3, 4))
zoo("baddbmm_const",
    Net(lambda m, x: torch.baddbmm(m.bias, x, m.w, beta=0.5, alpha=2.0),
        bias=rx(1, 3, 2), w=rx(2, 4, 2)),
    rx(2, 3, 4))
zoo("baddbmm_data_operands",
    Net(lambda m, x: torch.baddbmm(m.bias, x, x.transpose(1, 2)), bias=rx(1, 3, 3)),
    rx(2, 3, 4))
zoo("torch_norm", Net(lambda m, x: torch.norm(m.l(x), dim=1, keepdim=True), l=lin(4, 3)),
    rx(B, 4))
zoo("vector_norm", Net(lambda m, x: torch.linalg.vector_norm(m.l(x), dim=1), l=lin(4, 3)),
    rx(B, 4))
zoo("logsumexp", Net(lambda m, x: torch.logsumexp(m.l(x), 1), l=lin(4, 3, seed=0)),
    rx(B, 4, seed=5))
zoo("logsumexp_float32",
    Net(lambda m, x: torch.logsumexp(m.l(x), 1), l=lin(4, 3, dtype=torch.float32)),
    rx(B, 4, dtype=torch.float32), tol=1e-4)
zoo("exp_minus_amax",
    Net(lambda m, x: torch.exp(x - x.amax(1, keepdim=True)).sum(1)),
    rx(B, 4, seed=5))
zoo("softmax_sliced",
    Net(lambda m, x: torch.softmax(m.l(x[:, :3]), 1), l=lin(3, 4)),
    rx(B, 5), ignored={0: (ALL, slice(3, None))})
zoo("normalize", Net(lambda m, x: m.l(F.normalize(x, dim=1)), l=lin(4, 2)), rx(B, 4))
zoo("std", Net(lambda m, x: x.std(1)), rx(B, 4))
zoo("diff_lerp_addcmul",
    Net(lambda m, x: torch.addcmul(m.b, torch.diff(x, dim=1), torch.lerp(x[:, :3], x[:, 1:], 0.3),
                                   value=0.5), b=rx(3)),
    rx(B, 4))
zoo("atan2", Net(lambda m, x: torch.atan2(x[:, :2], x[:, 2:])), rx(B, 4))
zoo("outer_sum_broadcast", Net(lambda m, x: (x[:, :, None] + x[:, None, :]).flatten(1)),
    rx(B, 3))
zoo("mul_data", Net(lambda m, x: m.a(x) * torch.sigmoid(m.b(x)), a=lin(4, 3), b=lin(4, 3)),
    rx(B, 4))
zoo("div_by_data", Net(lambda m, x: x / (x.abs().sum(1, keepdim=True) + 1.0)), rx(B, 4))
zoo("sdpa",
    Net(lambda m, x: F.scaled_dot_product_attention(m.q(x), m.k(x), m.v(x)).mean(1),
        q=lin(4, 4), k=lin(4, 4), v=lin(4, 4)),
    rx(2, 5, 4))

# ---- convolutions and normalisation -----------------------------------------------------------
zoo("conv_transpose1d",
    Net(lambda m, x: m.c(x), c=nn.ConvTranspose1d(2, 3, 3, stride=2, output_padding=1).double()),
    rx(2, 2, 5))
zoo("conv_transpose3d",
    Net(lambda m, x: m.c(x).mean((2, 3, 4)),
        c=nn.ConvTranspose3d(2, 2, 2, stride=2, padding=1).double()),
    rx(1, 2, 3, 3, 3))
zoo("conv_dilated_groups",
    Net(lambda m, x: m.c(x).flatten(1), c=nn.Conv1d(4, 4, 3, dilation=2, groups=2).double()),
    rx(2, 4, 7))
zoo("group_norm",
    Net(lambda m, x: m.l(torch.relu(m.n(x)).mean((2, 3))), n=nn.GroupNorm(2, 4).double(),
        l=lin(4, 2)),
    rx(2, 4, 3, 3))
zoo("local_response_norm",
    Net(lambda m, x: m.n(x).mean((2, 3)), n=nn.LocalResponseNorm(3)),
    rx(2, 4, 3, 3))
zoo("instance_norm2d",
    Net(lambda m, x: m.n(x).flatten(1), n=nn.InstanceNorm2d(2, affine=True).double()),
    rx(2, 2, 3, 3))
zoo("instance_norm1d",
    Net(lambda m, x: m.l(m.n(x).flatten(1)), n=nn.InstanceNorm1d(2).double(), l=lin(8, 2)),
    rx(2, 2, 4))
zoo("layer_norm_batch_norm",
    Net(lambda m, x: m.b(m.n(x)), n=nn.LayerNorm(4).double(),
        b=nn.BatchNorm1d(3).double()),
    rx(2, 3, 4))
zoo("circular_conv",
    Net(lambda m, x: m.c(x).flatten(1),
        c=nn.Conv1d(1, 2, 3, padding=1, padding_mode="circular").double()),
    rx(2, 1, 5))
zoo("grid_sample",
    Net(lambda m, x: F.grid_sample(x, m.g, align_corners=False).flatten(1),
        g=rx(2, 2, 2, 2).tanh()),
    rx(2, 1, 3, 3))
zoo("reflection_pad_conv",
    Net(lambda m, x: m.c(F.pad(x, (1, 1, 2, 0), mode="reflect")).flatten(1),
        c=nn.Conv2d(1, 2, 3).double()),
    rx(2, 1, 4, 4))
zoo("replication_pad_constant_pad",
    Net(lambda m, x: m.l(F.pad(F.pad(x, (1, 2), mode="replicate"), (1, 0), value=0.3)),
        l=lin(9, 2)),
    rx(2, 3, 5))
zoo("pixel_shuffle",
    Net(lambda m, x: F.pixel_shuffle(m.c(x), 2).flatten(1), c=nn.Conv2d(1, 4, 1).double()),
    rx(2, 1, 2, 3))
zoo("pixel_unshuffle",
    Net(lambda m, x: m.l(F.pixel_unshuffle(x, 2).flatten(1)), l=lin(16, 2)),
    rx(2, 1, 4, 4))

# ---- where, clamps, masks -----------------------------------------------------------------------
zoo("where_data_condition",
    Net(lambda m, x: torch.where(x > x.mean(1, keepdim=True), m.a(x), m.b(x)),
        a=lin(4, 4), b=lin(4, 4)),
    rx(B, 4))
zoo("where_zeros_like", Net(lambda m, x: m.l(torch.where(x > 0, x, torch.zeros_like(x))),
                            l=lin(4, 2)),
    rx(B, 4))
zoo("where_scalar",
    Net(lambda m, x: m.l(torch.where(x > 0, x, 0.0)), l=lin(4, 2)),
    torch.tensor([[1.0, -2.0, 3.0, -0.5], [-1.0, 0.5, 0.25, 2.0]], dtype=F64),
    ignored={0: ([0, 0, 1], [1, 3, 0])})
zoo("masked_fill_const",
    Net(lambda m, x: m.l(x.masked_fill(m.mask, -1.0)), l=lin(3, 2),
        mask=torch.tensor([[True, False, False], [False, False, True]])),
    rx(2, 3), ignored={0: ([0, 1], [0, 2])})
zoo("masked_select", Net(lambda m, x: x.masked_select(m.mask), mask=rx(B, 4) > 0), rx(B, 4))
zoo("clamp", Net(lambda m, x: m.l(x).clamp(-0.5, 0.5), l=lin(4, 3)), rx(B, 4, scale=3.0))
zoo("minimum_const",
    Net(lambda m, x: torch.minimum(m.l(x), m.bound), l=lin(4, 3),
        bound=torch.tensor(0.3, dtype=F64)),
    rx(B, 4))
zoo("maximum_data", Net(lambda m, x: torch.maximum(m.a(x), m.b(x)), a=lin(4, 3), b=lin(4, 3)),
    rx(B, 4))
zoo("hardtanh_prelu_glu",
    Net(lambda m, x: F.glu(m.p(F.hardtanh(m.l(x))), 1), l=lin(4, 6), p=nn.PReLU().double()),
    rx(B, 4))

# ---- weights, dtypes, layouts, batch sizes ------------------------------------------------------
_Q = torch.randint(-127, 128, (3, 5), generator=GEN, dtype=torch.int8)
zoo("int8_dequant_linear",
    Net(lambda m, x: F.linear(x, m.q.to(F64) * m.scale, m.b),
        q=_Q, scale=torch.tensor([[0.01], [0.02], [0.005]], dtype=F64), b=rx(3)),
    rx(B, 5))
zoo("int8_dequant_conv",
    Net(lambda m, x: F.conv2d(x, (m.q.to(F64) - m.zero) * 0.05).flatten(1),
        q=torch.randint(0, 255, (2, 1, 2, 2), generator=GEN, dtype=torch.uint8),
        zero=torch.tensor(128.0, dtype=F64)),
    rx(2, 1, 3, 3))
zoo("dict_output",
    Net(lambda m, x: {"logits": m.a(x), "aux": m.b(x[:, :2])}, a=lin(4, 3), b=lin(2, 2)),
    rx(B, 4), output="aux", ignored={0: (ALL, slice(2, None))})
zoo("nested_output",
    Net(lambda m, x: (m.a(x[:, 1:]), {"h": x, "more": [m.b(x)]}), a=lin(3, 2), b=lin(4, 2)),
    rx(B, 4), output=0, ignored={0: (ALL, 0)})
zoo("nested_output_structure",
    Net(lambda m, x: (m.a(x), {"h": x, "more": [m.b(x)]}), a=lin(4, 2), b=lin(4, 2)),
    rx(B, 4), output=1)
zoo("batch0", Net(lambda m, x: m.l(torch.relu(x)), l=lin(5, 2)), rx(0, 5))
zoo("batch1", Net(lambda m, x: m.l(torch.tanh(x)), l=lin(5, 2)), rx(1, 5))
zoo("batch_large",
    Net(lambda m, x: m.o(torch.relu(m.l(x))), l=lin(8, 8), o=lin(8, 2)),
    rx(512, 8))
zoo("channels_last_conv",
    Net(lambda m, x: m.c(x).mean((2, 3)), c=nn.Conv2d(3, 4, 3).double()),
    rx(2, 3, 6, 6).contiguous(memory_format=torch.channels_last))
zoo("float16_mlp",
    Net(lambda m, x: m.o(torch.relu(m.l(x))), l=lin(6, 5, dtype=torch.float16),
        o=lin(5, 2, dtype=torch.float16)),
    rx(B, 6, dtype=torch.float16), tol=1e-4)
zoo("bfloat16_conv",
    Net(lambda m, x: m.c(x).flatten(1), c=nn.Conv2d(1, 2, 2).to(torch.bfloat16)),
    rx(2, 1, 3, 3, dtype=torch.bfloat16), tol=1e-4)
zoo("float16_bilinear",
    Net(lambda m, x: F.interpolate(x, scale_factor=2, mode="bilinear").flatten(1)),
    rx(1, 1, 2, 2, dtype=torch.float16), tol=1e-4)
zoo("bfloat16_cumsum", Net(lambda m, x: x.cumsum(1)), rx(B, 4, dtype=torch.bfloat16), tol=1e-4)
zoo("float32_mlp_sliced",
    Net(lambda m, x: m.o(torch.relu(m.l(x[:, :4]))), l=lin(4, 5, dtype=torch.float32),
        o=lin(5, 2, dtype=torch.float32)),
    rx(B, 6, dtype=torch.float32), tol=1e-4, ignored={0: (ALL, slice(4, None))})
zoo("two_inputs_one_ignored",
    Net(lambda m, x, y: m.l(x) + 0.0 * y.sum(), l=lin(4, 2)),
    rx(B, 4), rx(B, 3), ignored={1: ALL})

# ---- ops that cut relevance off -----------------------------------------------------------------
zoo("fft_magnitude", Net(lambda m, x: m.l(torch.fft.rfft(x).abs()), l=lin(3, 2)), rx(B, 4),
    mentions="fft")
zoo("bucketize_embedding",
    Net(lambda m, x: m.l(m.e(torch.bucketize(x, m.bounds))).sum(1),
        e=nn.Embedding(4, 3).double(), l=lin(3, 2), bounds=torch.tensor([-0.5, 0.0, 0.5],
                                                                         dtype=F64)),
    rx(B, 4), mentions="bucketize")


_BACKTRACES: dict[str, Backtrace] = {}


def _seed(out: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return (torch.rand(out.shape, generator=g, dtype=F64) + 0.5).to(out.dtype)


def _selected(out: Any, selector: str | int | None) -> Any:
    return out if selector is None else out[selector]


def _params():
    for name, spec in ZOO.items():
        for mode in ("default", "contrast"):
            defect = spec.defect.get(mode) if isinstance(spec.defect, dict) else spec.defect
            marks = [pytest.mark.xfail(strict=True, reason=defect)] if defect else []
            yield pytest.param(name, mode, id=f"{name}-{mode}", marks=marks)


def test_zoo_is_large_enough():
    """The contract is only as good as its coverage: keep at least 60 models."""
    assert len(ZOO) >= 60


@pytest.mark.parametrize(("name", "mode"), list(_params()))
def test_zoo_model(name: str, mode: str):
    """A clear dlbacktrace error, or a balanced, finite, repeatable, faithful explanation."""
    spec = ZOO[name]
    bt = _BACKTRACES.setdefault(name, Backtrace(spec.model))
    with torch.no_grad():
        out = _selected(spec.model(*spec.inputs), spec.output)
    seed = _seed(out) if isinstance(out, torch.Tensor) else None

    def run():
        return bt.explain(*spec.inputs, seed=seed, mode=mode, output=spec.output)

    try:
        exp = run()
    except ConservationError:
        raise  # an unbalanced ledger is a defect, not a clear refusal
    except DLBacktraceError as err:
        assert not spec.supported, f"documented op refused: {err}"
        assert str(err).strip()
        if spec.mentions is not None:
            assert spec.mentions in str(err), f"the refusal does not name {spec.mentions}: {err}"
        return
    assert spec.mentions is None, "expected a refusal naming " + str(spec.mentions)
    maps = exp.relevance if isinstance(exp.relevance, tuple) else (exp.relevance,)
    assert exp.conservation_error <= spec.tol
    for i, (rel, x) in enumerate(zip(maps, spec.inputs, strict=True)):
        assert rel.shape == x.shape
        assert bool(torch.isfinite(rel).all())
        if mode == "default":
            assert bool((rel >= 0).all()), f"input {i}: min {float(rel.min())}"
    for i, where in spec.ignored.items():
        assert bool((maps[i][where] == 0).all()), f"relevance on ignored elements of input {i}"
    again = run()
    maps2 = again.relevance if isinstance(again.relevance, tuple) else (again.relevance,)
    assert all(torch.equal(a, b) for a, b in zip(maps, maps2, strict=True))
    assert again.conservation_error == exp.conservation_error
