"""The SMTP floor: the least work any sender must do to get the same issue to the same readers
over SMTP — one message each, since SMTP has no per-recipient substitutions.

Read the active readers by keyset, sign each one's two links (`benchmarks.floor`'s signer, one
`hmac.digest` each), fill them into the issue's text and HTML with `str.replace`, write the
headers as one f-string, encode the HTML as base64 (the issue's lines are longer than SMTP's
998) and `sendmail` it with `smtplib` over one STARTTLS connection kept open for the whole send.
No ledger, no journal, no retries, no pool, nothing imported from digest.

    python -m benchmarks.smtp_floor --week 2026-W17   # DIGEST_* env, prints JSON
"""

from __future__ import annotations

import argparse
import base64
import html
import json
import os
import smtplib
import socket
import ssl
import sys
import time
from datetime import UTC, datetime
from email.utils import format_datetime, make_msgid
from typing import Any
from urllib.parse import unquote, urlsplit

from benchmarks.floor import _ISSUE, _pages, _postgres, _signer, _sqlite

__all__ = ["run_smtp_floor"]


def run_smtp_floor(
    database_url: str, week: str, *, secret: str, base_url: str, smtp_url: str, ca_file: str,
    sender_email: str = "digest@example.com",
) -> dict[str, Any]:  # fmt: skip
    started = time.monotonic()
    query, close = _postgres(database_url) if "postgres" in database_url else _sqlite(database_url)
    subject, text, body_html = query(_ISSUE, (week,))[0]
    url = urlsplit(smtp_url)
    conn = smtplib.SMTP(url.hostname or "127.0.0.1", url.port or 587, "localhost")
    # No Nagle stall between a message and its answer (waiting, not work: digest sets it too).
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    conn.starttls(context=ssl.create_default_context(cafile=ca_file))
    if url.username:
        conn.login(unquote(url.username), unquote(url.password or ""))
    sign = _signer(secret, base_url.rstrip("/"))
    domain = sender_email.rpartition("@")[2]
    sent = 0
    for page in _pages(query):
        for sid, address, name in page:
            unsubscribe, preferences = sign(sid, address)
            values = {
                "%%unsubscribe_url%%": unsubscribe,
                "%%preferences_url%%": preferences,
                "%%name%%": name or "",
                "%%name_html%%": html.escape(name) if name else "",
            }
            plain, rich = text, body_html
            for marker, value in values.items():
                plain = plain.replace(marker, value)
                rich = rich.replace(marker, value)
            head = (
                f"From: {sender_email}\r\nTo: {address}\r\nSubject: {subject}\r\n"
                f"Date: {format_datetime(datetime.now(UTC))}\r\n"
                f"Message-ID: {make_msgid(domain=domain)}\r\n"
                f"List-Unsubscribe: <{unsubscribe}>\r\n"
                "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
                "MIME-Version: 1.0\r\n"
                'Content-Type: multipart/alternative; boundary="b"\r\n\r\n'
                '--b\r\nContent-Type: text/plain; charset="utf-8"\r\n'
                "Content-Transfer-Encoding: base64\r\n\r\n"
            )
            message = b"".join(
                (
                    head.encode(),
                    base64.encodebytes(plain.encode()).replace(b"\n", b"\r\n"),
                    b'--b\r\nContent-Type: text/html; charset="utf-8"\r\n'
                    b"Content-Transfer-Encoding: base64\r\n\r\n",
                    base64.encodebytes(rich.encode()).replace(b"\n", b"\r\n"),
                    b"--b--\r\n",
                )
            )
            conn.sendmail(sender_email, [address], message)
            sent += 1
    conn.quit()
    close()
    return {"sent": sent, "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--week", required=True)
    args = parser.parse_args(argv)
    env = os.environ
    result = run_smtp_floor(
        env["DIGEST_DATABASE_URL"],
        args.week,
        secret=env["DIGEST_SECRET_KEY"],
        base_url=env.get("DIGEST_BASE_URL", "http://localhost:8000"),
        smtp_url=env["DIGEST_SMTP_URL"],
        ca_file=env["DIGEST_SMTP_CA_FILE"],
    )
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
