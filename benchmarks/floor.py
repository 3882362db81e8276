"""The send floor: the least work any sender must do for the same issue and the same subscribers.

Read the active subscribers in id order, sign each one's unsubscribe and preferences links with
the same `digest.core.tokens.make_token`, encode the same v3 JSON body, POST it over one keep-alive
connection. No ledger, no retries, no leases: `send / floor` is what digest's safety costs.

    python -m benchmarks.floor --week 2026-W17   # settings from DIGEST_* env, prints JSON
"""

from __future__ import annotations

import argparse
import html
import http.client
import json
import sys
import time
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select

from digest.config import Settings, get_settings
from digest.core.tokens import make_token
from digest.store import db
from digest.store.db import issues, subscribers

__all__ = ["run_floor"]

BATCH = 1000


def _personalization(settings: Settings, sid: int, email: str, name: str | None) -> dict[str, Any]:
    base = settings.base_url
    unsubscribe = f"{base}/unsubscribe/{make_token(settings, 'unsubscribe', sid, email)}"
    preferences = f"{base}/preferences/{make_token(settings, 'preferences', sid, email)}"
    to = {"email": email, "name": name} if name and not any(c in name for c in ",;") else None
    return {
        "to": [to or {"email": email}],
        "substitutions": {
            "%%unsubscribe_url%%": unsubscribe,
            "%%preferences_url%%": preferences,
            "%%name%%": name or "",
            "%%name_html%%": html.escape(name or ""),
        },
        "headers": {
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        },
        "custom_args": {"subscriber_id": str(sid)},
    }


def run_floor(settings: Settings, week: str) -> dict[str, Any]:
    """Send `week`'s stored issue to every active subscriber; returns counts and seconds."""
    started = time.monotonic()
    engine = db.make_engine(settings.database_url)
    with engine.connect() as conn:
        subject, text, body_html = conn.execute(
            select(issues.c.subject, issues.c.text, issues.c.html).where(issues.c.week == week)
        ).one()
    api_key = settings.sendgrid_api_key.get_secret_value() if settings.sendgrid_api_key else ""
    url = urlsplit(settings.sendgrid_host)
    connection = http.client.HTTPConnection(url.hostname or "127.0.0.1", url.port or 80)
    headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
    common = {
        "from": {"email": settings.sender_email, "name": settings.sender_name},
        "subject": subject,
        "content": [
            {"type": "text/plain", "value": text},
            {"type": "text/html", "value": body_html},
        ],
        "categories": ["digest", f"digest-{week}"],
        "custom_args": {"issue_week": week},
    }
    sent = calls = 0
    after = 0
    while True:
        query = (
            select(subscribers.c.id, subscribers.c.email, subscribers.c.name)
            .where(subscribers.c.status == "active", subscribers.c.id > after)
            .order_by(subscribers.c.id)
            .limit(BATCH)
        )
        with engine.connect() as conn:
            page = conn.execute(query).all()
        if not page:
            break
        after = page[-1][0]
        payload = {"personalizations": [_personalization(settings, *row) for row in page], **common}
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        connection.request("POST", "/v3/mail/send", body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        calls += 1
        if response.status != 202:
            raise SystemExit(f"floor: the server answered {response.status}")
        sent += len(page)
    connection.close()
    engine.dispose()
    return {"sent": sent, "api_calls": calls, "seconds": time.monotonic() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--week", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(run_floor(get_settings(), args.week)), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
