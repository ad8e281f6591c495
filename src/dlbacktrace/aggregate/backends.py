"""Where batches are explained: in this process, or on Ray workers.

Both backends yield partial aggregates **in batch order**, so the caller merges them in one
fixed order and the result does not depend on the backend, the number of workers or the order
in which batches finished. Ray is imported only when the Ray backend is used.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from ..backtrace import Backtrace
from .compute import AggSpec, explain_batch
from .result import GlobalExplanation
from .sources import Batch, DataSource


def local_partials(
    bt: Backtrace, source: DataSource, start: int, spec: AggSpec
) -> Iterator[GlobalExplanation]:
    """Explain the batches one after another in this process."""
    for batch in source.batches(start):
        yield explain_batch(bt, batch, spec)


class _Worker:
    """A Ray actor: its own copy of the model and its own ``Backtrace`` (capture cache)."""

    def __init__(self, model: torch.nn.Module, spec: AggSpec) -> None:
        self.bt = Backtrace(model)
        self.spec = spec

    def explain(self, batch: Batch) -> GlobalExplanation:
        return explain_batch(self.bt, batch, self.spec)


def _ray() -> Any:
    try:
        import ray
    except ImportError as exc:
        raise ImportError(
            "backend='ray' needs Ray: pip install 'dlbacktrace[ray]'"
        ) from exc
    return ray


def ray_partials(
    model: torch.nn.Module,
    source: DataSource,
    start: int,
    spec: AggSpec,
    num_workers: int,
    address: str | None = None,
    in_flight_per_worker: int = 2,
) -> Iterator[GlobalExplanation]:
    """Explain batches on ``num_workers`` Ray actors; yield their partials in batch order.

    The model is shipped once (``ray.put``: its parameters and buffers, with its class by
    reference, so the class must be importable on the workers); every actor builds its own
    ``Backtrace``. Batches are read by the driver and handed to whichever actor has room; at
    most ``num_workers * in_flight_per_worker`` batches (and as many partials) are held at once.
    A local Ray is started (and stopped afterwards) when none is running and no ``address`` is
    given; an existing cluster is joined with ``address``.
    """
    if num_workers < 1:
        raise ValueError(f"num_workers must be at least 1, got {num_workers}")
    ray = _ray()
    started = False
    if not ray.is_initialized():
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                                   "configure_logging": False}
        if address is None:
            options["num_cpus"] = num_workers
        ray.init(address=address, **options)
        started = True
    actors: list[Any] = []
    try:
        worker_cls = ray.remote(num_cpus=1)(_Worker)
        model_ref = ray.put(model)
        actors = [worker_cls.remote(model_ref, spec) for _ in range(num_workers)]
        load = dict.fromkeys(range(num_workers), 0)
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (batch index, actor)
        done: dict[int, GlobalExplanation] = {}
        next_index = start
        batches = source.batches(start)
        exhausted = False
        while True:
            while not exhausted and min(load.values()) < in_flight_per_worker:
                batch = next(batches, None)
                if batch is None:
                    exhausted = True
                    break
                actor = min(load, key=lambda a: (load[a], a))
                pending[actors[actor].explain.remote(batch)] = (batch.index, actor)
                load[actor] += 1
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            index, actor = pending.pop(ready[0])
            load[actor] -= 1
            done[index] = ray.get(ready[0])
            while next_index in done:
                yield done.pop(next_index)
                next_index += 1
    finally:
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
