"""Check the audit log: the hash chain (``verify_chain``) and one record's relevance (``verify``).

``verify_record`` reloads the model from the spec stored in the record (or takes one), replays
the record with the stored inputs and options (an explanation; a generation by teacher forcing
its recorded tokens; an aggregate on the stored data), and compares every relevance map bit
for bit; when they differ it reports the largest absolute difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from dlbacktrace.audit.aggregates import replay_aggregate
from dlbacktrace.audit.chain import GENESIS, blob_digest, canonical_json, chain_hash
from dlbacktrace.audit.codec import archive_arrays, archive_digest, relevance_digest
from dlbacktrace.audit.fingerprint import model_fingerprint, module_fingerprint
from dlbacktrace.audit.generations import replay_generation
from dlbacktrace.audit.store import AuditError, AuditStore

__all__ = ["ChainReport", "VerifyResult", "verify_chain", "verify_record"]


@dataclass
class ChainReport:
    """Outcome of a full chain check: ``ok`` and one line per problem found.

    Parameters
    ----------
    count
        Records checked.
    head
        The hash of the last record (``GENESIS`` for an empty log).
    problems
        ``(record id, problem)`` pairs; id 0 is a head mismatch.
    """

    count: int
    head: str
    problems: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-friendly data."""
        return {
            "ok": self.ok,
            "count": self.count,
            "head": self.head,
            "problems": [{"id": i, "problem": p} for i, p in self.problems],
        }


def _head_problem(head: str, expected: str, count: int, found: list) -> str:
    """Say what the head mismatch means given what else was found."""
    text = f"head is {head} after {count} records, expected {expected}: "
    if any(pid == count or "hash mismatch" in why for pid, why in found):
        return text + ("a record was changed (and perhaps re-hashed) — see the records above — "
                       "or records were removed from the end")
    return text + ("the records after the expected head were added, or records were removed "
                   "from the end and the remaining chain is intact")


def verify_chain(store: AuditStore, expect_head: str | None = None) -> ChainReport:
    """Recompute every record's hash and blob digests, and the links between records.

    Parameters
    ----------
    store
        The audit log.
    expect_head
        The head hash kept elsewhere; if given, the last record's hash must equal it (this
        catches records removed from the end).
    """
    prev = GENESIS
    count = 0
    problems: list[tuple[int, str]] = []
    for rec in store.iter_records():
        count += 1
        if rec.prev_hash != prev:
            problems.append((rec.id, "link broken: prev_hash is not the previous record's hash "
                                     "(a record was removed, inserted or reordered)"))
        try:
            content = rec.content
            text = canonical_json(content)
        except ValueError:
            problems.append((rec.id, "content is not valid JSON"))
            prev = rec.hash
            continue
        if text != rec.content_json or chain_hash(rec.prev_hash, text) != rec.hash:
            problems.append((rec.id, "hash mismatch: the record's content was changed"))
        stamp = content.get("timestamp")
        if stamp is not None and rec.created_at != stamp:
            problems.append((rec.id, f"created_at {rec.created_at!r} differs from the hashed "
                                     f"timestamp {stamp!r}: the column was changed"))
        blobs = content.get("blobs", {})
        if blob_digest(rec.explanation_blob) != blobs.get("explanation"):
            problems.append((rec.id, "the stored relevance was changed"))
        if blob_digest(rec.inputs_blob) != blobs.get("inputs"):
            problems.append((rec.id, "the stored inputs were changed"))
        prev = rec.hash
    if expect_head is not None and expect_head != prev:
        problems.append((0, _head_problem(prev, expect_head, count, problems)))
    return ChainReport(count, prev, problems)


@dataclass
class VerifyResult:
    """Replaying one record: bit-identical or not, the largest difference, fingerprints.

    Parameters
    ----------
    record_id
        The record replayed.
    identical
        Whether every relevance map is bit-identical (same dtype, same values).
    max_abs_diff
        The largest absolute difference over all maps.
    fingerprint_match
        Whether the model fingerprint equals the stored one.
    stored_fingerprint, fingerprint
        The model fingerprint stored in the record and the one computed now.
    per_map
        The largest absolute difference of each map (``"total/NAME"``, ``"net/NAME"``;
        infinite when a map is missing or its shape changed).
    stored_rule_set, rule_set
        The relevance rule set of the record and of this library.
    """

    record_id: int
    identical: bool
    max_abs_diff: float
    fingerprint_match: bool
    stored_fingerprint: dict[str, str]
    fingerprint: dict[str, str]
    per_map: dict[str, float]
    stored_rule_set: str = "1"
    rule_set: str = "1"
    kind: str = "explanation"

    @property
    def message(self) -> str:
        """One line saying whether the replay matched, and why not."""
        if self.stored_rule_set != self.rule_set:
            text = (
                f"record {self.record_id}: recorded with rule set {self.stored_rule_set}, this "
                f"library computes rule set {self.rule_set}; the relevance rules changed, so the "
                "maps cannot be compared bit for bit"
            )
            if not self.identical:
                text += f" (largest absolute difference {self.max_abs_diff:.3e})"
            return text
        if self.identical:
            text = f"record {self.record_id}: bit-identical"
        else:
            text = (
                f"record {self.record_id}: DIFFERENT, largest absolute difference "
                f"{self.max_abs_diff:.3e}"
            )
        if not self.fingerprint_match:
            keys = sorted((set(self.fingerprint) | set(self.stored_fingerprint)) - {"digest"})
            changed = [k for k in keys
                       if self.fingerprint.get(k) != self.stored_fingerprint.get(k)]
            text += f" (model fingerprint changed: {', '.join(changed)})"
        return text

    def to_dict(self) -> dict[str, Any]:
        """The result (with its message) as JSON-friendly data."""
        return {
            "record_id": self.record_id,
            "identical": self.identical,
            "max_abs_diff": self.max_abs_diff,
            "fingerprint_match": self.fingerprint_match,
            "stored_fingerprint": self.stored_fingerprint,
            "fingerprint": self.fingerprint,
            "per_map": self.per_map,
            "stored_rule_set": self.stored_rule_set,
            "rule_set": self.rule_set,
            "kind": self.kind,
            "message": self.message,
        }


def _compare(old: dict[str, Any], new: dict[str, Any]) -> tuple[dict[str, float], bool]:
    """Largest absolute difference per map (infinite when missing or reshaped), and whether
    every map is bit-identical (same dtype, same values)."""
    per_map: dict[str, float] = {}
    identical = True
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        if a is None or b is None or tuple(a.shape) != tuple(b.shape):
            per_map[name] = float("inf")
            identical = False
            continue
        a, b = torch.as_tensor(a), torch.as_tensor(b)
        if a.dtype == torch.bool:
            a, b = a.to(torch.uint8), b.to(torch.uint8)
        diff = (a.to(torch.float64) - b.to(torch.float64)).abs()
        per_map[name] = float(diff.max()) if diff.numel() else 0.0
        identical = identical and a.dtype == b.dtype and torch.equal(a, b)
    return per_map, identical


def _maps(exp: Any) -> dict[str, torch.Tensor]:
    maps = {f"total/{n}": t for n, t in exp.total_by_name.items()}
    maps.update({f"net/{n}": t for n, t in (exp.net_by_name or {}).items()})
    return maps


def _model_and_tokenizer(loaded: Any) -> tuple[Any, Any, Any]:
    """``(module, tokenizer, backtrace)`` from whatever the caller passed."""
    from dlbacktrace.engine.backtrace import Backtrace
    from dlbacktrace.io.loading import LoadedModel

    if isinstance(loaded, LoadedModel):
        return loaded.model, loaded.tokenizer, None
    if isinstance(loaded, Backtrace):
        return loaded.model, None, loaded
    if isinstance(loaded, tuple) and len(loaded) == 2:
        model, tokenizer = loaded
        if isinstance(model, Backtrace):
            return model.model, tokenizer, model
        return model, tokenizer, None
    return loaded, None, None


def _replay_explanation(rec: Any, content: dict[str, Any], loaded: Any) -> tuple:
    from dlbacktrace.engine.backtrace import Backtrace

    model, _, bt = _model_and_tokenizer(loaded)
    bt = bt or Backtrace(model)
    inputs = rec.inputs()
    options = dict(content.get("options") or {})
    target = options.pop("target", None)
    attention = options.pop("attention", "value")
    fresh = bt.explain(*inputs.args, target=target, seed=inputs.seed, attention=attention,
                       **options, **inputs.model_kwargs)
    fingerprint = model_fingerprint(bt, inputs.args, inputs.model_kwargs)
    return _maps(rec.explanation()), _maps(fresh), relevance_digest(fresh), fingerprint


def _replay_generation(rec: Any, content: dict[str, Any], loaded: Any) -> tuple:
    model, tokenizer, bt = _model_and_tokenizer(loaded)
    if tokenizer is None:
        raise AuditError(
            f"record {rec.id} is a generation: verifying it needs the tokenizer too; pass a "
            "LoadedModel or (model, tokenizer)"
        )
    fresh = replay_generation(content, rec.inputs(), model, tokenizer, bt).explanation
    fingerprint = module_fingerprint(model)
    return _maps(rec.explanation()), _maps(fresh), relevance_digest(fresh), fingerprint


def _replay_aggregate(rec: Any, content: dict[str, Any], loaded: Any) -> tuple:
    model, _, bt = _model_and_tokenizer(loaded)
    blob = replay_aggregate(content, rec.inputs(), bt or model)
    # The archives' headers (counts, names, the aggregate's own weights digest) are covered
    # by the digest; the arrays are compared one by one.
    _, old = archive_arrays(rec.explanation_blob)
    _, new = archive_arrays(blob)
    fingerprint = module_fingerprint(model)
    return old, new, archive_digest(blob), fingerprint


_REPLAYS = {"explanation": _replay_explanation, "generation": _replay_generation,
            "aggregate": _replay_aggregate}


def verify_record(store: AuditStore, record_id: int, loaded: Any = None) -> VerifyResult:
    """Recompute record ``record_id`` and compare it with what was stored.

    An explanation is explained again from its stored inputs; a generation by teacher forcing
    its recorded tokens (not by generating again); an aggregate by aggregating the stored data
    again. Every stored map or array is compared bit for bit.

    Parameters
    ----------
    store
        The audit log.
    record_id
        The record to replay.
    loaded
        A :class:`~dlbacktrace.io.loading.LoadedModel`, an ``nn.Module``, a
        :class:`~dlbacktrace.Backtrace` (whose captured graphs are then reused) or, for a
        generation, ``(model, tokenizer)``; overrides the model spec stored in the record.
        Records made from the Python API without a spec need it.
    """
    from dlbacktrace.engine.backtrace import RULE_SET
    from dlbacktrace.io.loading import ModelSpec, load_model

    rec = store.get(record_id)
    content = rec.content
    kind = content.get("kind", "explanation")
    if kind not in _REPLAYS:
        raise AuditError(f"record {record_id} has unknown kind {kind!r}: made by a newer "
                         "dlbacktrace?")
    if loaded is None:
        spec = (content.get("model") or {}).get("spec")
        if spec is None:
            raise AuditError(
                f"record {record_id} has no model spec (made through the Python API without "
                "spec=); pass the model to verify it"
            )
        loaded = load_model(ModelSpec.from_dict(spec))
    old, new, digest, fingerprint = _REPLAYS[kind](rec, content, loaded)
    per_map, identical = _compare(old, new)
    stored_digest = (content.get("aggregate") if kind == "aggregate"
                     else content["relevance"])["digest"]
    identical = identical and digest == stored_digest
    stored_fp = content["model"]["fingerprint"]
    return VerifyResult(
        record_id,
        identical,
        max(per_map.values(), default=0.0),
        fingerprint == stored_fp,
        stored_fp,
        fingerprint,
        per_map,
        # records written before rule sets were recorded used rule set 1
        stored_rule_set=str((content.get("versions") or {}).get("rule_set", "1")),
        rule_set=RULE_SET,
        kind=kind,
    )
