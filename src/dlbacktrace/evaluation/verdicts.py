"""Plain-language verdicts per method, derived from the numbers with stated thresholds.

A verdict that compares two methods (or a method with a fixed threshold) is only given when the
difference exceeds :data:`SE_MARGIN` standard errors: for two methods scored on the same
instances the standard error of the paired per-instance differences (over the instances both
have), otherwise the root sum of squares of the two standard errors. Time and memory are one
measurement per method (no standard error), so their verdicts need a ratio of at least
:data:`COST_RATIO`. Every threshold is in :data:`THRESHOLDS`, and the report prints them.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = ["COST_RATIO", "RANK_METRICS", "SE_MARGIN", "THRESHOLDS", "rank", "verdicts"]

SE_MARGIN = 2.0
COST_RATIO = 2.0
# The faithfulness score methods are ranked by: the first of these a task has.
RANK_METRICS = ("abpc", "abpc_mask", "faithfulness_correlation", "insertion_auc", "deletion_auc")
THRESHOLDS = {
    "difference": f"a difference is claimed only beyond {SE_MARGIN:g} standard errors "
                  "(paired over the instances both methods explained)",
    "max_sensitivity": "unstable under noise: max-sensitivity above 0.5 (the map moves by more "
                       "than half its size under input noise of 2% of the value range); stable: "
                       "below 0.1",
    "randomisation_similarity": "fails the randomisation check: rank similarity to the maps of "
                                "the weight-randomised model above 0.5; passes: below 0.2",
    "determinism": "not deterministic: any instance whose rerun differs in a bit",
    "run_variance": "seed-dependent: run-to-run spread above 0.1 of the mean |map|",
    "cost": f"slower / more memory: a ratio to dlb of at least {COST_RATIO:g} (one timed run "
            "per method, no standard error)",
}  # fmt: skip
UNSTABLE, STABLE = 0.5, 0.1
RANDOMISED_FAIL, RANDOMISED_PASS = 0.5, 0.2
SEED_SPREAD = 0.1
CONTROL = "random"
REFERENCE = "dlb"


def _score(row: dict[str, Any], metric: str) -> dict[str, Any] | None:
    score = (row.get("metrics") or {}).get(metric)
    if score is None or score.get("n", 0) == 0 or math.isnan(score["mean"]):
        return None
    return score


def _se(score: dict[str, Any]) -> float:
    if "se" in score:
        return float(score["se"])
    n = score["n"]
    return float(score["std"]) / math.sqrt(n) if n > 1 else 0.0


def difference(a: dict[str, Any], b: dict[str, Any], metric: str) -> tuple[float, float]:
    """Mean difference ``a - b`` of ``metric`` and its standard error.

    Paired over the first instances both were scored on when the per-instance values are
    there (the runner explains the same instances in the same order), else from the two
    standard errors.

    Parameters
    ----------
    a, b
        Two methods' results (``metrics`` and optionally ``values``).
    metric
        The metric's name.
    """
    va = (a.get("values") or {}).get(metric)
    vb = (b.get("values") or {}).get(metric)
    if va and vb and min(len(va), len(vb)) > 1:
        m = min(len(va), len(vb))
        d = torch.tensor(va[:m], dtype=torch.float64) - torch.tensor(vb[:m], dtype=torch.float64)
        return float(d.mean()), float(d.std()) / math.sqrt(m)
    sa, sb = _score(a, metric), _score(b, metric)
    return sa["mean"] - sb["mean"], math.hypot(_se(sa), _se(sb))


def _beyond(diff: float, se: float) -> bool:
    """``diff`` exceeds the margin (a zero standard error needs a non-zero difference)."""
    return abs(diff) > SE_MARGIN * se and diff != 0


def rank(rows: dict[str, Any], higher: dict[str, bool]) -> dict[str, Any]:
    """The methods ordered by the task's faithfulness score, best first.

    Parameters
    ----------
    rows
        ``{method: result}`` of one task.
    higher
        ``{metric: higher_is_better}``.

    Returns
    -------
    dict
        ``metric`` (None when no method has a faithfulness score) and ``order``: the methods
        with that score, best first, then the others in run order.
    """
    scored = {m: r for m, r in rows.items() if "error" not in r}
    for metric in RANK_METRICS:
        have = {m: _score(r, metric)["mean"] for m, r in scored.items() if _score(r, metric)}
        if have:
            sign = -1.0 if higher.get(metric, True) else 1.0
            order = sorted(have, key=lambda m: sign * have[m])
            return {"metric": metric, "higher_is_better": higher.get(metric, True),
                    "order": order + [m for m in rows if m not in have]}
    return {"metric": None, "higher_is_better": True, "order": list(rows)}


def _times(ratio: float) -> str:
    return f"{ratio:.0f}×" if ratio >= 10 else f"{ratio:.1f}×"


def _faithfulness(method: str, rows: dict[str, Any], ranking: dict[str, Any],
                  labels: dict[str, str]) -> list[str]:
    metric = ranking["metric"]
    if metric is None or _score(rows[method], metric) is None:
        return []
    label = labels.get(metric, metric)
    sign = 1.0 if ranking["higher_is_better"] else -1.0
    out = []
    candidates = [m for m in ranking["order"] if m != CONTROL and _score(rows[m], metric)]
    if candidates:
        best = candidates[0]
        if method == best:
            tied = [m for m in candidates[1:]
                    if not _beyond(*difference(rows[best], rows[m], metric))]
            out.append(f"most faithful on this data ({label})" if not tied else
                       f"most faithful on this data ({label}), tied within {SE_MARGIN:g} SE "
                       f"with {', '.join(tied)}")
        elif method != CONTROL:
            diff, se = difference(rows[method], rows[best], metric)
            if not _beyond(diff, se):
                out.append(f"tied with {best} for most faithful ({label} within "
                           f"{SE_MARGIN:g} SE)")
    if method != CONTROL and CONTROL in rows and _score(rows[CONTROL], metric):
        diff, se = difference(rows[method], rows[CONTROL], metric)
        gain = sign * diff
        if not _beyond(diff, se):
            out.append(f"not distinguishable from the random control on {label}")
        elif gain > 0:
            out.append(f"more faithful than random ({label} {'+' if diff > 0 else ''}"
                       f"{diff:.3g} ± {se:.2g} SE)")
        else:
            out.append(f"less faithful than random on {label}")
    if method == CONTROL:
        out.append("control: a random map that ignores the model")
    return out


def _upper(score: dict[str, Any]) -> float:
    return score["mean"] + SE_MARGIN * _se(score)


def _lower(score: dict[str, Any]) -> float:
    return score["mean"] - SE_MARGIN * _se(score)


def _stability(row: dict[str, Any]) -> list[str]:
    out = []
    sens = _score(row, "max_sensitivity")
    if sens is not None:
        if _lower(sens) > UNSTABLE:
            out.append(f"unstable under noise (max-sensitivity {sens['mean']:.2f})")
        elif _upper(sens) < STABLE:
            out.append(f"stable under noise (max-sensitivity {sens['mean']:.2g})")
    det = _score(row, "determinism")
    if det is not None:
        if det["mean"] < 1.0:
            differ = round((1.0 - det["mean"]) * det["n"])
            out.append(f"not deterministic: {differ} of {det['n']} reruns differ")
        else:
            out.append(f"deterministic (bit-identical reruns, n={det['n']})")
    spread = _score(row, "run_variance")
    if spread is not None and _lower(spread) > SEED_SPREAD:
        out.append(f"depends on the random seed (run-to-run spread {spread['mean']:.2f})")
    rnd = _score(row, "randomisation_similarity")
    if rnd is not None:
        if _lower(rnd) > RANDOMISED_FAIL:
            out.append("fails the randomisation check (the map barely changes when the "
                       f"weights are randomised; similarity {rnd['mean']:.2f})")
        elif _upper(rnd) < RANDOMISED_PASS:
            out.append(f"passes the randomisation check (similarity {rnd['mean']:.2f})")
    return out


def _cost(method: str, rows: dict[str, Any]) -> list[str]:
    if method == REFERENCE or REFERENCE not in rows:
        return []
    out = []
    mine, ref = _score(rows[method], "time_per_instance_ms"), _score(rows[REFERENCE],
                                                                     "time_per_instance_ms")
    if mine and ref and mine["mean"] > 0 and ref["mean"] > 0:
        ratio = mine["mean"] / ref["mean"]
        if ratio >= COST_RATIO:
            out.append(f"{_times(ratio)} slower than {REFERENCE}")
        elif ratio <= 1 / COST_RATIO:
            out.append(f"{_times(1 / ratio)} faster than {REFERENCE}")
    mine, ref = _score(rows[method], "peak_memory_mb"), _score(rows[REFERENCE], "peak_memory_mb")
    if mine and ref and ref["mean"] > 1.0 and mine["mean"] >= COST_RATIO * ref["mean"]:
        out.append(f"{_times(mine['mean'] / ref['mean'])} the peak memory of {REFERENCE}")
    return out


def verdicts(rows: dict[str, Any], higher: dict[str, bool],
             labels: dict[str, str] | None = None) -> dict[str, Any]:
    """The ranking and each method's verdicts on one task.

    Parameters
    ----------
    rows
        ``{method: result}`` as the runner returns them (``metrics`` with mean, std, se, n,
        and per-instance ``values``).
    higher
        ``{metric: higher_is_better}``.
    labels
        Display names of metrics (default: their names).

    Returns
    -------
    dict
        ``ranking`` (see :func:`rank`), ``verdicts`` (``{method: [sentence, ...]}``, failed
        methods say why) and ``thresholds`` (:data:`THRESHOLDS`).
    """
    labels = labels or {}
    ranking = rank(rows, higher)
    said: dict[str, list[str]] = {}
    for method, row in rows.items():
        if "error" in row:
            said[method] = [f"failed: {row['error'][:200]}"]
            continue
        said[method] = (_faithfulness(method, rows, ranking, labels) + _stability(row)
                        + _cost(method, rows))
    return {"ranking": ranking, "verdicts": said, "thresholds": dict(THRESHOLDS)}
