"""Engagement tracking's pure helpers: the key readers are counted under, and their keyed hash.

A reader is counted once per issue under `reader_key`, an HMAC of (issue, subscriber) with a key
derived from the signing key, so uniques need no per-reader history and the hash leads nowhere.
"""

from __future__ import annotations

import hashlib
import hmac

from digest.config import Settings

__all__ = ["reader_key", "tracking_key"]


def tracking_key(settings: Settings) -> bytes:
    """The engagement key: derived from the signing key for this one purpose, so a reader key
    is never a token of another kind (and rotating DIGEST_SECRET_KEY starts uniques afresh)."""
    return hmac.digest(settings.signing_key().encode(), b"digest.engagement", "sha256")


def reader_key(key: bytes, issue_id: int, subscriber_id: int) -> str:
    """The reader's 64-hex key in one issue: the same reader in another issue gets another key,
    so rows of two issues cannot be joined into one reader's history."""
    return hmac.new(key, f"{issue_id}:{subscriber_id}".encode(), hashlib.sha256).hexdigest()
