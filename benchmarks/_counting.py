"""Per-call counts for the core benchmark: ATen ops dispatched and host synchronisations.

Two independent views of "how often does this call stop the device and wait for the host":

* Python-level: the ``torch.Tensor`` methods that copy a value to the host (``item``,
  ``tolist``, ``__bool__``, ``__float__``, ``__int__``, ``__index__``, ``cpu``, ``numpy``) are
  wrapped for the duration of one call and their calls counted.  On an accelerator each of
  them blocks until the device has caught up; on the CPU they cost nothing, but they are the
  same calls, so the count tells what a GPU run would pay.  Calls made from C++ are not seen.
* ATen-level: a ``TorchDispatchMode`` counts every ATen op the call dispatches (forward and,
  through autograd's propagated thread-local state, backward), and separately the ops whose
  result needs device data on the host: ``_local_scalar_dense`` (what ``item``/``bool``/...
  lower to), the ops whose output shape depends on the data (``nonzero``, ``masked_select``,
  ``unique``, boolean-mask indexing, ...), and copies from a non-CPU device to the CPU.

Only the benchmark uses this module; it patches ``torch.Tensor`` while a count runs, so it must
not be used concurrently from several threads.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

SYNC_METHODS: tuple[str, ...] = (
    "item",
    "tolist",
    "__bool__",
    "__float__",
    "__int__",
    "__index__",
    "cpu",
    "numpy",
)

# ATen ops (overload packets) that read device data on the host: scalar reads, and ops whose
# output shape depends on the values.
_DATA_DEPENDENT_OPS: frozenset[str] = frozenset(
    {
        "_local_scalar_dense",
        "nonzero",
        "masked_select",
        "_unique",
        "_unique2",
        "unique_dim",
        "unique_consecutive",
        "unique_dim_consecutive",
        "repeat_interleave",
        "_assert_async",
    }
)
_BOOL_INDEX_OPS: frozenset[str] = frozenset(
    {"index", "index_put", "index_put_", "_index_put_impl_"}
)
_COPY_OPS: frozenset[str] = frozenset({"_to_copy", "copy_"})


@dataclass
class CallCounts:
    """What one call dispatched.

    Parameters
    ----------
    aten_ops
        Number of ATen ops dispatched during the call.
    host_sync_calls
        Number of calls of the ``SYNC_METHODS`` of ``torch.Tensor`` (from Python).
    aten_host_reads
        Number of dispatched ATen ops that need device data on the host.
    by_method
        ``host_sync_calls`` broken down by method name.
    by_op
        ``aten_ops`` broken down by overload packet name (``aten.addmm``, ...).
    """

    aten_ops: int = 0
    host_sync_calls: int = 0
    aten_host_reads: int = 0
    by_method: dict[str, int] = field(default_factory=dict)
    by_op: dict[str, int] = field(default_factory=dict)

    def as_dict(self, top_ops: int = 15) -> dict[str, Any]:
        """JSON-friendly form; only the ``top_ops`` most frequent ops are listed."""
        top = sorted(self.by_op.items(), key=lambda kv: (-kv[1], kv[0]))[:top_ops]
        return {
            "aten_ops": self.aten_ops,
            "host_sync_calls": self.host_sync_calls,
            "aten_host_reads": self.aten_host_reads,
            "by_method": dict(sorted(self.by_method.items())),
            "top_ops": dict(top),
        }


def _is_host_read(packet: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    if packet in _DATA_DEPENDENT_OPS:
        return True
    if packet in _BOOL_INDEX_OPS and len(args) > 1:
        indices = args[1] if isinstance(args[1], (list, tuple)) else ()
        return any(
            isinstance(i, torch.Tensor) and i.dtype in (torch.bool, torch.uint8) for i in indices
        )
    if packet in _COPY_OPS and args and isinstance(args[0], torch.Tensor):
        if packet == "copy_":
            dst, src = args[0], args[1] if len(args) > 1 else None
            return (
                isinstance(src, torch.Tensor)
                and src.device.type != "cpu"
                and dst.device.type == "cpu"
            )
        target = kwargs.get("device")
        return args[0].device.type != "cpu" and target is not None and (
            torch.device(target).type == "cpu"
        )
    return False


class _OpCounter(TorchDispatchMode):
    """Counts the ATen ops that reach the Python dispatcher, by overload packet."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()
        self.host_reads = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: ANN001
        kwargs = kwargs or {}
        packet = func.overloadpacket.__name__
        self.ops[f"{func.namespace}.{packet}"] += 1
        if _is_host_read(packet, args, kwargs):
            self.host_reads += 1
        return func(*args, **kwargs)


@contextmanager
def _count_sync_methods(counts: Counter[str]) -> Iterator[None]:
    """Wrap ``torch.Tensor``'s host-reading methods to count their calls; restore on exit."""
    saved: dict[str, Any] = {}
    own = torch.Tensor.__dict__

    def wrap(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(original)
        def counted(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return original(self, *args, **kwargs)

        return counted

    try:
        for name in SYNC_METHODS:
            saved[name] = own.get(name)
            setattr(torch.Tensor, name, wrap(name, getattr(torch.Tensor, name)))
        yield
    finally:
        for name, original in saved.items():
            if original is None:
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


def count_call(fn: Callable[[], Any]) -> tuple[Any, CallCounts]:
    """Run ``fn`` once under both counters and return its result and the counts.

    Parameters
    ----------
    fn
        The call to count; it is run exactly once.
    """
    methods: Counter[str] = Counter()
    mode = _OpCounter()
    with _count_sync_methods(methods), mode:
        result = fn()
    counts = CallCounts(
        aten_ops=sum(mode.ops.values()),
        host_sync_calls=sum(methods.values()),
        aten_host_reads=mode.host_reads,
        by_method=dict(methods),
        by_op=dict(mode.ops),
    )
    return result, counts
