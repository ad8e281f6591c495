"""``OpSpec`` declarations: a user's op declared through ``register_rule`` gets exactly the
treatment of a built-in one (activation awareness, bias fusion), invalid declarations are clear
errors, and declarations made in a test never leak into the next.

The expected numbers are written from DESIGN.md 2.1 by hand. The case: ``x = [1, 2]``,
``W = [[3, −1], [1, 1]]``, ``b = [0.5, −0.25]``, so ``T = Wx + b = [1.5, 2.75]``, followed by a
clip to ``[−1, 1]`` (both outputs saturated high); the seed is 1 on output 0, whose
contributions are ``z = [3, −2]`` with bias ``0.5``.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import dlbacktrace
from dlbacktrace import Backtrace
from dlbacktrace.engine.rules import linear_ops, movement, registry
from dlbacktrace.engine.rules.spec import BoundArg, Family, OpSpec

D64 = torch.float64
aten = torch.ops.aten


@torch.library.custom_op("dlbt_opspec_test::affine", mutates_args=())
def user_affine(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None = None) -> torch.Tensor:
    return F.linear(x, w, b)


@user_affine.register_fake
def _(x, w, b=None):
    return x.new_empty((*x.shape[:-1], w.shape[0]))


@torch.library.custom_op("dlbt_opspec_test::clip", mutates_args=())
def user_clip(x: torch.Tensor) -> torch.Tensor:
    return x.clamp(-1.0, 1.0)


@user_clip.register_fake
def _(x):
    return torch.empty_like(x)


AFFINE_OP = torch.ops.dlbt_opspec_test.affine
CLIP_OP = torch.ops.dlbt_opspec_test.clip

W = [[3.0, -1.0], [1.0, 1.0]]
B = [0.5, -0.25]
X = torch.tensor([[1.0, 2.0]], dtype=D64)

# Saturated high (T_0 = 1.5 > 1): only the positive contribution 3 and b⁺ = 0.5 share R_0 = 1.
SATURATED = ([3 / 3.5, 0.0], 0.5 / 3.5)
# Fused bias, no saturation: D = |3| + |−2| + |0.5| = 5.5.
UNSATURATED = ([3 / 5.5, 2 / 5.5], 0.5 / 5.5)
# No fusion, saturation on the separate add (a_0 = 1 > 0, b⁺ = 0.5 share R_0 = 1: 2/3 to a_0,
# 1/3 absorbed), then the affine op without saturation: 2/3 · [3, 2] / 5.
SEPARATE_ADD = ([2 / 3 * 3 / 5, 2 / 3 * 2 / 5], 1 / 3)


class UserModel(nn.Module):
    """``clip(affine(x, W) + b)`` (bias as a separate add) or ``clip(affine(x, W, b))``."""

    def __init__(self, bias_inside: bool = False) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(W, dtype=D64))
        self.b = nn.Parameter(torch.tensor(B, dtype=D64))
        self.bias_inside = bias_inside

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias_inside:
            return user_clip(user_affine(x, self.w, self.b))
        return user_clip(user_affine(x, self.w) + self.b)


class BuiltInModel(UserModel):
    """The same computation with built-in ops: ``hardtanh(linear(x, W) + b)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bias_inside:
            return F.hardtanh(F.linear(x, self.w, self.b))
        return F.hardtanh(F.linear(x, self.w) + self.b)


@pytest.fixture
def scoped():
    """Declarations made by the test are undone afterwards."""
    with registry.scoped_rules():
        yield


def explain(model: nn.Module, mode: str = "default"):
    exp = Backtrace(model, mode=mode).explain(X, target=0)
    return exp.relevance, sum(float(v) for v in exp.absorbed.values())


def assert_values(got, want, atol: float = 1e-12) -> None:
    relevance, absorbed = got
    want_relevance, want_absorbed = want
    torch.testing.assert_close(relevance, torch.tensor([want_relevance], dtype=D64),
                               atol=atol, rtol=0)
    assert abs(absorbed - want_absorbed) < atol, (absorbed, want_absorbed)


def declare(affine: dict | None, clip: bool) -> None:
    """Register the user's two ops; ``affine=None`` gives the affine op the default family."""
    if affine is None:
        dlbacktrace.register_rule(AFFINE_OP, linear_ops.linear)
    else:
        dlbacktrace.register_rule(AFFINE_OP, linear_ops.linear, **affine)
    if clip:
        dlbacktrace.register_rule(CLIP_OP, movement.identity, saturation=(-1.0, 1.0))
    else:
        dlbacktrace.register_rule(CLIP_OP, movement.identity)


AFFINE_WITH_BIAS = {"family": "affine", "bias_arg": 2}


@pytest.mark.parametrize(
    "affine", [AFFINE_WITH_BIAS, {"family": Family.AFFINE, "bias_free": True}],
    ids=["bias_arg", "bias_free"],
)
def test_a_user_affine_op_gets_saturation_awareness_and_bias_fusion(scoped, affine):
    declare(affine, clip=True)
    assert_values(explain(UserModel()), SATURATED)
    assert_values(explain(BuiltInModel()), SATURATED)


def test_the_user_path_equals_the_built_in_path_in_contrast_mode(scoped):
    """Contrast explains y_0 = clip(1.5) = 1: saturated high, the same one-sided shares."""
    declare(AFFINE_WITH_BIAS, clip=True)
    user, built_in = explain(UserModel(), "contrast"), explain(BuiltInModel(), "contrast")
    assert_values(user, SATURATED, atol=1e-9)
    torch.testing.assert_close(user[0], built_in[0], atol=1e-15, rtol=0)
    assert abs(user[1] - built_in[1]) < 1e-15


def test_a_user_affine_op_with_its_own_bias_sees_the_user_activation(scoped):
    declare(AFFINE_WITH_BIAS, clip=True)
    assert_values(explain(UserModel(bias_inside=True)), SATURATED)
    assert_values(explain(BuiltInModel(bias_inside=True)), SATURATED)


@pytest.mark.parametrize(
    ("affine", "clip", "want"),
    [
        (None, True, SEPARATE_ADD),  # not declared affine: no fusion, no awareness
        ({"family": "affine"}, True, SEPARATE_ADD),  # affine, but no bias to fuse
        (AFFINE_WITH_BIAS, False, UNSATURATED),  # the activation declares no saturation
    ],
    ids=["undeclared", "no_bias_arg", "clip_undeclared"],
)
def test_without_the_declaration_the_op_gets_other_values(scoped, affine, clip, want):
    declare(affine, clip)
    assert_values(explain(UserModel()), want)


def test_without_the_declaration_an_own_bias_sees_no_saturation(scoped):
    declare(None, clip=True)
    assert_values(explain(UserModel(bias_inside=True)), UNSATURATED)


@pytest.mark.parametrize(
    ("op", "rule", "kwargs", "message"),
    [
        (AFFINE_OP, linear_ops.linear, {"family": "afine"}, "unknown op family 'afine'"),
        (AFFINE_OP, linear_ops.linear, {"family": "affine", "bias_arg": 3}, "out of range"),
        (AFFINE_OP, linear_ops.linear, {"family": "affine", "bias_arg": 1}, "cannot be left out"),
        (AFFINE_OP, linear_ops.linear, {"family": "affine", "bias_arg": -1}, "non-negative"),
        (AFFINE_OP, linear_ops.linear, {"bias_arg": 2}, "bias_arg applies to affine ops"),
        (AFFINE_OP, linear_ops.linear, {"family": "affine", "bias_arg": 2, "bias_free": True},
         "exclude each other"),
        (CLIP_OP, movement.identity, {"saturation": (1.0, -1.0)}, "low < high"),
        (CLIP_OP, movement.identity, {"saturation": (None, None)}, "saturates nowhere"),
        (CLIP_OP, movement.identity, {"saturation": ("low", 1.0)}, "must be a number"),
        (CLIP_OP, movement.identity, {"family": "affine", "saturation": (0.0, None)},
         "saturation applies to"),
        (CLIP_OP, movement.identity, {"zero_below": True}, "needs a low saturation bound"),
        (CLIP_OP, movement.identity, {"saturation": (None, 1.0), "zero_below": True},
         "needs a low saturation bound"),
        (CLIP_OP, movement.identity, {"normalises": True}, "normalises applies to affine"),
        (CLIP_OP, None, {}, "needs a rule"),
        (CLIP_OP, movement.identity, {"family": "shape_only"}, "pass rule=None"),
        (CLIP_OP, "identity", {}, "must be callable"),
        (CLIP_OP, movement.identity, {"spin": 1}, "spin"),
    ],
)
def test_an_invalid_declaration_is_a_clear_error_and_changes_nothing(
    scoped, op, rule, kwargs, message
):
    error = TypeError if "spin" in kwargs else ValueError
    with pytest.raises(error, match=message):
        dlbacktrace.register_rule(op, rule, **kwargs)
    assert registry.spec_of(op) is registry.UNDECLARED
    assert registry.lookup(op) is None


def test_scoped_rules_restore_the_table():
    relu = registry.spec_of(aten.relu)
    before = dict(registry.specs())
    with registry.scoped_rules():
        declare(AFFINE_WITH_BIAS, clip=True)
        registry.register_rule(aten.relu, movement.identity, "elementwise")
        assert registry.spec_of(AFFINE_OP.default).family is Family.AFFINE
        assert registry.spec_of(aten.relu).saturation is None
    assert registry.spec_of(AFFINE_OP) is registry.UNDECLARED
    assert registry.spec_of(CLIP_OP) is registry.UNDECLARED
    assert registry.spec_of(aten.relu) is relu
    assert dict(registry.specs()) == before


def test_replacing_a_rule_keeps_the_declaration_unless_a_family_is_given(scoped):
    def my_linear(call, R):
        return linear_ops.linear(call, R)

    spec = registry.register_rule(aten.linear.default, my_linear)
    assert spec.rule is my_linear and registry.lookup(aten.linear) is my_linear
    assert (spec.family, spec.bias_arg) == (Family.AFFINE, 2)
    spec = registry.register_rule(aten.relu, movement.identity, saturation=(0.5, None))
    assert (spec.family, spec.saturation) == (Family.ELEMENTWISE, (0.5, None))
    spec = registry.register_rule(aten.linear, my_linear, "elementwise")
    assert (spec.family, spec.bias_arg) == (Family.ELEMENTWISE, None)
    spec = registry.register_rule(CLIP_OP, movement.identity)
    assert spec.family is Family.ELEMENTWISE and spec.saturation is None


def test_a_replaced_built_in_rule_keeps_its_treatment(scoped):
    """Re-registering aten.linear (and hardtanh) under user rules keeps fusion and awareness."""
    calls = []

    def my_linear(call, R):
        calls.append(call.bias_add is not None)
        return linear_ops.linear(call, R)

    dlbacktrace.register_rule(aten.linear, my_linear)
    dlbacktrace.register_rule(aten.hardtanh, movement.identity)
    assert_values(explain(BuiltInModel()), SATURATED)
    assert calls == [True]


def test_saturation_bounds_are_read_from_the_call():
    """Fixed ranges, hardtanh's arguments and defaults, and minimum's constant operand."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    relu = graph.call_function(aten.relu.default, (x,))
    hardtanh = graph.call_function(aten.hardtanh.default, (x, -0.5))
    clamp = graph.call_function(aten.clamp.default, (x,), {"max": 2})
    minimum = graph.call_function(aten.minimum.default, (x, 3))

    def bounds(node, constant=None):
        return registry.spec_of(node.target).saturation_bounds(node, constant)

    assert bounds(relu) == (0.0, None)
    assert bounds(hardtanh) == (-0.5, 1.0)
    assert bounds(clamp) == (None, 2.0)
    assert bounds(minimum) is None  # no way to read the operand's value
    assert bounds(minimum, lambda a: 3.0 if a == 3 else None) == (None, 3.0)
    assert registry.spec_of(aten.hardtanh).clamps and not registry.spec_of(aten.relu).clamps


def test_a_user_bound_from_an_argument(scoped):
    spec = registry.register_rule(CLIP_OP, movement.identity, saturation=(BoundArg(1, "lo", 0.0),
                                                                          None))
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    given = graph.call_function(CLIP_OP.default, (x, 0.25))
    default = graph.call_function(CLIP_OP.default, (x,))
    assert spec.saturation_bounds(given) == (0.25, None)
    assert spec.saturation_bounds(default) == (0.0, None)
    assert spec.clamps


def test_every_built_in_is_declared_through_register_rule():
    """The table holds OpSpecs only, each keyed by its own op packet, with a rule unless the
    op is shape-only; undeclared ops have no rule."""
    table = registry.specs()
    assert len(table) > 150
    for op, spec in table.items():
        assert isinstance(spec, OpSpec) and spec.op is op
        assert (spec.rule is None) == (spec.family is Family.SHAPE_ONLY), op
    assert registry.spec_of(aten.linear.default) is table[aten.linear]
    assert registry.lookup(torch.ops.aten.bucketize) is None
    with pytest.raises(TypeError):
        table[aten.relu] = registry.UNDECLARED  # a read-only view


# ---- which saturated sides can carry relevance: decided at capture time (issue 15) ---------


class _Exp(nn.Module):
    def forward(self, x):
        return torch.exp(x)


class _Pool(nn.Module):
    def forward(self, x):
        return F.max_pool1d(x.unsqueeze(1), 2).squeeze(1)


@pytest.mark.parametrize(
    ("after", "want"),
    [
        ([nn.ReLU(), nn.Linear(4, 2)], None),  # an affine consumer shares by w·x: 0 for x = 0
        ([nn.ReLU(), nn.Dropout(), nn.Linear(4, 2)], None),  # movement keeps values
        ([nn.ReLU(), _Pool(), nn.Linear(2, 2)], None),  # so does selection
        ([nn.ReLU()], (0.0, None)),  # the seed reaches zero outputs too
        ([nn.ReLU(), _Exp(), nn.Linear(4, 2)], (0.0, None)),  # exp(0) = 1
        ([nn.ReLU(), nn.LayerNorm(4), nn.Linear(4, 2)], (0.0, None)),  # normalised values
        ([nn.ReLU6(), nn.Linear(4, 2)], (None, 6.0)),  # the high side outputs 6, not 0
        ([nn.Tanh(), nn.Linear(4, 2)], (-2.0, 2.0)),
        ([nn.Hardtanh(0.0, 1.0), nn.Linear(4, 2)], (None, 1.0)),  # a clamp at 0 is ReLU-like
    ],
    ids=["linear", "dropout", "pool", "output", "exp", "layernorm", "relu6", "tanh", "clamp0"],
)
def test_live_saturation_sides_come_from_the_graph(after, want):
    from dlbacktrace.engine.capture import export_model

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), *after).eval()
    g = export_model(model, (torch.randn(2, 3),), {})
    first = next(n for n in g.nodes if n in g.saturation)
    assert g.saturation[first][0] is not None or g.saturation[first][1] is not None
    assert g.live_saturation.get(first) == want
