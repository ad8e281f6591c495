"""Where batches are explained: in this process, or on Ray workers.

Both backends yield partial aggregates **in batch order**, so the caller merges them in one
fixed order and the result does not depend on the backend, the number of workers or the order
in which batches finished. Ray is imported only when the Ray backend is used.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

import torch

from dlbacktrace.aggregate.compute import AggSpec, explain_batch
from dlbacktrace.aggregate.result import GlobalExplanation
from dlbacktrace.aggregate.sources import Batch, DataSource
from dlbacktrace.engine.backtrace import Backtrace


def local_partials(
    bt: Backtrace, source: DataSource, start: int, spec: AggSpec
) -> Iterator[GlobalExplanation]:
    """Explain the batches one after another in this process.

    Parameters
    ----------
    bt
        The ``Backtrace`` that explains each batch.
    source
        Where the batches come from.
    start
        The first batch to explain; earlier ones are skipped (resume).
    spec
        What to aggregate (mode, target, layers, text, ...).

    Returns
    -------
    An iterator of partial aggregates, one per batch, in batch order.
    """
    for batch in source.batches(start):
        yield explain_batch(bt, batch, spec)


# Per worker process: the Backtrace of each model seen recently (by fingerprint), so a worker
# captures a model once and keeps it across batches and across aggregate() calls.
_WORKER_CACHE: OrderedDict[str, Backtrace] = OrderedDict()
_WORKER_CACHE_SIZE = 4


def _worker_backtrace(key: str, model_box: list) -> Backtrace:
    bt = _WORKER_CACHE.get(key)
    if bt is None:
        import ray

        bt = Backtrace(ray.get(model_box[0]))  # the model is fetched once per worker process
        _WORKER_CACHE[key] = bt
        while len(_WORKER_CACHE) > _WORKER_CACHE_SIZE:
            _WORKER_CACHE.popitem(last=False)
    _WORKER_CACHE.move_to_end(key)
    return bt


def _explain_remote(key: str, model_box: list, spec: AggSpec, batch: Batch) -> GlobalExplanation:
    return explain_batch(_worker_backtrace(key, model_box), batch, spec)


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
    model_key: str,
    source: DataSource,
    start: int,
    spec: AggSpec,
    num_workers: int,
    address: str | None = None,
) -> Iterator[GlobalExplanation]:
    """Explain batches as Ray tasks, ``num_workers`` at a time; yield partials in batch order.

    The model is put in the object store once (its parameters and buffers, with its class by
    reference, so the class must be importable on the workers). Each worker process fetches it
    once, builds its own ``Backtrace`` and keeps it (keyed by ``model_key``, the model's
    fingerprint), so captures are reused across batches and calls. The driver reads the batches
    and keeps at most ``num_workers`` of them (and as many finished partials) at once. A local
    Ray is started (and stopped afterwards) when none is running and no ``address`` is given.

    Parameters
    ----------
    model
        The model; its class must be importable on the workers.
    model_key
        The model's fingerprint, keying each worker's cached ``Backtrace``.
    source
        Where the batches come from (read by the driver).
    start
        The first batch to explain; earlier ones are skipped (resume).
    spec
        What to aggregate; sent to the object store once.
    num_workers
        Batches explained at once (at least 1; also the CPUs of a local Ray).
    address
        The Ray cluster to connect to when Ray is not already initialised.

    Returns
    -------
    An iterator of partial aggregates, one per batch, in batch order.
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
    pending: dict[Any, int] = {}  # ref -> batch index
    try:
        task = ray.remote(num_cpus=1)(_explain_remote)
        model_box = [ray.put(model)]  # boxed: tasks fetch it only when not cached
        spec_ref = ray.put(spec)  # sent once (a text spec holds the whole vocabulary)
        done: dict[int, GlobalExplanation] = {}
        next_index = start
        batches = source.batches(start)
        exhausted = False
        while True:
            while not exhausted and len(pending) < num_workers:
                batch = next(batches, None)
                if batch is None:
                    exhausted = True
                    break
                pending[task.remote(model_key, model_box, spec_ref, batch)] = batch.index
            if not pending:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            index = pending.pop(ready[0])
            done[index] = ray.get(ready[0])
            while next_index in done:
                yield done.pop(next_index)
                next_index += 1
    finally:
        for ref in pending:
            ray.cancel(ref)
        if started:
            ray.shutdown()
