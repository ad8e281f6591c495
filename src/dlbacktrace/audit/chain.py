"""The hash chain: canonical JSON of a record's content, linked to the previous record's hash.

``hash_n = SHA-256(hash_{n-1} || "\\n" || canonical_json(content_n))``. Content holds the
digests of the stored blobs (relevance, inputs), so changing any byte of a record, deleting or
reordering records breaks the chain from that point on. Removing records at the *end* leaves a
valid shorter chain: keep the head hash somewhere else and pass it to ``verify-chain``.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

__all__ = ["GENESIS", "blob_digest", "canonical_json", "chain_hash"]

GENESIS = "0" * 64


def canonical_json(content: Any) -> str:
    """One exact text per value: sorted keys, no whitespace, no NaN (it has no JSON form).

    Parameters
    ----------
    content
        A JSON-serialisable value (a ``ValueError`` is raised for NaN or infinities).
    """
    return json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False)


def chain_hash(prev_hash: str, content_json: str) -> str:
    """The record's hash: covers its canonical content and the previous record's hash.

    Parameters
    ----------
    prev_hash
        The previous record's hash (``GENESIS`` for the first record).
    content_json
        The record's content as :func:`canonical_json` text.

    Returns
    -------
    The SHA-256 hex digest.
    """
    return hashlib.sha256(f"{prev_hash}\n{content_json}".encode()).hexdigest()


def blob_digest(data: bytes) -> str:
    """SHA-256 hex digest of a stored blob.

    Parameters
    ----------
    data
        The blob's bytes.
    """
    return hashlib.sha256(data).hexdigest()
