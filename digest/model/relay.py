"""An SMTP relay as `DIGEST_SMTP_URL` names it: where it is, how the connection is secured, and
who logs in.

Parsed once, at settings time, so a typo in the URL is an error when digest starts rather than
at the first send; no part of the URL ever reaches an error message except the parts that are
not secret (scheme, host, port).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal
from urllib.parse import unquote, urlsplit

__all__ = ["Relay", "parse_relay_url"]

# smtp:// is submission with STARTTLS (RFC 6409, port 587); smtps:// is TLS from the first byte
# (RFC 8314, port 465). A plain, unencrypted session is no scheme of ours: a password and every
# reader's address would cross the network in clear (the tests' local server speaks TLS too).
_DEFAULT_PORTS = {"smtp": 587, "smtps": 465}


@dataclass(frozen=True, slots=True)
class Relay:
    host: str
    port: int
    security: Literal["starttls", "tls"]
    username: str | None = None
    password: str | None = None

    def __repr__(self) -> str:  # never the password, even in a traceback's locals
        login = f"{self.username}@" if self.username else ""
        return f"Relay({self.security}://{login}{self.host}:{self.port})"

    @property
    def where(self) -> str:
        """The relay as an error message may name it: no credentials."""
        return f"{self.host}:{self.port}"


def parse_relay_url(url: str) -> Relay:
    """`smtp://[user[:password]@]host[:port]` or `smtps://…`; ValueError saying what is wrong.

    User and password are percent-decoded (a password holding "@" or ":" is written %40, %3A).
    """
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:  # a port that is not a number, an unclosed [IPv6
        raise ValueError(
            f"DIGEST_SMTP_URL is not a URL digest can read ({_without_secret(exc)})"
        ) from None
    if parts.scheme not in _DEFAULT_PORTS:
        got = f"{parts.scheme}://" if parts.scheme else "no scheme"
        raise ValueError(
            "DIGEST_SMTP_URL must start with smtp:// (STARTTLS, usually port 587) or smtps:// "
            f"(TLS from the start, usually port 465); got {got}"
        )
    if not parts.hostname:
        raise ValueError("DIGEST_SMTP_URL names no host (smtp://user:password@host:587)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("DIGEST_SMTP_URL takes no path, query or fragment after host:port")
    if parts.password is not None and not parts.username:
        raise ValueError("DIGEST_SMTP_URL has a password but no user name")
    return Relay(
        host=parts.hostname,
        port=port or _DEFAULT_PORTS[parts.scheme],
        security="tls" if parts.scheme == "smtps" else "starttls",
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
    )


def _without_secret(exc: ValueError) -> str:
    # urllib's messages name the port text, never the credentials; keep it that way if not.
    text = str(exc)
    return text if "@" not in text else "malformed"
