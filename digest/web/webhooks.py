"""SendGrid's Event Webhook route: checks a batch's ECDSA signature, then hands it to the store.

Whenever a public key is configured, an unsigned or forged batch changes nothing (403); in
production without a key every batch is refused (it could be anyone's). `digest.store.events`
keeps the events, suppresses their subscribers and counts opens.
"""

from __future__ import annotations

import binascii
import json
import logging
from functools import lru_cache

from cryptography.exceptions import UnsupportedAlgorithm
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sendgrid.helpers.eventwebhook import EventWebhook
from sendgrid.helpers.eventwebhook.eventwebhook_header import EventWebhookHeader
from starlette.concurrency import run_in_threadpool

from digest.logs import get_logger, log_event
from digest.store.db import utcnow
from digest.store.events import handle_events
from digest.web.deps import EngineDep, SettingsDep

__all__ = ["MAX_BODY_BYTES", "NO_KEY_IN_PRODUCTION", "router", "verify_signature"]

log = get_logger(__name__)

# Included with `max_webhook_request_bytes` as its body limit, not the pages' limit.
router = APIRouter()

# A ceiling of the route's own, whatever `max_webhook_request_bytes` allows.
MAX_BODY_BYTES = 10 * 1024 * 1024
NO_KEY_IN_PRODUCTION = (
    "SendGrid webhook posts are refused: DIGEST_ENVIRONMENT is production and no verification "
    "key is configured. In SendGrid, Settings → Mail Settings → Event Webhook, enable Signed "
    "Event Webhook Requests and set DIGEST_SENDGRID_WEBHOOK_PUBLIC_KEY to the public key shown."
)


@lru_cache(maxsize=4)
def _verifier(public_key: str) -> EventWebhook:
    return EventWebhook(public_key.strip())


def verify_signature(public_key: str, payload: bytes, signature: str, timestamp: str) -> bool:
    """SendGrid's signed event webhook: ECDSA P-256 over timestamp + raw body (SHA-256).

    Anything malformed — the signature, its base64, the body's encoding — is simply "not valid".
    """
    if not signature or not timestamp:
        return False
    try:
        text = payload.decode("utf-8")
        return bool(_verifier(public_key).verify_signature(text, signature, timestamp))
    except (UnicodeDecodeError, binascii.Error, ValueError, TypeError):
        return False


@router.post("/webhooks/sendgrid", include_in_schema=False)
async def sendgrid_events(
    request: Request, settings: SettingsDep, engine: EngineDep
) -> JSONResponse:
    """Receive one Event Webhook batch (a JSON array of events)."""
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return JSONResponse({"error": "payload too large"}, status_code=413)
    body = await request.body()
    if len(body) > MAX_BODY_BYTES:
        return JSONResponse({"error": "payload too large"}, status_code=413)
    public_key = settings.sendgrid_webhook_public_key
    if not public_key and settings.environment == "production":
        # Unsigned posts could suppress any reader and invent opens; in development (a local
        # test of the webhook) they are still taken.
        log_event(log, "webhook_key_missing", level=logging.ERROR)
        return JSONResponse({"error": NO_KEY_IN_PRODUCTION}, status_code=403)
    if public_key:
        try:
            _verifier(public_key.strip())
        except (ValueError, TypeError, UnsupportedAlgorithm):
            log_event(log, "webhook_key_invalid", level=logging.ERROR)
            return JSONResponse({"error": "webhook verification key is invalid"}, 500)
        signature = request.headers.get(EventWebhookHeader.SIGNATURE, "")
        timestamp = request.headers.get(EventWebhookHeader.TIMESTAMP, "")
        if not verify_signature(public_key, body, signature, timestamp):
            log_event(log, "webhook_signature_rejected", level=logging.WARNING)
            return JSONResponse({"error": "invalid signature"}, status_code=403)
    try:
        batch = json.loads(body)
    except ValueError:
        return JSONResponse({"error": "body is not JSON"}, status_code=400)
    if not isinstance(batch, list):
        return JSONResponse({"error": "expected a JSON array of events"}, status_code=400)
    result = await run_in_threadpool(handle_events, engine, batch, utcnow(), settings=settings)
    log_event(
        log,
        "webhook_events",
        received=result.received,
        stored=result.stored,
        duplicates=result.duplicates,
        suppressed=result.suppressed,
        counted=result.counted,
    )
    return JSONResponse(
        {
            "received": result.received,
            "stored": result.stored,
            "duplicates": result.duplicates,
            "suppressed": result.suppressed,
        }
    )
