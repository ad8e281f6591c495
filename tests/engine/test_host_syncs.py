"""No host synchronisation inside the backward sweep (issue 15, item 2).

On a GPU every read-back of a device value (``.item()``, ``bool(t)``, ``float(t)``, ``.cpu()``)
stalls the host until the device catches up. The sweep must queue its work without one: the
ledger stays on the device until the sweep ends, and which nodes need their saturated form is
settled before it starts. ``torch.cuda.set_sync_debug_mode`` works on CUDA only, so the
synchronising Tensor methods are patched and counted instead (on CPU they cost nothing, but
the same calls would synchronise on a GPU). Syncs before and after the sweep (target
resolution, the batched saturation check, the single ledger read-back, the final checks) are
allowed; they are counted and recorded as test properties.
"""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest
import torch

import dlbacktrace.engine.sweep as sweep_module
from dlbacktrace import Backtrace

try:
    import arch_models
except ImportError:  # tests/ imported as a package
    from tests import arch_models

SYNCING = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "cpu", "numpy")


@contextlib.contextmanager
def counted_syncs():
    """Count synchronising Tensor calls, split into inside / outside the sweep loop."""
    counts: Counter = Counter()
    where = {"inside": False}
    originals = {name: getattr(torch.Tensor, name) for name in SYNCING}

    def counting(name, original):
        def call(self, *args, **kwargs):
            counts["inside" if where["inside"] else "outside"] += 1
            if where["inside"]:
                counts[f"inside:{name}"] += 1
            return original(self, *args, **kwargs)

        return call

    run = sweep_module._run_sweep

    def run_marked(*args, **kwargs):
        where["inside"] = True
        try:
            return run(*args, **kwargs)
        finally:
            where["inside"] = False

    inherited = {name for name in originals if name not in torch.Tensor.__dict__}
    try:
        for name, original in originals.items():
            setattr(torch.Tensor, name, counting(name, original))
        sweep_module._run_sweep = run_marked
        yield counts
    finally:
        sweep_module._run_sweep = run
        for name, original in originals.items():
            if name in inherited:  # put the class back exactly: no copies of base methods
                delattr(torch.Tensor, name)
            else:
                setattr(torch.Tensor, name, original)


def test_the_counter_sees_a_sync_inside_the_sweep(monkeypatch):
    """Negative control: a rule that reads a value back is caught."""
    from dlbacktrace.engine.rules import registry

    case = arch_models.mlp(torch.float32)
    bt = Backtrace(case.model)
    case.explain(bt, case.batch_target)  # capture outside the count
    relu = torch.ops.aten.relu
    original = registry.lookup(relu)

    def reading_rule(call, R):
        float(R.sum())
        return original(call, R)

    def lookup(op):
        spec = registry.spec_of(op)
        return reading_rule if spec.op is relu else spec.rule

    monkeypatch.setattr(registry, "lookup", lookup)
    with counted_syncs() as counts:
        case.explain(bt, case.batch_target)
    assert counts["inside"] >= 1


@pytest.mark.parametrize("mode", ["default", "contrast"])
@pytest.mark.parametrize("builder", ["mlp", "cnn", "bert_sdpa"])
def test_no_host_sync_inside_the_sweep(builder, mode, record_property):
    case = getattr(arch_models, builder)(torch.float32)
    bt = Backtrace(case.model, mode=mode)
    case.explain(bt, case.batch_target)  # the first call captures
    with counted_syncs() as counts:
        exp = case.explain(bt, case.batch_target)
    record_property("syncs_outside_sweep", counts["outside"])
    inside = {k: v for k, v in counts.items() if k.startswith("inside:")}
    assert counts["inside"] == 0, inside
    assert abs(exp.conservation_error) < 1e-4  # the sweep still did its work
    assert exp.absorbed  # the ledger was read back
