"""Signed tokens for confirm, unsubscribe and preference links.

Each token is scoped to one purpose and one subscriber (id and address), so an unsubscribe token
cannot confirm, and a token for one address is useless for another. Confirm tokens expire;
unsubscribe and preference tokens do not (old mails must keep working). Retired keys in
`DIGEST_OLD_SECRET_KEYS` still verify, so the secret can be rotated without breaking links.

Two formats, told apart by shape (a compact token holds no "."):

- **compact** (unsubscribe, preferences; what a send mints twice per reader): URL-safe base64
  without padding of `version · purpose · key id (2) · address fingerprint (6) · subscriber id
  (1–8, big-endian, shortest) · MAC (16)`, the MAC an HMAC-SHA256 under a key derived per
  purpose from the secret. The key id (a keyed hash of the secret) names the key that signed it,
  so verifying picks that key instead of trying each; the MAC is still compared in constant time.
- **itsdangerous** `URLSafeTimedSerializer` (`payload.timestamp.signature`): every link made
  before the compact format, which keeps verifying forever (sent mails live forever), and the
  confirm tokens still minted today: they expire, so they need the timestamp, and they are one
  per sign-up, never in a send's per-reader work.
"""

from __future__ import annotations

import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from itsdangerous import BadData, BadSignature, SignatureExpired, URLSafeTimedSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from digest.config import Settings

__all__ = [
    "BadToken",
    "Purpose",
    "TokenData",
    "email_fingerprint",
    "make_token",
    "read_token",
    "reader_tokens",
    "verify_token",
]

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


# --------------------------------------------------------------------------- compact format

_VERSION = 1
# The purposes minted compact, and their byte. Confirm stays timed (itsdangerous), see above.
_COMPACT_PURPOSES: dict[str, int] = {"unsubscribe": 1, "preferences": 2}
_KEY_ID_BYTES = 2
_FINGERPRINT_BYTES = 6  # the 12 hex digits of `email_fingerprint`
_HEAD_BYTES = 2 + _KEY_ID_BYTES + _FINGERPRINT_BYTES
# 128 bits of HMAC-SHA256: a forged link is one guess in 2**128.
_MAC_BYTES = 16
_ID_MAX_BYTES = 8
_ID_LIMIT = 1 << (8 * _ID_MAX_BYTES)
# 10 head + 1..8 id + 16 MAC = 27..34 bytes = 36..46 base64 characters.
_COMPACT_RE = re.compile(r"[A-Za-z0-9_-]{36,46}")
_URLSAFE = bytes.maketrans(b"+/", b"-_")
_STANDARD = bytes.maketrans(b"-_", b"+/")


def _purpose_key(secret: str, purpose: str) -> bytes:
    # Its own key per purpose: a MAC for one purpose is never valid for another, and none of
    # these keys is itsdangerous' or click tracking's (other derivations of the same secret).
    return hmac.digest(secret.encode(), b"digest.token.v1:" + purpose.encode(), "sha256")


@lru_cache(maxsize=64)
def _mac_states(secret: str, purpose: str) -> tuple[Any, Any]:
    """SHA-256 with HMAC's inner and outer padded key already absorbed (RFC 2104).

    `_mac` continues copies of these, which gives exactly `hmac.digest(key, payload, "sha256")`
    at a third of its cost: hmac.digest sets the key up again on every call, and a send signs
    two links per reader.
    """
    key = _purpose_key(secret, purpose).ljust(64, b"\0")  # 32 bytes: under SHA-256's block
    return (
        hashlib.sha256(key.translate(_IPAD)),
        hashlib.sha256(key.translate(_OPAD)),
    )


_IPAD = bytes(b ^ 0x36 for b in range(256))
_OPAD = bytes(b ^ 0x5C for b in range(256))


def _mac(secret: str, purpose: str, payload: bytes) -> bytes:
    inner_state, outer_state = _mac_states(secret, purpose)
    inner = inner_state.copy()
    inner.update(payload)
    outer = outer_state.copy()
    outer.update(inner.digest())
    return bytes(outer.digest()[:_MAC_BYTES])


@lru_cache(maxsize=64)
def _head(secret: str, purpose: str) -> bytes:
    """version · purpose · key id: the same for every token of one key and purpose."""
    key_id = hmac.digest(secret.encode(), b"digest.token.key-id", "sha256")[:_KEY_ID_BYTES]
    return bytes((_VERSION, _COMPACT_PURPOSES[purpose])) + key_id


def _fingerprint(email: str) -> bytes:
    return hashlib.sha256(email.strip().lower().encode()).digest()[:_FINGERPRINT_BYTES]


def _id_bytes(subscriber_id: int) -> bytes:
    return subscriber_id.to_bytes((subscriber_id.bit_length() + 7) // 8 or 1, "big")


def _encode(raw: bytes) -> str:
    return binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()


def _compact(secret: str, purpose: str, subscriber_id: int, fingerprint: bytes) -> str:
    if not 0 <= subscriber_id < _ID_LIMIT:
        raise ValueError("a subscriber id in a token is 0 to 2**64 - 1")
    payload = _head(secret, purpose) + fingerprint + _id_bytes(subscriber_id)
    return _encode(payload + _mac(secret, purpose, payload))


def _read_compact(keys: Sequence[str], purpose: Purpose, token: str) -> TokenData:
    invalid = BadToken("this link is not valid")
    code = _COMPACT_PURPOSES.get(purpose)
    if code is None or not _COMPACT_RE.fullmatch(token):
        raise invalid
    try:
        raw = binascii.a2b_base64(token.encode().translate(_STANDARD) + b"=" * (-len(token) % 4))
    except binascii.Error:
        raise invalid from None
    # Only the exact string `make_token` wrote: base64 ignores a last character's unused low
    # bits, so an altered string can decode to the same bytes; re-encoding tells them apart.
    if _encode(raw) != token:
        raise invalid
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    id_bytes = payload[_HEAD_BYTES:]
    if (
        not 1 <= len(id_bytes) <= _ID_MAX_BYTES
        or (len(id_bytes) > 1 and id_bytes[0] == 0)  # not the shortest form
        or payload[0] != _VERSION
        or payload[1] != code
    ):
        raise invalid
    key_id = payload[2:4]
    for secret in keys:
        if _head(secret, purpose)[2:] != key_id:
            continue
        if hmac.compare_digest(mac, _mac(secret, purpose, payload)):
            return TokenData(
                subscriber_id=int.from_bytes(id_bytes, "big"),
                email_hash=payload[4:_HEAD_BYTES].hex(),
            )
    raise invalid


# --------------------------------------------------------------------------- the API


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
    """A link token for `purpose`, `subscriber_id` and `email`, signed with the current key:
    compact for the links that never expire, itsdangerous' timed format for confirm."""
    if purpose == "confirm":
        keys = settings.verification_keys()
        return _serializer(keys, purpose).dumps([subscriber_id, email_fingerprint(email)])
    return _compact(settings.signing_key(), purpose, subscriber_id, _fingerprint(email))


def reader_tokens(settings: Settings, subscriber_id: int, email: str) -> tuple[str, str]:
    """(unsubscribe, preferences) tokens for one reader, exactly as `make_token` makes them:
    the pair every list mail carries, the address hashed once for both.

    A send's per-reader work, so `_compact` and `_mac` are written out here once per token,
    with the key's state for both purposes looked up once (`_pair`).
    """
    if not 0 <= subscriber_id < _ID_LIMIT:
        raise ValueError("a subscriber id in a token is 0 to 2**64 - 1")
    (u_head, u_inner, u_outer), (p_head, p_inner, p_outer) = _pair(settings.signing_key())
    tail = _fingerprint(email) + subscriber_id.to_bytes(
        (subscriber_id.bit_length() + 7) // 8 or 1, "big"
    )
    tokens = []
    for head, inner_state, outer_state in (
        (u_head, u_inner, u_outer),
        (p_head, p_inner, p_outer),
    ):
        payload = head + tail
        inner = inner_state.copy()
        inner.update(payload)
        outer = outer_state.copy()
        outer.update(inner.digest())
        raw = payload + outer.digest()[:_MAC_BYTES]
        tokens.append(
            binascii.b2a_base64(raw, newline=False).translate(_URLSAFE).rstrip(b"=").decode()
        )
    return tokens[0], tokens[1]


@lru_cache(maxsize=16)
def _pair(secret: str) -> tuple[tuple[bytes, Any, Any], tuple[bytes, Any, Any]]:
    return (
        (_head(secret, "unsubscribe"), *_mac_states(secret, "unsubscribe")),
        (_head(secret, "preferences"), *_mac_states(secret, "preferences")),
    )


def read_token(
    settings: Settings, purpose: Purpose, token: str, max_age: int | None = None
) -> TokenData:
    """Verify `token` for `purpose`; `max_age` in seconds (None: never expires)."""
    return verify_token(settings.verification_keys(), purpose, token, max_age)


def verify_token(
    keys: Sequence[str], purpose: Purpose, token: str, max_age: int | None = None
) -> TokenData:
    """`read_token` against the keys given (current first), so a caller that must not create
    a signing key (the quality checks) verifies with the ones that exist.

    Dispatched by shape: a token without "." is compact, anything else itsdangerous'. A compact
    token carries no time, so where an expiring one is asked for (`max_age`) it never verifies.
    """
    if not isinstance(token, str):
        raise BadToken("this link is not valid")
    if "." not in token:
        if not keys:
            raise BadToken("no signing key exists yet, so no link can verify")
        data = _read_compact(keys, purpose, token)
        if max_age is not None:
            raise BadToken("this link is not valid")
        return data
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
