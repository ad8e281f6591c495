"""Give every call of a reused parameter-free module its own copy (for Captum's DeepLift).

Captum's DeepLift keeps per-call state on activation modules, so a module called twice in one
forward (torchvision's ResNet blocks call one ``ReLU`` twice) breaks it. ``torch.fx`` traces
the model and retargets each further call to a fresh copy; parameters stay shared with the
user's model, which is never modified.
"""

from __future__ import annotations

import copy
from collections import Counter

from torch import fx, nn


def unshare_modules(model: nn.Module) -> nn.Module:
    """``model`` itself when nothing is reused or it cannot be traced, else a GraphModule in
    which every reused parameter-free module call has its own (non-in-place) copy."""
    try:
        graph_module = fx.symbolic_trace(model)
    except Exception:  # untraceable models (data-dependent control flow): used as they are
        return model
    calls = [n for n in graph_module.graph.nodes if n.op == "call_module"]
    uses = Counter(n.target for n in calls)
    seen: Counter[str] = Counter()
    changed = False
    for node in calls:
        module = graph_module.get_submodule(node.target)
        if uses[node.target] < 2 or any(True for _ in module.parameters()):
            continue
        seen[node.target] += 1
        if seen[node.target] == 1:
            continue
        fresh = copy.deepcopy(module)
        if hasattr(fresh, "inplace"):
            fresh.inplace = False
        name = f"{node.target.replace('.', '_')}_call{seen[node.target]}"
        graph_module.add_submodule(name, fresh)
        node.target = name
        changed = True
    if not changed:
        return model
    graph_module.recompile()
    return graph_module


__all__ = ["unshare_modules"]
