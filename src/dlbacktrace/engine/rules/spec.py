"""``OpSpec``: one self-describing declaration per op — its rule, family and traits.

The graph analysis of :mod:`dlbacktrace.engine.capture` (which nodes carry relevance, which
are gates, which affine node saturates where, which add is a fused bias) reads nothing but
these declarations, so an op registered by a user gets exactly the treatment of a built-in one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Literal

import torch
import torch.fx as fx

Rule = Callable[..., Any]


class Family(str, Enum):
    """What an op is, as far as the engine's graph analysis is concerned.

    - ``AFFINE``: affine in its data input with constant weights (linear, conv, pooling,
      mean/sum, add/sub, mul/div by a constant, eval-mode norms). A following activation's
      saturation range makes its rule activation-aware (DESIGN.md 2.1); with ``bias_arg`` or
      ``bias_free`` an ``add`` of a constant right after it is fused as its bias. Its rule must
      honour ``call.saturation`` and, where bias fusion is declared, ``call.bias_add``.
    - ``SUMMING``: adds input elements into its outputs (index_add, scatter_add, col2im): an
      affine rule, but no activation awareness and no bias fusion.
    - ``MOVEMENT``: an index map (view, cat, slice, permute, …): every output element is a copy
      of one input element. Moves of integer token ids stay ids, moves of a gate stay a gate,
      moves of softmax output on its way to ``A·V`` stay attention probabilities.
    - ``SELECTION``: picks elements by value (max-pool, max, topk, minimum): a selection of a
      gate stays a gate.
    - ``GATE``: its output is probability-like (sigmoid, softmax): a product with a gate sends
      all relevance to the other factor (DESIGN.md 2.2).
    - ``EMBEDDING``: ``(table, ids, …)``: the integer ids reaching it carry relevance.
    - ``SHAPE_ONLY``: its result depends only on the shape or dtype of its input, never on the
      values (``zeros_like``, ``full``): a constant, never data, so it needs no rule.
    - ``ATTENTION``: scaled-dot-product attention; its rule splits Q·K and A·V itself.
    - ``ELEMENTWISE``: no structural role (activations, elementwise math, masking): the engine
      only calls its rule. The default for a user's op.
    """

    AFFINE = "affine"
    SUMMING = "summing"
    MOVEMENT = "movement"
    SELECTION = "selection"
    GATE = "gate"
    EMBEDDING = "embedding"
    SHAPE_ONLY = "shape_only"
    ATTENTION = "attention"
    ELEMENTWISE = "elementwise"


@dataclass(frozen=True)
class BoundArg:
    """A saturation bound given by the call itself, which makes the op a clamp.

    Parameters
    ----------
    index
        Position of the argument holding the bound (clamp's ``min``); a number there is the
        bound, anything else (a tensor) means no bound on that side. ``None``: the bound is
        whichever one of the first two operands is a constant (``minimum(x, c)``).
    name
        Keyword name of that argument, for calls that pass it by keyword.
    default
        The bound when the argument is absent (hardtanh's ``min_val=-1``).
    """

    index: int | None = None
    name: str | None = None
    default: float | None = None


#: The bound of ``minimum(x, c)`` / ``maximum(x, c)``: the constant operand.
CONSTANT_OPERAND = BoundArg()

Bound = float | BoundArg | None
Saturation = tuple[Bound, Bound]
GatePassage = Literal["any", "constant"]

_SATURATING = (Family.ELEMENTWISE, Family.GATE, Family.SELECTION)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _arg(node: fx.Node, index: int, name: str | None = None, default: Any = None) -> Any:
    if index < len(node.args):
        return node.args[index]
    return node.kwargs.get(name, default) if name is not None else default


def _schemas(op: Any) -> list[Any]:
    """The schemas of every overload of ``op`` (empty for a target without one)."""
    if hasattr(op, "_schema"):
        return [op._schema]
    if hasattr(op, "overloads"):
        return [getattr(op, name)._schema for name in op.overloads()]
    return []


@dataclass(frozen=True)
class OpSpec:
    """How the engine treats one op: its relevance rule, its family and its traits.

    Parameters
    ----------
    op
        The op packet (``torch.ops.aten.linear``); every overload shares the declaration.
    rule
        ``rule(call, R) -> Contribution`` (see :func:`~dlbacktrace.engine.rules.registry.
        register_rule`). ``None``: the op has no rule and is refused on the relevance path
        (``SHAPE_ONLY`` ops are never on it).
    family
        The op's :class:`Family`.
    saturation
        ``(low, high)`` saturation range of an activation (DESIGN.md 2.1): ReLU ``(0, None)``,
        tanh ``(-2, 2)``; ``None`` on a side that never saturates. A :class:`BoundArg` reads the
        bound from the call (clamp, hardtanh). Only for elementwise, gate and selection ops.
    bias_arg
        Affine ops: position of the op's own optional bias argument (``linear``'s 2). When the
        call leaves it out, a following ``add`` of a constant is fused as the bias.
    bias_free
        Affine ops with no bias argument at all (``mm``): a following ``add`` of a constant is
        always fused as the bias.
    bijective
        Movement ops that permute elements one to one (view, permute): the saturation of the
        activation after them is seen by the affine op before them.
    identity
        Movement ops whose output equals their input (clone, ``_to_copy``): constants are seen
        through them. Implies ``bijective``.
    data_product
        Affine matrix products (``mm``): with both operands data it is attention's ``A·V``, and
        a softmax reaching it through moves gives attention probabilities (DESIGN.md 2.2).
    attention_probs
        Gates (softmax) whose output becomes attention probabilities when it reaches a
        ``data_product`` of two data tensors; the op's rule then splits relevance onto them.
    bias_sign
        ``+1`` / ``-1`` for ``a ± b`` (add, sub): the op that applies a fused bias ``b``.
    keeps_gate
        When the output of an op whose first operand is a gate is a gate too: ``"any"`` (a gate
        divided by anything), ``"constant"`` (a gate scaled by constants only). Movement and
        selection ops keep gates without saying so.
    complement_arg
        Position of the literal ``1`` when the op computes ``1 − x``: a gate's complement is a
        gate.
    fill_arg
        Shape-only ops that fill with one constant (``full``): the argument holding it, so a
        clamp against that constant is seen as a saturation bound.
    zero_below
        Activations whose output is exactly 0 below their low saturation bound (ReLU): when
        no rule downstream gives zero-valued elements relevance, the low side of the
        producer's activation awareness can never carry any and is left out at capture time.
    normalises
        Affine-family normalisations (layer norm): their rule shares by the normalised value,
        so a zero-valued input element can still receive relevance.
    saturated_sites
        Affine ops whose rule can take a node's few saturated outputs as a list of sites
        (``call.saturated_sites``) and correct just those, instead of running the saturated
        form over every output.
    """

    op: Any
    rule: Rule | None
    family: Family = Family.ELEMENTWISE
    saturation: Saturation | None = None
    bias_arg: int | None = None
    bias_free: bool = False
    bijective: bool = False
    identity: bool = False
    data_product: bool = False
    attention_probs: bool = False
    bias_sign: int | None = None
    keeps_gate: GatePassage | None = None
    complement_arg: int | None = None
    fill_arg: int | None = None
    zero_below: bool = False
    normalises: bool = False
    saturated_sites: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "family", _family(self.family))
        if self.identity:
            object.__setattr__(self, "bijective", True)
        if isinstance(self.saturation, list):
            object.__setattr__(self, "saturation", tuple(self.saturation))
        problems = self._problems()
        if problems:
            raise ValueError(f"invalid declaration for {self.op}: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        family = self.family
        problems: list[str] = []
        if self.rule is not None and not callable(self.rule):
            problems.append(f"rule must be callable, got {type(self.rule).__name__}")
        if self.rule is not None and family is Family.SHAPE_ONLY:
            problems.append("a shape_only op never carries relevance; pass rule=None")
        only = {
            "bias_arg": (self.bias_arg is not None, Family.AFFINE),
            "bias_free": (self.bias_free, Family.AFFINE),
            "data_product": (self.data_product, Family.AFFINE),
            "bias_sign": (self.bias_sign is not None, Family.AFFINE),
            "complement_arg": (self.complement_arg is not None, Family.AFFINE),
            "bijective": (self.bijective, Family.MOVEMENT),
            "attention_probs": (self.attention_probs, Family.GATE),
            "fill_arg": (self.fill_arg is not None, Family.SHAPE_ONLY),
            "normalises": (self.normalises, Family.AFFINE),
            "saturated_sites": (self.saturated_sites, Family.AFFINE),
        }
        for trait, (given, allowed) in only.items():
            if given and family is not allowed:
                problems.append(f"{trait} applies to {allowed.value} ops, not {family.value}")
        if self.bias_arg is not None and self.bias_free:
            problems.append("bias_arg and bias_free exclude each other")
        if self.bias_arg is not None:
            problems.extend(self._bias_arg_problems())
        if self.saturation is not None:
            problems.extend(self._saturation_problems())
        if self.zero_below and (self.saturation is None or self.saturation[0] is None):
            problems.append("zero_below needs a low saturation bound")
        if self.bias_sign not in (None, 1, -1):
            problems.append(f"bias_sign must be +1 or -1, got {self.bias_sign!r}")
        if self.keeps_gate not in (None, "any", "constant"):
            problems.append(f"keeps_gate must be 'any' or 'constant', got {self.keeps_gate!r}")
        if self.complement_arg not in (None, 0, 1):
            problems.append(f"complement_arg must be 0 or 1, got {self.complement_arg!r}")
        if self.fill_arg is not None and (not isinstance(self.fill_arg, int) or self.fill_arg < 0):
            problems.append(f"fill_arg must be a non-negative int, got {self.fill_arg!r}")
        return problems

    def _bias_arg_problems(self) -> list[str]:
        index = self.bias_arg
        if not isinstance(index, int) or isinstance(index, bool) or index < 0:
            return [f"bias_arg must be a non-negative int, got {index!r}"]
        problems = []
        for schema in _schemas(self.op):
            arguments = schema.arguments
            if index >= len(arguments):
                problems.append(
                    f"bias_arg={index} is out of range: {schema.name} has {len(arguments)} "
                    "arguments"
                )
            elif not isinstance(arguments[index].type, torch.OptionalType):
                argument = arguments[index]
                problems.append(
                    f"bias_arg={index} names '{argument.name}' of type {argument.type}, which "
                    "cannot be left out; a fused bias needs an optional (Tensor?) one"
                )
        return problems

    def _saturation_problems(self) -> list[str]:
        if self.family not in _SATURATING:
            names = ", ".join(f.value for f in _SATURATING)
            return [f"saturation applies to {names} ops, not {self.family.value}"]
        if not isinstance(self.saturation, tuple) or len(self.saturation) != 2:
            return [f"saturation must be (low, high), got {self.saturation!r}"]
        for bound in self.saturation:
            number = _number(bound)
            if bound is not None and not isinstance(bound, BoundArg) and (
                number is None or math.isnan(number)
            ):
                return [f"a saturation bound must be a number, a BoundArg or None, got {bound!r}"]
        low, high = self.saturation
        if low is None and high is None:
            return ["saturation (None, None) saturates nowhere; leave saturation out"]
        if _number(low) is not None and _number(high) is not None and not low < high:
            return [f"saturation needs low < high, got ({low}, {high})"]
        return []

    # ---- what the graph analysis asks ----------------------------------------------------------
    @property
    def clamps(self) -> bool:
        """A clamp (bounds from its call): clamps in a row saturate at both bounds."""
        return self.saturation is not None and any(isinstance(b, BoundArg) for b in self.saturation)

    @property
    def gate_passage(self) -> GatePassage | None:
        """When a gate first operand gives a gate (``keeps_gate``, movement/selection: any)."""
        if self.keeps_gate is not None:
            return self.keeps_gate
        return "any" if self.family in (Family.MOVEMENT, Family.SELECTION) else None

    def saturation_bounds(
        self, node: fx.Node, constant: Callable[[Any], float | None] | None = None
    ) -> tuple[float | None, float | None] | None:
        """The saturation range ``(low, high)`` of this call of the op, or None.

        Parameters
        ----------
        node
            The graph node calling the op.
        constant
            ``constant(arg)``: the value of a constant one-element argument, or None; needed
            for bounds given by a constant operand (``minimum(x, c)``).
        """
        if self.saturation is None:
            return None
        low, high = (self._bound(b, node, constant) for b in self.saturation)
        return None if low is None and high is None else (low, high)

    @staticmethod
    def _bound(bound: Bound, node: fx.Node, constant: Callable | None) -> float | None:
        if not isinstance(bound, BoundArg):
            return _number(bound)
        if bound.index is not None:
            return _number(_arg(node, bound.index, bound.name, bound.default))
        if constant is None:
            return None
        found = [b for b in (constant(a) for a in node.args[:2]) if b is not None]
        return found[0] if len(found) == 1 else None

    def accepts_bias_add(self, node: fx.Node) -> bool:
        """Whether a following ``add`` of a constant may be fused as this call's bias.

        Parameters
        ----------
        node
            The graph node calling the op.
        """
        if self.bias_free:
            return True
        if self.bias_arg is None:
            return False
        index = self.bias_arg
        if index < len(node.args):
            return node.args[index] is None
        schema = getattr(node.target, "_schema", None)
        name = schema.arguments[index].name if schema is not None else "bias"
        return node.kwargs.get(name) is None

    def adds_bias(self, node: fx.Node) -> bool:
        """``a ± b`` with the default ``alpha`` of 1: the op can apply a fused bias ``b``.

        Parameters
        ----------
        node
            The graph node calling the op.
        """
        if self.bias_sign is None or len(node.args) < 2:
            return False
        return node.kwargs.get("alpha", 1) == 1

    def is_complement(self, node: fx.Node) -> bool:
        """``1 − x`` with a data ``x`` (the literal 1 at ``complement_arg``).

        Parameters
        ----------
        node
            The graph node calling the op.
        """
        one = self.complement_arg
        if one is None or len(node.args) < 2:
            return False
        other = node.args[1 - one]
        alpha = node.args[2] if len(node.args) > 2 else node.kwargs.get("alpha", 1)
        return isinstance(node.args[one], (int, float)) and node.args[one] == 1 and (
            isinstance(other, fx.Node) and alpha == 1  # 1 − 2·x is no complement
        )


def _family(value: Family | str) -> Family:
    if isinstance(value, Family):
        return value
    try:
        return Family(value)
    except ValueError:
        names = ", ".join(repr(f.value) for f in Family)
        raise ValueError(f"unknown op family {value!r}; the families are {names}") from None
