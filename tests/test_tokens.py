"""Signed tokens: scoped to purpose and address, expiring where asked, rotatable keys."""

from __future__ import annotations

import base64
import hmac
import re
import string
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import settings as settings_
from hypothesis import strategies as st
from pydantic import SecretStr

from digest.config import Settings
from digest.core.tokens import BadToken, email_fingerprint, make_token, read_token, reader_tokens


@pytest.fixture
def settings(tmp_path) -> Settings:
    return Settings(secret_key=SecretStr("k" * 40), secret_key_file=tmp_path / "key")


def test_token_round_trips_to_subscriber_and_address(settings):
    token = make_token(settings, "unsubscribe", 42, "Ann@Example.org")
    data = read_token(settings, "unsubscribe", token)
    assert data.subscriber_id == 42
    assert data.matches("ann@example.org")
    assert not data.matches("bob@example.org")
    assert "example" not in token.lower()  # the address itself never appears in a link


def test_token_for_one_purpose_is_rejected_for_another(settings):
    token = make_token(settings, "unsubscribe", 1, "a@example.org")
    with pytest.raises(BadToken, match="not valid"):
        read_token(settings, "confirm", token)


def test_tampered_token_is_rejected(settings):
    token = make_token(settings, "confirm", 1, "a@example.org")
    payload, _, rest = token.partition(".")
    forged = payload[:-1] + ("A" if payload[-1] != "A" else "B") + "." + rest
    with pytest.raises(BadToken):
        read_token(settings, "confirm", forged)


def test_token_signed_with_another_key_is_rejected(settings, tmp_path):
    other = Settings(secret_key=SecretStr("x" * 40), secret_key_file=tmp_path / "other")
    with pytest.raises(BadToken):
        read_token(settings, "confirm", make_token(other, "confirm", 1, "a@example.org"))


def test_expired_token_is_rejected(settings, monkeypatch):
    token = make_token(settings, "confirm", 1, "a@example.org")
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(BadToken, match="expired"):
        read_token(settings, "confirm", token, max_age=60)
    assert read_token(settings, "confirm", token, max_age=7200).subscriber_id == 1


def test_old_keys_still_verify_after_rotation(settings, tmp_path):
    token = make_token(settings, "unsubscribe", 7, "a@example.org")
    rotated = Settings(
        secret_key=SecretStr("n" * 40),
        old_secret_keys=[SecretStr("k" * 40)],
        secret_key_file=tmp_path / "key2",
    )
    assert read_token(rotated, "unsubscribe", token).subscriber_id == 7
    fresh = make_token(rotated, "unsubscribe", 7, "a@example.org")
    with pytest.raises(BadToken):
        read_token(settings, "unsubscribe", fresh)


@pytest.mark.parametrize("junk", ["", "abc", "a.b.c", "W10=.x.y", "[1]." * 5])
def test_junk_is_rejected_not_crashing(settings, junk):
    with pytest.raises(BadToken):
        read_token(settings, "confirm", junk)


# --------------------------------------------------------------------------- the compact format

LEGACY_KEY = "legacy-key-" + "0" * 30
RETIRED_KEY = "retired-key-" + "9" * 30
# Minted by the itsdangerous code digest ran before the compact format (fixed key, fixed ids):
# links in mails already sent, which must open for as long as their key is honoured.
LEGACY_TOKENS = [
    ("unsubscribe", 42, "ann@example.org", "WzQyLCI0MzhjNGM3YWZlNjAiXQ.aw-XZw.d1fqm-_AqTZxIl0ZeNYzQWYJIu8"),
    ("preferences", 42, "ann@example.org", "WzQyLCI0MzhjNGM3YWZlNjAiXQ.aw-XZw.w2Sz9n3YBrTgmMD6__VHXdhOWi0"),
    ("unsubscribe", 1234567, "Bob@Example.com", "WzEyMzQ1NjcsIjVmZjg2MGJmMTE5MCJd.aw-XZw.uPCJMnfgKsir6YzRkv0ImZ-KLr8"),
    ("confirm", 7, "cy@example.net", "WzcsImRkMDc3ZWQ3ODJlYSJd.aw-XZw.jYzZif8l7DrhcogON9glo1DA_tM"),
]  # fmt: skip
RETIRED_TOKEN = ("unsubscribe", 99, "dee@example.org", "Wzk5LCJiNmU4MTg3NGI4MDEiXQ.aw-Xaw.YcGuapr2HZVFTP-g4kE3b5NC5I4")  # fmt: skip
ALPHABET = string.ascii_letters + string.digits + "-_"


def keyed(tmp_path: Path, current: str, *old: str) -> Settings:
    return Settings(
        secret_key=SecretStr(current),
        old_secret_keys=[SecretStr(k) for k in old],
        secret_key_file=tmp_path / f"key-{len(old)}",
    )


@pytest.mark.parametrize("purpose", ["unsubscribe", "preferences"])
def test_links_that_never_expire_are_compact(settings, purpose):
    token = make_token(settings, purpose, 1234567, "ann@example.org")
    assert "." not in token and len(token) <= 46
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token)  # URL-safe, no padding
    assert read_token(settings, purpose, token).subscriber_id == 1234567


def test_confirm_tokens_keep_the_timed_format(settings):
    assert make_token(settings, "confirm", 1, "a@example.org").count(".") == 2


def test_the_compact_mac_is_hmac_sha256_under_the_purposes_own_key(settings):
    """The format as documented: MAC = the first 16 bytes of HMAC-SHA256(key for purpose)."""
    token = make_token(settings, "unsubscribe", 300, "Ann@Example.org")
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    payload, mac = raw[:-16], raw[-16:]
    secret = settings.signing_key().encode()
    key = hmac.digest(secret, b"digest.token.v1:unsubscribe", "sha256")
    assert mac == hmac.digest(key, payload, "sha256")[:16]
    assert payload[:2] == bytes((1, 1))  # version 1, purpose unsubscribe
    assert payload[4:10].hex() == email_fingerprint("ann@example.org")
    assert int.from_bytes(payload[10:], "big") == 300


@pytest.mark.parametrize(
    ("made", "used"),
    [
        ("unsubscribe", "preferences"),
        ("preferences", "unsubscribe"),
        ("unsubscribe", "confirm"),
        ("preferences", "confirm"),
        ("confirm", "unsubscribe"),
        ("confirm", "preferences"),
    ],
)
def test_every_purpose_is_scoped_to_itself(settings, made, used):
    token = make_token(settings, made, 5, "a@example.org")
    with pytest.raises(BadToken, match="not valid"):
        read_token(settings, used, token)


def test_a_compact_token_with_another_purposes_byte_and_mac_does_not_verify(settings):
    # Re-labelled as preferences but keeping the unsubscribe MAC: the keys differ, so it fails.
    token = make_token(settings, "unsubscribe", 5, "a@example.org")
    raw = bytearray(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    raw[1] = 2
    relabelled = base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
    with pytest.raises(BadToken):
        read_token(settings, "preferences", relabelled)


def test_a_compact_token_is_bound_to_its_address(settings):
    data = read_token(settings, "preferences", make_token(settings, "preferences", 9, "a@x.org"))
    assert data.matches(" A@X.org ")
    assert not data.matches("b@x.org")


def test_a_compact_token_of_another_key_is_rejected(settings, tmp_path):
    other = keyed(tmp_path, "x" * 40)
    for purpose in ("unsubscribe", "preferences"):
        with pytest.raises(BadToken):
            read_token(settings, purpose, make_token(other, purpose, 1, "a@example.org"))


def test_compact_tokens_rotate_old_key_verifies_removed_key_does_not(tmp_path):
    old = keyed(tmp_path, "o" * 40)
    token = make_token(old, "unsubscribe", 77, "a@example.org")
    rotated = keyed(tmp_path, "n" * 40, "o" * 40)
    assert read_token(rotated, "unsubscribe", token).subscriber_id == 77
    assert make_token(rotated, "unsubscribe", 77, "a@example.org") != token  # signs with new
    removed = keyed(tmp_path, "n" * 40)
    with pytest.raises(BadToken):
        read_token(removed, "unsubscribe", token)


def test_a_compact_token_never_passes_where_an_expiring_one_is_asked_for(settings):
    token = make_token(settings, "unsubscribe", 1, "a@example.org")
    with pytest.raises(BadToken):
        read_token(settings, "unsubscribe", token, max_age=10**9)


def test_reader_tokens_are_make_tokens_pair(settings):
    assert reader_tokens(settings, 12, "Ann@Example.org") == (
        make_token(settings, "unsubscribe", 12, "Ann@Example.org"),
        make_token(settings, "preferences", 12, "Ann@Example.org"),
    )


@pytest.mark.parametrize("purpose", ["unsubscribe", "preferences"])
def test_every_single_character_change_truncation_and_extension_is_rejected(settings, purpose):
    token = make_token(settings, purpose, 1234567, "ann@example.org")
    altered = {token[:i] + c + token[i + 1 :] for i in range(len(token)) for c in ALPHABET}
    altered |= {token[:i] for i in range(len(token))}  # every truncation
    altered |= {token[:i] + token[i + 1 :] for i in range(len(token))}  # every deletion
    altered |= {token + c for c in ALPHABET + "=.~"}  # every one-character extension
    altered |= {c + token for c in ALPHABET}
    altered |= {token + "==", token + "\x80", token + "\ud800", " " + token, token.upper()}
    altered.discard(token)
    for forged in altered:
        with pytest.raises(BadToken):
            read_token(settings, purpose, forged)


@given(st.integers(0, 2**64 - 1), st.emails())
@settings_(max_examples=200, deadline=None)
def test_any_id_and_address_round_trip(subscriber_id, email):
    conf = Settings(secret_key=SecretStr("h" * 40))
    for purpose in ("unsubscribe", "preferences"):
        data = read_token(conf, purpose, make_token(conf, purpose, subscriber_id, email))
        assert data.subscriber_id == subscriber_id and data.matches(email)


def test_an_id_outside_eight_bytes_is_refused(settings):
    with pytest.raises(ValueError):
        make_token(settings, "unsubscribe", 2**64, "a@example.org")
    with pytest.raises(ValueError):
        make_token(settings, "unsubscribe", -1, "a@example.org")


# --------------------------------------------------------------------------- links sent before


@pytest.mark.parametrize(("purpose", "sid", "email", "token"), LEGACY_TOKENS)
def test_links_minted_by_the_itsdangerous_code_keep_verifying(tmp_path, purpose, sid, email, token):
    data = read_token(keyed(tmp_path, LEGACY_KEY), purpose, token)
    assert data.subscriber_id == sid and data.matches(email)
    # …after a rotation too, while the old key is honoured
    rotated = keyed(tmp_path, "n" * 40, RETIRED_KEY, LEGACY_KEY)
    assert read_token(rotated, purpose, token).subscriber_id == sid


@pytest.mark.parametrize(("purpose", "sid", "email", "token"), LEGACY_TOKENS)
def test_legacy_links_stay_scoped_and_tamper_proof(tmp_path, purpose, sid, email, token):
    conf = keyed(tmp_path, LEGACY_KEY)
    for other in {"confirm", "unsubscribe", "preferences"} - {purpose}:
        with pytest.raises(BadToken):
            read_token(conf, other, token)  # type: ignore[arg-type]
    for i in range(len(token)):
        for c in "AQg_-.":
            forged = token[:i] + c + token[i + 1 :]
            if forged != token:
                with pytest.raises(BadToken):
                    read_token(conf, purpose, forged)
    with pytest.raises(BadToken):
        read_token(keyed(tmp_path, "n" * 40), purpose, token)  # its key removed


def test_a_legacy_link_of_a_retired_key_verifies_until_the_key_is_removed(tmp_path):
    purpose, sid, _email, token = RETIRED_TOKEN
    assert read_token(keyed(tmp_path, LEGACY_KEY, RETIRED_KEY), purpose, token).subscriber_id == sid
    with pytest.raises(BadToken):
        read_token(keyed(tmp_path, LEGACY_KEY), purpose, token)
