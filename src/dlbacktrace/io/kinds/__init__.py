"""Input kinds: one :class:`InputKind` per modality, registered by name and file suffix.

Adding a modality is one module with an ``InputKind`` subclass and one
:func:`register_kind` call (below for the built-in ones); reading files, server requests and
report rows then work for it everywhere.
"""

from dlbacktrace.io.kinds.base import (
    InputKind,
    ReadOptions,
    RequestField,
    RequestLimits,
    RowInputs,
)
from dlbacktrace.io.kinds.image import ImageKind
from dlbacktrace.io.kinds.registry import (
    detect_kind,
    get_kind,
    kind_names,
    register_kind,
    registered_kinds,
    unregister_kind,
)
from dlbacktrace.io.kinds.table import TableKind
from dlbacktrace.io.kinds.tensor import TensorKind
from dlbacktrace.io.kinds.text import TextKind

__all__ = [
    "ImageKind",
    "InputKind",
    "ReadOptions",
    "RequestField",
    "RequestLimits",
    "RowInputs",
    "TableKind",
    "TensorKind",
    "TextKind",
    "detect_kind",
    "get_kind",
    "kind_names",
    "register_kind",
    "registered_kinds",
    "unregister_kind",
]

register_kind(ImageKind())
register_kind(TextKind())
register_kind(TableKind())
register_kind(TensorKind())
