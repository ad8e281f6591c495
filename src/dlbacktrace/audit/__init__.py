"""Audit log: every explanation stored with its context in a hash chain, and re-verified later.

``AuditStore(path_or_url)`` opens the log (SQLite by default); ``store.explain(bt, x, spec=...)``
explains and records; ``verify_record`` replays one record bit for bit; ``verify_chain`` checks
that no record was changed, removed or reordered.
"""

from dlbacktrace.audit.store import AuditError, AuditRecord, AuditStore
from dlbacktrace.audit.verify import ChainReport, VerifyResult, verify_chain, verify_record

__all__ = [
    "AuditError",
    "AuditRecord",
    "AuditStore",
    "ChainReport",
    "VerifyResult",
    "verify_chain",
    "verify_record",
]
