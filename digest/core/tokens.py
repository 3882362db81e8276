"""Signed tokens for confirm, unsubscribe and preference links.

Each token is scoped to one purpose (a salt) and one subscriber (id and address), so an
unsubscribe token cannot confirm, and a token for one address is useless for another. Confirm
tokens expire; unsubscribe tokens do not (old mails must keep working). Retired keys in
`DIGEST_OLD_SECRET_KEYS` still verify, so the secret can be rotated without breaking links.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

from itsdangerous import BadData, BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from digest.config import Settings

__all__ = ["BadToken", "Purpose", "TokenData", "make_token", "read_token", "verify_token"]

Purpose = Literal["confirm", "unsubscribe", "preferences"]

# payload.timestamp.signature in URL-safe base64 (a leading "." marks a compressed payload).
_TOKEN_RE = re.compile(r"\.?[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class BadToken(Exception):
    """The token is forged, tampered with, expired, or made for another purpose."""


@dataclass(frozen=True, slots=True)
class TokenData:
    subscriber_id: int
    email_hash: str

    def matches(self, email: str) -> bool:
        return self.email_hash == email_fingerprint(email)


def email_fingerprint(email: str) -> str:
    """A short hash of the address: binds a token to it without putting the address in URLs."""
    return hashlib.sha256(email.strip().lower().encode()).hexdigest()[:12]


def _serializer(keys: Sequence[str], purpose: Purpose) -> URLSafeTimedSerializer:
    # `keys` current first; itsdangerous signs with the last key and accepts any of them.
    return _cached_serializer(tuple(reversed(keys)), purpose)


@lru_cache(maxsize=32)
def _cached_serializer(keys: tuple[str, ...], purpose: Purpose) -> URLSafeTimedSerializer:
    # A send makes two tokens per recipient; building the serializer (and its derived keys)
    # once per key set instead of per token is a measurable share of a million-reader send.
    return URLSafeTimedSerializer(list(keys), salt=f"digest.{purpose}")


def _canonical(token: str) -> bool:
    """Only the exact string `make_token` wrote verifies.

    itsdangerous decodes leniently: it drops non-ASCII characters, accepts padding and ignores
    the unused low bits of a segment's last character, so without this check many altered
    strings would open the same link (and a lone surrogate would raise UnicodeEncodeError).
    """
    if not isinstance(token, str) or not _TOKEN_RE.fullmatch(token):
        return False
    try:
        return all(
            base64_encode(base64_decode(part)).decode("ascii") == part
            for part in token.removeprefix(".").split(".")
        )
    except BadData:
        return False


def make_token(settings: Settings, purpose: Purpose, subscriber_id: int, email: str) -> str:
    keys = settings.verification_keys()
    return _serializer(keys, purpose).dumps([subscriber_id, email_fingerprint(email)])


def read_token(
    settings: Settings, purpose: Purpose, token: str, max_age: int | None = None
) -> TokenData:
    """Verify `token` for `purpose`; `max_age` in seconds (None: never expires)."""
    return verify_token(settings.verification_keys(), purpose, token, max_age)


def verify_token(
    keys: Sequence[str], purpose: Purpose, token: str, max_age: int | None = None
) -> TokenData:
    """`read_token` against the keys given (current first), so a caller that must not create
    a signing key (the quality checks) verifies with the ones that exist."""
    if not _canonical(token):
        raise BadToken("this link is not valid")
    if not keys:
        raise BadToken("no signing key exists yet, so no link can verify")
    try:
        data = _serializer(keys, purpose).loads(token, max_age=max_age)
    except SignatureExpired:
        raise BadToken("this link has expired") from None
    except BadSignature:
        raise BadToken("this link is not valid") from None
    if (
        not isinstance(data, list)
        or len(data) != 2
        or not isinstance(data[0], int)
        or not isinstance(data[1], str)
    ):
        raise BadToken("this link is not valid")
    return TokenData(subscriber_id=data[0], email_hash=data[1])
