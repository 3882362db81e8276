"""The send floor: the least work any sender must do for the same issue and the same subscribers.

Read the active subscribers by keyset (sqlite3, or psycopg for PostgreSQL, from the same URL),
sign each one's unsubscribe and preferences links with one `hmac.digest` each, build the same v3
JSON body digest sends, encode it with orjson and POST it over one keep-alive `http.client`
connection. No ledger, no retries, no leases, and nothing imported from digest: the floor is never
digest's own code, so `send / floor` is what digest's safety and structure cost.

    python -m benchmarks.floor --week 2026-W17   # settings from DIGEST_* env, prints JSON
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import html
import http.client
import json
import os
import sqlite3
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import orjson

__all__ = ["run_floor"]

BATCH = 1000
_PAGE = (
    "SELECT id, email, name FROM subscribers "
    "WHERE status = 'active' AND confirmed_at IS NOT NULL AND id > {p} ORDER BY id LIMIT {p}"
)
_ISSUE = "SELECT subject, text, html FROM issues WHERE week = {p}"

Rows = list[tuple[int, str, str | None]]


def _sqlite(url: str) -> tuple[Callable[[str, tuple[Any, ...]], list[Any]], Callable[[], None]]:
    conn = sqlite3.connect(url.split("///", 1)[1])

    def query(sql: str, args: tuple[Any, ...]) -> list[Any]:
        return conn.execute(sql.format(p="?"), args).fetchall()

    return query, conn.close


def _postgres(url: str) -> tuple[Callable[[str, tuple[Any, ...]], list[Any]], Callable[[], None]]:
    import psycopg

    rest = url.split("://", 1)[1]
    conn = psycopg.connect("postgresql://" + rest, autocommit=True)

    def query(sql: str, args: tuple[Any, ...]) -> list[Any]:
        return conn.execute(sql.format(p="%s"), args).fetchall()

    return query, conn.close


def _pages(query: Callable[[str, tuple[Any, ...]], list[Any]]) -> Iterator[Rows]:
    after = 0
    while True:
        page: Rows = query(_PAGE, (after, BATCH))
        if not page:
            return
        yield page
        after = page[-1][0]


def _signer(secret: str, base_url: str) -> Callable[[int, str], tuple[str, str]]:
    """Two links per reader, each one HMAC-SHA256 (128 bits kept) over purpose, id and address,
    URL-safe base64 without padding: the least a link bound to reader and purpose can cost."""
    unsubscribe_key = hmac.digest(secret.encode(), b"unsubscribe", "sha256")
    preferences_key = hmac.digest(secret.encode(), b"preferences", "sha256")
    unsubscribe_prefix = f"{base_url}/unsubscribe/"
    preferences_prefix = f"{base_url}/preferences/"
    digest = hmac.digest
    encode = base64.urlsafe_b64encode

    def sign(sid: int, email: str) -> tuple[str, str]:
        fingerprint = hashlib.sha256(email.encode()).digest()[:6]
        payload = sid.to_bytes(8, "big") + fingerprint
        unsubscribe = encode(payload + digest(unsubscribe_key, payload, "sha256")[:16])
        preferences = encode(payload + digest(preferences_key, payload, "sha256")[:16])
        return (
            unsubscribe_prefix + unsubscribe.rstrip(b"=").decode(),
            preferences_prefix + preferences.rstrip(b"=").decode(),
        )

    return sign


def _personalizations(rows: Rows, sign: Callable[[int, str], tuple[str, str]]) -> list[Any]:
    out = []
    for sid, email, name in rows:
        unsubscribe, preferences = sign(sid, email)
        to = (
            {"email": email, "name": name} if name and "," not in name and ";" not in name else None
        )
        out.append(
            {
                "to": [to or {"email": email}],
                "substitutions": {
                    "%%unsubscribe_url%%": unsubscribe,
                    "%%preferences_url%%": preferences,
                    "%%name%%": name or "",
                    "%%name_html%%": html.escape(name) if name else "",
                },
                "headers": {
                    "List-Unsubscribe": f"<{unsubscribe}>",
                    "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                },
                "custom_args": {"subscriber_id": str(sid)},
            }
        )
    return out


def run_floor(
    database_url: str,
    week: str,
    *,
    secret: str,
    base_url: str,
    sendgrid_host: str,
    api_key: str,
    sender_email: str = "digest@example.com",
    sender_name: str = "AI Term of the Week",
) -> dict[str, Any]:
    """Send `week`'s stored issue to every active subscriber; returns counts and seconds."""
    started = time.monotonic()
    query, close = _postgres(database_url) if "postgres" in database_url else _sqlite(database_url)
    subject, text, body_html = query(_ISSUE, (week,))[0]
    url = urlsplit(sendgrid_host)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    common = {
        "from": {"email": sender_email, "name": sender_name},
        "subject": subject,
        "content": [
            {"type": "text/plain", "value": text},
            {"type": "text/html", "value": body_html},
        ],
        "categories": ["digest", f"digest-{week}"],
        "tracking_settings": {
            "click_tracking": {"enable": False, "enable_text": False},
            "open_tracking": {"enable": False},
            "subscription_tracking": {"enable": False},
        },
    }
    sign = _signer(secret, base_url.rstrip("/"))
    sent = calls = 0
    for page in _pages(query):
        payload = {
            "personalizations": _personalizations(page, sign),
            **common,
            "custom_args": {"issue_week": week, "batch_key": f"{week}-{calls + 1:06d}"},
        }
        connection.request("POST", "/v3/mail/send", body=orjson.dumps(payload), headers=headers)
        response = connection.getresponse()
        response.read()
        calls += 1
        if response.status != 202:
            raise SystemExit(f"floor: the server answered {response.status}")
        sent += len(page)
    connection.close()
    close()
    return {"sent": sent, "api_calls": calls, "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--week", required=True)
    args = parser.parse_args(argv)
    env = os.environ
    result = run_floor(
        env["DIGEST_DATABASE_URL"],
        args.week,
        secret=env["DIGEST_SECRET_KEY"],
        base_url=env.get("DIGEST_BASE_URL", "http://localhost:8000"),
        sendgrid_host=env["DIGEST_SENDGRID_HOST"],
        api_key=env.get("SENDGRID_API_KEY", ""),
    )
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
