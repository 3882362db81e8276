"""A local stand-in for SendGrid's v3 API: the parts digest uses, checked as strictly as SendGrid.

`POST /v3/mail/send` (202 + X-Message-Id, or SendGrid's error shapes) and `GET /v3/messages`
(the Email Activity lookup by custom arg) behind a Bearer key; faults (429, 5xx, hangs, dropped
connections) are scripted per request. It counts how often each address got mail, so tests can
prove "exactly once". Runs in-process (`SendGridTestServer`) or standalone for subprocesses:

    python -m tests.sendgrid_server --port 0 --api-key SG.test   # prints its URL

Control API (for other processes): GET /_test/stats, GET /_test/deliveries, GET /_test/payloads,
POST /_test/faults (a JSON list of faults, queued), POST /_test/config, POST /_test/reset.
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = ["SendGridTestServer", "ServerState", "check_mail_send"]

MAX_PERSONALIZATIONS = 1000
MAX_TOTAL_BYTES = 30 * 1024 * 1024  # SendGrid: a mail, everything included, under 30 MB
MAX_SUBSTITUTION_BYTES = 10_000
MARKERS = ("%%unsubscribe_url%%", "%%preferences_url%%", "%%name%%", "%%name_html%%")
RESERVED_HEADERS = {
    "x-sg-id", "x-sg-eid", "received", "dkim-signature", "content-type",
    "content-transfer-encoding", "to", "from", "subject", "reply-to", "cc", "bcc",
}  # fmt: skip
# RFC 8058 wants an https URI; plain http is let through for local base URLs.
_LIST_UNSUBSCRIBE_RE = re.compile(r"^<https?://[^>]+>(, <mailto:[^>]+>)?$")
_LOOKUP_RE = re.compile(r"^unique_args\['batch_key'\]=\"([^\"]+)\"$")
_AUTH_ERROR = "The provided authorization grant is invalid, expired, or revoked"
POLL_SECONDS = 0.01  # how long stop() may wait for the serving thread to notice


def _errors(*messages: tuple[str | None, str]) -> dict[str, Any]:
    return {"errors": [{"field": f, "message": m, "help": None} for f, m in messages]}


def check_mail_send(payload: Any) -> list[tuple[str | None, str]]:
    """Every reason SendGrid (as digest knows it) would refuse this mail/send body."""
    problems: list[tuple[str | None, str]] = []
    if not isinstance(payload, dict):
        return [(None, "The request body must be a JSON object")]
    sender = payload.get("from")
    if not isinstance(sender, dict) or not isinstance(sender.get("email"), str):
        problems.append(("from.email", "The from object must be provided for every email send."))
    contents = payload.get("content")
    types: list[str] = []
    body_text = ""
    if not isinstance(contents, list) or not contents:
        problems.append(("content", "Unless a valid template_id is provided, content is required."))
    else:
        for item in contents:
            if not isinstance(item, dict) or not isinstance(item.get("value"), str):
                problems.append(("content", "Each content object needs a type and a value."))
                continue
            types.append(str(item.get("type")))
            body_text += item["value"]
        if "text/plain" in types and types[0] != "text/plain":
            problems.append(("content", "If present, text/plain must be first, then text/html."))
    subject = payload.get("subject")
    personalizations = payload.get("personalizations")
    if not isinstance(personalizations, list) or not personalizations:
        problems.append(("personalizations", "You must have at least one personalization."))
        return problems
    if len(personalizations) > MAX_PERSONALIZATIONS:
        problems.append(
            (
                "personalizations",
                "The personalization block is limited to 1000 personalizations per API request. "
                f"You have provided {len(personalizations)} personalizations.",
            )
        )
    used = [m for m in MARKERS if m in body_text or (isinstance(subject, str) and m in subject)]
    needs_unsubscribe = "%%unsubscribe_url%%" in body_text
    seen: set[str] = set()
    total = 0
    for index, item in enumerate(personalizations):
        where = f"personalizations.{index}"
        if not isinstance(item, dict):
            problems.append((where, "Each personalization must be an object."))
            continue
        to = item.get("to")
        if not isinstance(to, list) or not to:
            problems.append((f"{where}.to", "The to array is required for all personalization objects, and must have at least one email object with a valid email address."))  # fmt: skip
            continue
        for person in to:
            email = person.get("email") if isinstance(person, dict) else None
            if not isinstance(email, str) or "@" not in email:
                problems.append((f"{where}.to", "Each to object must have an email address."))
                continue
            name = person.get("name")
            if name is not None and (not isinstance(name, str) or any(c in name for c in ",;")):
                problems.append((f"{where}.to.name", "to.name may not contain , or ;"))
            if email.lower() in seen:
                problems.append((f"{where}.to", "Each unique email address in the personalizations array should only be included once."))  # fmt: skip
            seen.add(email.lower())
            total += 1
        if not isinstance(subject, str) and not isinstance(item.get("subject"), str):
            problems.append(("subject", "The subject is required."))
        subs = item.get("substitutions", {})
        if not isinstance(subs, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in subs.items()
        ):
            problems.append((f"{where}.substitutions", "Substitutions must be string to string."))
            subs = {}
        if sum(len(k) + len(v) + 6 for k, v in subs.items()) > MAX_SUBSTITUTION_BYTES:
            problems.append((f"{where}.substitutions", "Substitutions are limited to 10000 bytes per personalization."))  # fmt: skip
        missing = [m for m in used if m not in subs]
        if missing:
            problems.append((f"{where}.substitutions", f"no value for {', '.join(missing)}"))
        headers = item.get("headers", {})
        if not isinstance(headers, dict):
            problems.append((f"{where}.headers", "Headers must be an object."))
            headers = {}
        for key, value in headers.items():
            if key.lower() in RESERVED_HEADERS:
                problems.append((f"{where}.headers", f"{key} is a reserved header."))
            if not isinstance(value, str) or any(c in value for c in "\r\n"):
                problems.append((f"{where}.headers", f"{key} must be a one-line string."))
        if needs_unsubscribe:
            unsubscribe = str(headers.get("List-Unsubscribe", ""))
            if not _LIST_UNSUBSCRIBE_RE.match(unsubscribe):
                problems.append((f"{where}.headers", "List-Unsubscribe: <https://…> is missing"))
            if headers.get("List-Unsubscribe-Post") != "List-Unsubscribe=One-Click":
                problems.append((f"{where}.headers", "List-Unsubscribe-Post is missing"))
        args = item.get("custom_args", {})
        if not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values()):
            problems.append((f"{where}.custom_args", "custom_args values must be strings."))
    if total > MAX_PERSONALIZATIONS:
        problems.append(("personalizations", "There is a limit of 1000 total recipients (to + cc + bcc) per request."))  # fmt: skip
    categories = payload.get("categories", [])
    if not isinstance(categories, list) or len(categories) > 10:
        problems.append(("categories", "You may not have more than 10 categories per request."))
    elif not all(isinstance(c, str) and len(c) <= 255 for c in categories):
        problems.append(("categories", "A category must be a string of at most 255 characters."))
    args = payload.get("custom_args", {})
    if not isinstance(args, dict) or not all(isinstance(v, str) for v in args.values()):
        problems.append(("custom_args", "custom_args values must be strings."))
    problems += _tracking_problems(payload.get("tracking_settings", {}))
    return problems


_TRACKING = {
    "click_tracking": {"enable", "enable_text"},
    "open_tracking": {"enable", "substitution_tag"},
    "subscription_tracking": {"enable", "text", "html", "substitution_tag"},
    "ganalytics": {"enable", "utm_source", "utm_medium", "utm_term", "utm_content", "utm_campaign"},
}


def _tracking_problems(settings: Any) -> list[tuple[str | None, str]]:
    """SendGrid's `tracking_settings`: known settings only, each with a boolean `enable`."""
    if not isinstance(settings, dict):
        return [("tracking_settings", "tracking_settings must be an object.")]
    problems: list[tuple[str | None, str]] = []
    for name, value in settings.items():
        where = f"tracking_settings.{name}"
        if name not in _TRACKING or not isinstance(value, dict):
            problems.append((where, "Unknown tracking setting."))
        elif set(value) - _TRACKING[name] or not isinstance(value.get("enable"), bool):
            problems.append((where, "The enable field must be a boolean."))
    return problems


@dataclass
class ServerState:
    """Everything the fake SendGrid remembers; guarded by `lock`."""

    api_key: str
    lock: threading.Lock = field(default_factory=threading.Lock)
    faults: deque[dict[str, Any]] = field(default_factory=deque)
    delay: float = 0.0
    keep_payloads: int = 10
    requests: int = 0  # every POST /v3/mail/send, faulted or not
    # POST /v3/mail/send being answered right now, and the most there ever were at once.
    open_requests: int = 0
    max_open_requests: int = 0
    # Each POST /v3/mail/send: (arrived, answered) on time.monotonic() and the status answered
    # (0: the connection was dropped), in the order they were answered.
    answered: list[tuple[float, float, int]] = field(default_factory=list)
    accepted: int = 0  # answered 202 (or accepted before a scripted fault)
    lookups: int = 0
    max_payload_bytes: int = 0
    deliveries: Counter[str] = field(default_factory=Counter)
    batches: dict[str, dict[str, Any]] = field(default_factory=dict)
    payloads: deque[dict[str, Any]] = field(default_factory=deque)
    rejected: list[dict[str, Any]] = field(default_factory=list)

    def reset(self) -> None:
        with self.lock:
            self.faults.clear()
            self.delay = 0.0
            self.requests = self.accepted = self.lookups = self.max_payload_bytes = 0
            self.open_requests = self.max_open_requests = 0
            self.answered.clear()
            self.deliveries.clear()
            self.batches.clear()
            self.payloads.clear()
            self.rejected.clear()

    def next_fault(self, target: str) -> dict[str, Any] | None:
        with self.lock:
            for fault in self.faults:
                if fault.get("target", "mail_send") == target:
                    self.faults.remove(fault)
                    return fault
        return None

    def record(self, payload: dict[str, Any], size: int) -> str:
        message_id = uuid.uuid4().hex[:22]
        args = payload.get("custom_args", {})
        emails: list[str] = []
        for item in payload["personalizations"]:
            for person in item["to"]:
                emails.append(person["email"].lower())
        with self.lock:
            self.accepted += 1
            self.max_payload_bytes = max(self.max_payload_bytes, size)
            self.deliveries.update(emails)
            key = args.get("batch_key")
            if key:
                entry = self.batches.setdefault(
                    key, {"msg_id": message_id, "emails": [], "subject": payload.get("subject")}
                )
                entry["emails"].extend(emails)
            if self.keep_payloads:
                self.payloads.append(payload)
                while len(self.payloads) > self.keep_payloads:
                    self.payloads.popleft()
        return message_id

    def stats(self) -> dict[str, Any]:
        with self.lock:
            counts = self.deliveries.values()
            return {
                "requests": self.requests,
                "max_open_requests": self.max_open_requests,
                "accepted": self.accepted,
                "lookups": self.lookups,
                "recipients": sum(counts),
                "distinct": len(self.deliveries),
                "duplicates": sum(1 for c in counts if c > 1),
                "max_payload_bytes": self.max_payload_bytes,
                "batches": len(self.batches),
                "faults_pending": len(self.faults),
                "rejected": list(self.rejected[-20:]),
            }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    _status: int = 0  # the status of the answer being written (0: none yet)

    def log_message(self, format: str, *args: Any) -> None:  # quiet unless --verbose
        if self.server.verbose:
            super().log_message(format, *args)

    # ------------------------------------------------------------------ plumbing

    @property
    def state(self) -> ServerState:
        return self.server.state

    def send_response(self, code: int, message: str | None = None) -> None:
        self._status = code
        super().send_response(code, message)

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json(self, status: int, data: Any, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)

    def _empty(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _drop(self, partial: bytes = b"") -> None:
        """Cut the connection, after `partial` bytes of a response if given."""
        try:
            if partial:
                self.wfile.write(partial)
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.close_connection = True

    def _authorized(self) -> bool:
        if self.headers.get("Authorization") == f"Bearer {self.state.api_key}":
            return True
        self._json(401, _errors((None, _AUTH_ERROR)))
        return False

    # ------------------------------------------------------------------ routes

    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/_test/stats":
            self._json(200, self.state.stats())
        elif url.path == "/_test/deliveries":
            with self.state.lock:
                self._json(200, dict(self.state.deliveries))
        elif url.path == "/_test/payloads":
            with self.state.lock:
                self._json(200, list(self.state.payloads))
        elif url.path == "/v3/messages":
            if self._authorized():
                self._messages(parse_qs(url.query))
        else:
            self._json(404, _errors((None, "not found")))

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        body = self._body()
        if url.path == "/v3/mail/send":
            self._timed_mail_send(body)
        elif url.path == "/_test/faults":
            faults = json.loads(body or b"[]")
            with self.state.lock:
                self.state.faults.extend(faults)
            self._json(200, {"queued": len(faults)})
        elif url.path == "/_test/config":
            config = json.loads(body or b"{}")
            with self.state.lock:
                for key in ("delay", "keep_payloads", "api_key"):
                    if key in config:
                        setattr(self.state, key, config[key])
            self._json(200, {"ok": True})
        elif url.path == "/_test/reset":
            self.state.reset()
            self._json(200, {"ok": True})
        else:
            self._json(404, _errors((None, "not found")))

    def _timed_mail_send(self, body: bytes) -> None:
        """`_mail_send`, counted among the requests open at once and put on the timeline."""
        state = self.state
        arrived = time.monotonic()
        self._status = 0
        with state.lock:
            state.open_requests += 1
            state.max_open_requests = max(state.max_open_requests, state.open_requests)
        try:
            if self._authorized():
                self._mail_send(body)
        finally:
            with state.lock:
                state.open_requests -= 1
                state.answered.append((arrived, time.monotonic(), self._status))

    def _mail_send(self, body: bytes) -> None:
        state = self.state
        with state.lock:
            state.requests += 1
            delay = state.delay
        fault = state.next_fault("mail_send") or {"kind": "ok"}
        kind = fault.get("kind", "ok")
        if kind == "status":
            status = int(fault["status"])
            headers: dict[str, str] = {}
            if status == 429:
                reset_in = float(fault.get("reset_in", 1.0))
                headers["X-RateLimit-Limit"] = "600"
                headers["X-RateLimit-Remaining"] = "0"
                headers["X-RateLimit-Reset"] = str(int(time.time() + reset_in))
                if "retry_after" in fault:
                    headers["Retry-After"] = str(fault["retry_after"])
            message = fault.get("message", {429: "too many requests"}.get(status, "error"))
            self._json(status, _errors((fault.get("field"), message)), headers)
            return
        if kind in ("hang", "drop") and not fault.get("accept", False):
            if kind == "hang":
                time.sleep(float(fault.get("seconds", 5.0)))
            self._drop()
            return
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            self._json(415, _errors((None, "Content-Type should be application/json.")))
            return
        if len(body) > MAX_TOTAL_BYTES:
            self._json(413, _errors((None, "The request is too large (over 30 MB).")))
            return
        try:
            payload = json.loads(body)
        except ValueError:
            self._json(400, _errors((None, "Bad Request: the body is not valid JSON")))
            return
        problems = check_mail_send(payload)
        if problems:
            with state.lock:
                state.rejected.append(_errors(*problems[:5]))
            self._json(400, _errors(*problems[:20]))
            return
        if delay or kind == "delay":
            time.sleep(float(fault.get("seconds", delay)))
        message_id = state.record(payload, len(body))
        if kind == "hang":  # accepted, then too slow to say so
            time.sleep(float(fault.get("seconds", 5.0)))
            self._drop()
            return
        if kind == "drop":  # accepted, then the connection dies mid-answer
            self._drop(b"HTTP/1.1 20")
            return
        self._empty(202, {"X-Message-Id": message_id})

    def _messages(self, params: dict[str, list[str]]) -> None:
        state = self.state
        with state.lock:
            state.lookups += 1
        fault = state.next_fault("messages")
        if fault is not None and fault.get("kind") == "status":
            self._json(int(fault["status"]), _errors((None, fault.get("message", "error"))))
            return
        query = (params.get("query") or [""])[0]
        match = _LOOKUP_RE.match(query)
        if not match:
            self._json(400, _errors(("query", f"unsupported query {query!r}")))
            return
        limit = int((params.get("limit") or ["10"])[0])
        with state.lock:
            entry = state.batches.get(match.group(1))
            emails = list(entry["emails"][:limit]) if entry else []
            msg_id, subject = (entry["msg_id"], entry["subject"]) if entry else ("", "")
        messages = [
            {
                "from_email": "digest@example.com",
                "msg_id": f"{msg_id}.filter0001.{i}",
                "subject": subject,
                "to_email": email,
                "status": "delivered",
                "opens_count": 0,
                "clicks_count": 0,
                "last_event_time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            for i, email in enumerate(emails)
        ]
        self._json(200, {"messages": messages})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # A sender with 16 batches in flight opens 16 connections at once: the default backlog of
    # 5 would leave some waiting for a SYN retry (a second) instead of being answered.
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], state: ServerState, verbose: bool) -> None:
        super().__init__(address, _Handler)
        self.state = state
        self.verbose = verbose


class SendGridTestServer:
    """The fake SendGrid on 127.0.0.1 (a free port unless given), in a background thread."""

    def __init__(self, api_key: str = "SG.test-key.not-a-real-secret", port: int = 0) -> None:
        self.state = ServerState(api_key=api_key)
        self._server = _Server(("127.0.0.1", port), self.state, verbose=False)
        # serve_forever() looks for shutdown() every poll_interval (0.5 s by default): with
        # hundreds of servers started and stopped per suite, that half second was ~47 s of wall.
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": POLL_SECONDS}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_key(self) -> str:
        return self.state.api_key

    def start(self) -> SendGridTestServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> SendGridTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_next(self, *faults: dict[str, Any]) -> None:
        """Queue faults, one per coming request (`{"kind": "ok"}` lets one through)."""
        with self.state.lock:
            self.state.faults.extend(faults)

    def stats(self) -> dict[str, Any]:
        return self.state.stats()

    def deliveries(self) -> dict[str, int]:
        with self.state.lock:
            return dict(self.state.deliveries)

    def payloads(self) -> list[dict[str, Any]]:
        with self.state.lock:
            return list(self.state.payloads)

    def answered(self) -> list[tuple[float, float, int]]:
        """Every mail/send request so far: (arrived, answered, status), by when answered."""
        with self.state.lock:
            return list(self.state.answered)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A local fake of SendGrid's v3 API for tests.")
    parser.add_argument("--port", type=int, default=0, help="0: pick a free port")
    parser.add_argument("--api-key", default="SG.test-key.not-a-real-secret")
    parser.add_argument("--keep-payloads", type=int, default=10)
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    state = ServerState(api_key=args.api_key, keep_payloads=args.keep_payloads)
    server = _Server(("127.0.0.1", args.port), state, verbose=args.verbose)
    host, port = server.server_address[:2]
    print(f"http://{host}:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    sys.exit(0)


if __name__ == "__main__":
    main()
