"""The SendGrid transport: one v3 `POST /v3/mail/send` per batch of up to 1000 recipients.

It speaks through the `sendgrid` library (SendGridAPIClient over python_http_client) and turns
what comes back into digest's terms: a message id, a `RetryableError` or a `PermanentError`.
"""

from __future__ import annotations

import http.client
import json
import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson
from python_http_client.client import Response
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient

from digest.config import Settings
from digest.core.headers import ascii_address, safe_display_name
from digest.core.mails import Message, Recipient
from digest.delivery.transport import PermanentError, RetryableError, SendResult
from digest.logs import get_logger, log_event

__all__ = ["MAX_REQUEST_BYTES", "SendGridTransport", "build_payload", "tracking_settings"]

log = get_logger("digest.delivery.sendgrid")

# SendGrid refuses a mail larger than 30 MB in total; we keep each request under 20 MB so the
# JSON's escaping and SendGrid's own bookkeeping never push a batch over the edge.
MAX_REQUEST_BYTES = 20 * 1024 * 1024
# An upper bound on what one recipient adds to a request (address, name twice — once
# HTML-escaped — two signed URLs, the List-Unsubscribe headers, custom args; JSON-escaped).
# Used to size batches before they are claimed, so a batch is never split after the fact.
PER_RECIPIENT_BYTES = 8 * 1024
# How long after our own attempt the Email Activity API may still be catching up: "not found"
# this soon means "cannot tell yet", not "did not go out".
ACTIVITY_SETTLE_SECONDS = 120.0

_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


class _HideSecrets(logging.Filter):
    """python_http_client logs request headers and whole payloads at DEBUG.

    Headers carry the API key and payloads carry every address and unsubscribe token of a
    batch (megabytes a line), so payload lines are dropped and the key is cut from the rest.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message.startswith("PAYLOAD:"):
            return False
        if any(secret in message for secret in self.secrets):
            for secret in self.secrets:
                message = message.replace(secret, "***")
            record.msg, record.args = message, ()
        return True


_hide_secrets = _HideSecrets()
logging.getLogger("python_http_client.client").addFilter(_hide_secrets)


def _address(email: str, name: str | None) -> dict[str, str]:
    # The domain goes out in punycode, so an IDN reader gets the mail wherever SendGrid relays
    # it (ascii_address refuses a non-ASCII local part: SendGrid would drop it silently).
    address = ascii_address(email)
    # SendGrid mis-parses a `to` name holding "," or ";" and drops the mail as an invalid
    # address, so such names are left out of the header (the greeting still uses them);
    # so are names failing digest's header rules (an encoded-word SendGrid would pass on).
    name = safe_display_name(name)
    if name and "," not in name and ";" not in name:
        return {"email": address, "name": name}
    return {"email": address}


def _personalization(recipient: Recipient) -> dict[str, Any]:
    item: dict[str, Any] = {"to": [_address(recipient.email, recipient.name)]}
    # The recipient's own dicts go in as they are (the payload is encoded at once, never kept);
    # only another kind of mapping is copied, into the dict the JSON encoder takes.
    if recipient.substitutions:
        item["substitutions"] = _as_dict(recipient.substitutions)
    if recipient.headers:
        item["headers"] = _as_dict(recipient.headers)
    if recipient.custom_args:
        item["custom_args"] = _as_dict(recipient.custom_args)
    return item


def _as_dict(mapping: Mapping[str, str]) -> dict[str, str]:
    return mapping if type(mapping) is dict else dict(mapping)


def _personalizations(
    recipients: Sequence[Recipient],
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Each recipient's personalization, and the ones SendGrid cannot take with why (see
    `_refusal`): one pass that both builds and judges, so a batch is built once."""
    items: list[dict[str, Any]] = []
    refused: dict[str, str] = {}
    for recipient in recipients:
        if not recipient.email.rpartition("@")[0].isascii():
            refused[recipient.email] = _NON_ASCII_LOCAL_PART
            continue
        try:
            items.append(_personalization(recipient))
        except ValueError as exc:
            refused[recipient.email] = f"SendGrid cannot take this recipient: {exc}; {_AGAIN}"
    return items, refused


def tracking_settings(message: Message, *, track_opens: bool) -> dict[str, Any]:
    """SendGrid's own tracking, as digest's settings say: click tracking always off (digest
    rewrites its links itself, DIGEST_TRACK_CLICKS), subscription tracking off (digest's own
    unsubscribe links), the open pixel only with DIGEST_TRACK_OPENS.

    The setting is per request, not per reader, so a request holding one reader who opted
    out goes without the pixel for everyone in it: an open uncounted, never a reader tracked
    who said no.
    """
    opens = track_opens and not any(r.tracking_opt_out for r in message.recipients)
    return {
        "click_tracking": {"enable": False, "enable_text": False},
        "open_tracking": {"enable": opens},
        "subscription_tracking": {"enable": False},
    }


def build_payload(message: Message, *, track_opens: bool = False) -> dict[str, Any]:
    """The v3 mail/send body: one personalization per recipient, text/plain before text/html,
    and SendGrid's tracking as digest's settings say (`tracking_settings`)."""
    return _payload(message, [_personalization(r) for r in message.recipients], track_opens)


def _payload(
    message: Message, personalizations: list[dict[str, Any]], track_opens: bool
) -> dict[str, Any]:
    sender: dict[str, str] = {"email": ascii_address(message.from_email)}
    if message.from_name:
        sender["name"] = message.from_name
    payload: dict[str, Any] = {
        "personalizations": personalizations,
        "from": sender,
        "subject": message.subject,
        "content": [
            {"type": "text/plain", "value": message.text},
            {"type": "text/html", "value": message.html},
        ],
    }
    if message.reply_to:
        payload["reply_to"] = {"email": ascii_address(message.reply_to)}
    if message.headers:
        payload["headers"] = dict(message.headers)
    if message.categories:
        payload["categories"] = list(message.categories)
    if message.custom_args:
        payload["custom_args"] = dict(message.custom_args)
    payload["tracking_settings"] = tracking_settings(message, track_opens=track_opens)
    return payload


def _encode(payload: dict[str, Any]) -> bytes:
    # orjson writes UTF-8 unescaped and compact, as json.dumps(ensure_ascii=False,
    # separators=(",", ":")) did, at a tenth of its cost for a 1000-reader batch.
    return orjson.dumps(payload)


class SendGridTransport:
    """Sends batches through SendGrid's v3 API; the API key never leaves the client's header."""

    name = "sendgrid"
    exact_lookup = False
    max_batch = 1000

    def __init__(
        self,
        api_key: str,
        host: str = "https://api.sendgrid.com",
        timeout: float = 30.0,
        *,
        clock: Callable[[], float] = time.time,
        activity_settle: float = ACTIVITY_SETTLE_SECONDS,
        track_opens: bool = False,
    ) -> None:
        if not api_key:
            raise ValueError("SENDGRID_API_KEY is empty")
        _hide_secrets.secrets.add(api_key)
        self._secret = api_key
        self._client = SendGridAPIClient(api_key=api_key, host=host)
        self.host = host
        self.timeout = timeout
        self._clock = clock
        self._activity_settle = activity_settle
        self.track_opens = track_opens
        # batch key → when this process last put it on the wire (see lookup_batch)
        self._attempted: dict[str, float] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> SendGridTransport:
        if settings.sendgrid_api_key is None or not settings.sendgrid_api_key.get_secret_value():
            raise ValueError(
                "DIGEST_TRANSPORT=sendgrid needs an API key: set SENDGRID_API_KEY "
                "(or use DIGEST_TRANSPORT=outbox to write .eml files instead)"
            )
        return cls(
            settings.sendgrid_api_key.get_secret_value(),
            host=settings.sendgrid_host,
            timeout=settings.sendgrid_timeout,
            track_opens=settings.track_opens,
        )

    def __repr__(self) -> str:
        return f"SendGridTransport(host={self.host!r})"

    # ------------------------------------------------------------------ sending

    def recipients_per_batch(self, message: Message) -> int:
        base = len(_encode(build_payload(_without_recipients(message))))
        room = (MAX_REQUEST_BYTES - base) // PER_RECIPIENT_BYTES
        if room < 1:
            raise PermanentError(
                f"the issue is too large for SendGrid: {base} bytes before any recipient "
                f"(the limit digest keeps to is {MAX_REQUEST_BYTES} bytes a request)"
            )
        return min(self.max_batch, room)

    def payload_size(self, message: Message) -> int:
        return len(_encode(build_payload(message, track_opens=self.track_opens)))

    def send(self, message: Message) -> SendResult:
        """POST the batch, less the recipients SendGrid cannot take (returned as refused).

        Those are left out before the payload is built: SendGrid accepts the request and
        then drops such a recipient without a word, so only leaving them out gets them on
        the ledger as not sent. A batch of refused readers only makes no request at all.
        """
        if not 1 <= len(message.recipients) <= self.max_batch:
            raise ValueError(f"a SendGrid request takes 1 to {self.max_batch} recipients")
        personalizations, refused = _personalizations(message.recipients)
        if refused:
            self._check_stand_in(message, refused)
            if not personalizations:
                return SendResult(message_id=None, refused=refused)
            message = replace(
                message, recipients=[r for r in message.recipients if r.email not in refused]
            )
        body = _encode(_payload(message, personalizations, self.track_opens))
        size = len(body)
        if size > MAX_REQUEST_BYTES:
            raise PermanentError(
                f"request of {size} bytes is over the {MAX_REQUEST_BYTES}-byte limit"
            )
        if message.batch_key is not None:
            self._attempted[message.batch_key] = self._clock()
        try:
            response = self._post(body)
        except HTTPError as exc:
            raise self._http_error(exc) from None
        except urllib.error.URLError as exc:
            # urllib wraps only failures while connecting or writing the request: the body
            # never reached SendGrid whole, so it cannot have been accepted.
            raise RetryableError(
                f"cannot reach SendGrid: {self._redact(str(exc.reason))}"
            ) from None
        except (TimeoutError, http.client.HTTPException, OSError) as exc:
            # The request was written; the answer timed out or the connection died while we
            # waited. SendGrid may well have accepted the batch.
            kind = "timed out" if isinstance(exc, TimeoutError) else "failed"
            raise RetryableError(
                f"SendGrid's answer {kind} after the request was sent "
                f"({type(exc).__name__}: {self._redact(str(exc))})",
                maybe_delivered=True,
            ) from None
        headers = response.headers
        message_id = headers.get("X-Message-Id") if headers is not None else None
        return SendResult(message_id=message_id, refused=refused)

    def _post(self, body: bytes) -> Response:
        """POST the encoded body to /v3/mail/send through the sendgrid client's own request
        (its URL, API-key headers, urllib opener and error mapping), handing it bytes.

        Its `post()` takes only a str, which it encodes again, and then formats the repr of
        the whole body into a DEBUG line whether or not DEBUG is on: ~12 ms a 1000-reader
        batch, as much as building the batch. `_make_request` is the seam the library keeps
        for exactly this (its docstring: separated out to be swapped in tests).
        """
        endpoint = self._client.client.mail.send
        request = urllib.request.Request(
            endpoint._build_url(None),
            data=body,
            headers={**endpoint.request_headers, **_JSON_HEADERS},
            method="POST",
        )
        opener = urllib.request.build_opener()
        return Response(endpoint._make_request(opener, request, timeout=self.timeout))

    def refused_in_batch(self, message: Message) -> dict[str, str]:
        """The recipients of `message` that `send` leaves out, with why.

        Decided from each recipient alone, so a run resuming a batch whose answer a crash lost
        records these readers exactly as `send` refused them. A recipient whose part of the
        payload cannot be built is refused too — unless a stand-in reader fails the same way:
        then the fault is not in their address, and `PermanentError` stops the send rather
        than writing every reader off as refused.
        """
        _items, refused = _personalizations(message.recipients)
        if refused:
            self._check_stand_in(message, refused)
        return refused

    @staticmethod
    def _check_stand_in(message: Message, refused: Mapping[str, str]) -> None:
        """PermanentError when the sender's own address fails where a refused reader did."""
        stand_in = replace(
            next(r for r in message.recipients if r.email in refused),
            email=message.from_email,
            name=None,
        )
        if _refusal(stand_in) is not None:
            raise PermanentError(
                "SendGrid's payload cannot be built for anyone, so the fault is in the "
                f"message, not any one address: {_refusal(stand_in)}"
            )

    def _http_error(self, exc: HTTPError) -> Exception:
        status = int(getattr(exc, "status_code", 0) or 0)
        detail = self._redact(_error_text(exc))
        if status == 429:
            return RetryableError(
                f"SendGrid rate limit (429): {detail}", retry_after=self._retry_after(exc)
            )
        if status >= 500:
            return RetryableError(f"SendGrid server error ({status}): {detail}")
        return PermanentError(f"SendGrid refused the request ({status}): {detail}")

    def _retry_after(self, exc: HTTPError) -> float | None:
        headers = getattr(exc, "headers", None)
        if headers is None:
            return None
        reset = headers.get("X-RateLimit-Reset")
        if reset is not None:
            try:
                return max(0.0, float(reset) - self._clock())
            except ValueError:
                pass
        after = headers.get("Retry-After")
        if after is not None:
            try:
                return max(0.0, float(after))
            except ValueError:
                return None
        return None

    # ------------------------------------------------------------------ lookup

    def lookup_batch(self, batch_key: str) -> bool | None:
        """Ask the Email Activity API whether any mail carries `batch_key` in its custom args.

        SendGrid accepts a request whole or not at all, so one message found means the batch
        went out. "Not found" is trusted only when this process has not sent the batch in the
        last few minutes (the activity feed lags); errors — including accounts without the
        Email Activity add-on — mean "cannot tell".
        """
        query = f"unique_args['batch_key']=\"{batch_key}\""
        try:
            response = self._client.client.messages.get(
                query_params={"query": query, "limit": 1}, timeout=self.timeout
            )
            found = bool((json.loads(response.body or b"{}")).get("messages"))
        except (HTTPError, OSError, http.client.HTTPException, ValueError) as exc:
            log_event(
                log,
                "sendgrid_lookup_failed",
                level=logging.WARNING,
                batch_key=batch_key,
                error=self._redact(f"{type(exc).__name__}: {_error_text(exc)}"),
            )
            return None
        if found:
            return True
        attempted = self._attempted.get(batch_key)
        if attempted is not None and self._clock() - attempted < self._activity_settle:
            return None
        return False

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***")


def _refusal(recipient: Recipient) -> str | None:
    """Why SendGrid cannot take `recipient`, or None when it can.

    A non-ASCII local part (before the "@") needs SMTPUTF8, which SendGrid does not offer: it
    accepts the request and drops that recipient silently. A non-ASCII domain is fine once in
    punycode. Anything else that stops this recipient's personalization from being built (a
    ValueError: an address or header value the payload rules refuse) refuses them too, so
    one stored value never stops the request for the whole batch.
    """
    _items, refused = _personalizations((recipient,))
    return refused.get(recipient.email)


_AGAIN = "correct or remove the address (sending again would refuse it again)"
_NON_ASCII_LOCAL_PART = (
    "SendGrid cannot deliver to an address with non-ASCII characters before the @ "
    f"(it would drop the mail without a word); {_AGAIN}"
)


def _without_recipients(message: Message) -> Message:
    return Message(
        subject=message.subject,
        html=message.html,
        text=message.text,
        recipients=(),
        from_email=message.from_email,
        from_name=message.from_name,
        reply_to=message.reply_to,
        headers=message.headers,
        categories=message.categories,
        custom_args=message.custom_args,
        batch_key=message.batch_key,
    )


def _error_text(exc: BaseException) -> str:
    """SendGrid's own words from an error body (`{"errors": [{"message", "field"}]}`)."""
    body = getattr(exc, "body", None)
    if not body:
        return str(exc)
    try:
        data = json.loads(body)
    except (ValueError, TypeError):
        text = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
        return text[:500]
    errors = data.get("errors") if isinstance(data, dict) else None
    if not errors:
        return json.dumps(data)[:500]
    parts = []
    for error in errors:
        field = error.get("field")
        message = error.get("message", "")
        parts.append(f"{field}: {message}" if field else str(message))
    return "; ".join(parts)[:1000]
