"""The registered input kinds, looked up by name and by file suffix."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from dlbacktrace.io.batch import InputFileError
from dlbacktrace.io.kinds.base import InputKind

__all__ = [
    "detect_kind",
    "get_kind",
    "kind_names",
    "register_kind",
    "registered_kinds",
    "unregister_kind",
]

_KINDS: dict[str, InputKind] = {}


def register_kind(kind: InputKind, *, replace: bool = False) -> InputKind:
    """Make ``kind`` available to :func:`read_input`, the CLI, the server and reports.

    Parameters
    ----------
    kind
        The kind; its ``name`` and ``suffixes`` must not clash with a registered kind.
    replace
        Replace a registered kind of the same name instead of refusing.

    Returns
    -------
    InputKind
        ``kind`` (so a registration can be one line).
    """
    if not kind.name or any(not s.startswith(".") or s != s.lower() for s in kind.suffixes):
        raise ValueError(f"{kind!r}: a kind needs a name and lower-case '.suffix'es")
    if kind.name in _KINDS and not replace:
        raise ValueError(f"input kind {kind.name!r} is already registered")
    for other in _KINDS.values():
        shared = set(other.suffixes) & set(kind.suffixes)
        if other.name != kind.name and shared:
            raise ValueError(f"suffixes {sorted(shared)} already belong to kind {other.name!r}")
    _KINDS[kind.name] = kind
    return kind


def unregister_kind(name: str) -> None:
    """Remove a registered kind (tests and plugins that registered one temporarily).

    Parameters
    ----------
    name
        The kind's name.
    """
    _KINDS.pop(name, None)


def registered_kinds() -> Mapping[str, InputKind]:
    """The registered kinds by name, in registration order (a read-only view)."""
    return MappingProxyType(_KINDS)


def kind_names() -> tuple[str, ...]:
    """Names of the registered kinds, in registration order."""
    return tuple(_KINDS)


def get_kind(name: str) -> InputKind:
    """The kind registered as ``name``.

    Parameters
    ----------
    name
        A registered kind's name (``image``, ``text``, ``table``, ``tensor``, ...).
    """
    try:
        return _KINDS[name]
    except KeyError:
        raise InputFileError(f"unknown input kind {name!r}; choose one of {kind_names()}") from None


def detect_kind(path: str | Path) -> str:
    """The name of the kind that reads ``path``, from its suffix.

    Parameters
    ----------
    path
        A file name or path; only its suffix (case-insensitive) is used.
    """
    suffix = Path(path).suffix.lower()
    for kind in _KINDS.values():
        if suffix in kind.suffixes:
            return kind.name
    supported = sorted(s for kind in _KINDS.values() for s in kind.suffixes)
    raise InputFileError(
        f"cannot tell the input kind of {Path(path).name!r} from its suffix; supported: "
        f"{supported}"
    )
