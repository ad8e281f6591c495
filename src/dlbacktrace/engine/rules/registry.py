"""The one table ATen op → :class:`~dlbacktrace.engine.rules.spec.OpSpec`.

Declarations are made by op packet (``aten.add``), so every overload of an op shares them.
The built-in ops (:mod:`dlbacktrace.engine.rules.catalog`) and a user's ops are declared with
the same :func:`register_rule`; the graph analysis reads only this table.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from dlbacktrace.engine.rules.spec import Family, OpSpec, Rule, Saturation

_SPECS: dict[Any, OpSpec] = {}

#: What an op without a declaration is: no rule (refused on the relevance path), no traits.
UNDECLARED = OpSpec(op=None, rule=None)

# Sentinel: ``family`` not given (keep a replaced declaration's family and traits).
_KEEP: Any = object()


def _packet(target: Any) -> Any:
    return getattr(target, "overloadpacket", target)


def register_rule(
    op: Any,
    rule: Rule | None,
    family: Family | str = _KEEP,
    *,
    saturation: Saturation | None = _KEEP,
    bias_arg: int | None = _KEEP,
    bias_free: bool = _KEEP,
    **traits: Any,
) -> OpSpec:
    """Declare (or replace) how the engine treats an op: its relevance rule, family and traits.

    ``rule(call, R) -> Contribution``: ``call`` holds the node, its materialised args and output
    (:class:`dlbacktrace.engine.rules.base.Call`); ``R`` is the relevance of the output with a
    leading stream dimension. Return the relevance of each data input and the absorbed amount.
    The family tells the graph analysis what the op is (see :class:`~dlbacktrace.engine.rules.
    spec.Family` for the full list):

    - ``"affine"``: affine in its data input with constant weights. A following activation's
      saturation range reaches the rule as ``call.saturation`` (DESIGN.md 2.1); with
      ``bias_arg``/``bias_free``, an ``add`` of a constant right after it is fused and reaches
      the rule as ``call.bias_add`` (``call.out`` is then that add's output).
    - ``"summing"``: adds input elements into outputs (affine rule, no fusion, no saturation).
    - ``"movement"`` / ``"selection"``: index maps and picks by value; gates, token ids and
      attention probabilities stay what they are through them.
    - ``"gate"``: probability-like output; a product with it sends relevance to the other side.
    - ``"embedding"``: ``(table, ids, …)``; the ids reaching it carry relevance.
    - ``"shape_only"``: depends only on its input's shape; a constant, so ``rule`` is None.
    - ``"attention"``: scaled-dot-product attention (only its rule is used).
    - ``"elementwise"``: no structural role; only the rule is used (activations declare their
      ``saturation``). The default for a new op.

    Parameters
    ----------
    op
        The op (``torch.ops.aten.linear``, a ``torch.library`` custom op, or one overload of
        either; the declaration covers every overload).
    rule
        The relevance rule; None only for ``"shape_only"`` ops.
    family
        The op's family. When not given, replacing the rule of a declared op keeps its family
        and traits; a new op is ``"elementwise"``.
    saturation
        ``(low, high)``: where the op, as an activation, saturates (ReLU ``(0.0, None)``,
        hardtanh ``(-1.0, 1.0)``); a :class:`~dlbacktrace.engine.rules.spec.BoundArg` reads a
        bound from the call. Elementwise, gate and selection ops only.
    bias_arg
        Affine ops: position of the op's own optional bias argument; when a call leaves it
        out, a following ``add`` of a constant is fused as the bias.
    bias_free
        Affine ops without any bias argument (``mm``): a following ``add`` of a constant is
        always fused as the bias.
    **traits
        The remaining :class:`~dlbacktrace.engine.rules.spec.OpSpec` traits (``bijective``,
        ``identity``, ``data_product``, ``attention_probs``, ``bias_sign``, ``keeps_gate``,
        ``complement_arg``, ``fill_arg``).

    Returns
    -------
    OpSpec
        The declaration now in effect.

    Raises
    ------
    ValueError
        For an invalid declaration: an unknown family, a trait that does not apply to the
        family, a ``bias_arg`` outside the op's arguments, a malformed saturation range, or a
        missing rule.
    """
    packet = _packet(op)
    given = {
        name: value
        for name, value in (
            ("family", family), ("saturation", saturation), ("bias_arg", bias_arg),
            ("bias_free", bias_free),
        )
        if value is not _KEEP
    }
    given.update(traits)
    previous = _SPECS.get(packet)
    if previous is not None and "family" not in given:
        spec = dataclasses.replace(previous, rule=rule, **given)
    else:
        spec = OpSpec(op=packet, rule=rule, **given)
    if spec.rule is None and spec.family is not Family.SHAPE_ONLY:
        raise ValueError(
            f"invalid declaration for {packet}: a {spec.family.value} op needs a rule "
            "(only shape_only ops have none)"
        )
    _SPECS[packet] = spec
    return spec


def spec_of(target: Any) -> OpSpec:
    """The declaration of an op (or of the op of an overload); :data:`UNDECLARED` if none.

    Parameters
    ----------
    target
        An op packet or overload, as found in ``node.target``.
    """
    return _SPECS.get(_packet(target), UNDECLARED)


def lookup(target: Any) -> Rule | None:
    """The relevance rule of an op, or None when it has none.

    Parameters
    ----------
    target
        An op packet or overload, as found in ``node.target``.
    """
    return spec_of(target).rule


def specs() -> Mapping[Any, OpSpec]:
    """Every declaration, by op packet (a read-only view of the live table)."""
    return MappingProxyType(_SPECS)


@contextlib.contextmanager
def scoped_rules() -> Iterator[None]:
    """Within the block, declarations may be added or replaced; on exit the table is restored.

    For tests and experiments. A model captured inside the block keeps the analysis it was
    captured with (``Backtrace`` caches captures), so capture again after leaving it.
    """
    saved = dict(_SPECS)
    try:
        yield
    finally:
        _SPECS.clear()
        _SPECS.update(saved)
