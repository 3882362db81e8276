"""DKIM signing of the mails digest hands to a relay that does not sign them itself.

One `DkimSigner` per process: the key is read and parsed once, each mail is signed as bytes, and
`digest check` signs and verifies a sample and prints the DNS record to publish (docs/delivery.md).
"""

from __future__ import annotations

import base64
import hashlib
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import dkim
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa, utils
from dkim.canonicalization import (
    CanonicalizationPolicy,
    compress_whitespace,
    correct_empty_body,
    strip_trailing_lines,
    strip_trailing_whitespace,
)

from digest.config import Settings
from digest.core.headers import ascii_address
from digest.core.mails import Message, Recipient
from digest.delivery.outbox import mime_bytes

__all__ = ["DkimSigner", "sample_check"]

# The headers a reader's mail client and a receiver's filters look at, in the order digest writes
# them; each is signed where the mail has it. From is signed once more (as dkimpy does): a second
# From added on the way then breaks the signature instead of showing a forged sender.
_SIGNED = frozenset(
    (
        b"from",
        b"to",
        b"subject",
        b"date",
        b"message-id",
        b"reply-to",
        b"mime-version",
        b"content-type",
        b"list-unsubscribe",
        b"list-unsubscribe-post",
    )
)
# relaxed/relaxed: a relay that refolds a header or trims trailing spaces keeps the mail valid.
_CANON = b"relaxed/relaxed"
_POLICY = CanonicalizationPolicy.from_c_value(_CANON)
_HEADER = b"DKIM-Signature"
_MIN_RSA_BITS = 1024  # what receivers (and dkimpy's verify) accept at the least
_SELECTOR_RE = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9_-]*)(?:\.[A-Za-z0-9_-]+)*$")
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_DOMAIN_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})+$")

_Key = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


@dataclass(frozen=True, slots=True)
class DkimSigner:
    """Signs mails for `domain` with the key published at `<selector>._domainkey.<domain>`.

    Signing goes through `cryptography` (OpenSSL) with the key parsed once: dkimpy's own
    `dkim.sign` parses the PEM again for every mail and does RSA in pure Python, ~7 ms for a
    24 KB mail against under 1 ms here. dkimpy still canonicalises, selects and hashes the
    headers and folds the signature, and `verify` is dkimpy's, so both sides are the library's
    reading of RFC 6376.
    """

    selector: str
    domain: str
    key: _Key = field(repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> DkimSigner | None:
        """The signer DIGEST_DKIM_* configure; None when no key file is set (the relay signs).

        Raises ValueError naming the file (never its contents) when the key cannot be used.
        """
        if settings.dkim_key_file is None:
            return None
        if settings.dkim_selector is None:  # Settings refuses this; a copy built by hand might not
            raise ValueError("DKIM signing needs DIGEST_DKIM_SELECTOR with DIGEST_DKIM_KEY_FILE")
        domain = settings.dkim_domain or settings.sender_email.rpartition("@")[2]
        return cls(
            selector=_checked_selector(settings.dkim_selector),
            domain=_ascii_domain(domain),
            key=_load_key(settings.dkim_key_file),
        )

    @property
    def algorithm(self) -> bytes:
        """The a= tag: ed25519-sha256 (RFC 8463) for an Ed25519 key, else rsa-sha256."""
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return b"ed25519-sha256"
        return b"rsa-sha256"

    def sign(self, message: bytes) -> bytes:
        """`message` (CRLF bytes, as `mime_bytes` writes them) with a DKIM-Signature prepended.

        Raises ValueError for bytes that are not such a mail: no header block, no From, or a bare
        LF (a relay would turn it into CRLF, and the body would no longer match its hash).
        """
        if message.count(b"\n") != message.count(b"\r\n"):
            raise ValueError("the mail has a bare LF; DKIM signs mails with CRLF line ends only")
        end = message.find(b"\r\n\r\n")
        if end < 0:
            raise ValueError("not a mail: no empty line after the header block")
        headers, _ = dkim.rfc822_parse(message[: end + 4])
        names = [name.lower() for name, _value in headers if name.lower() in _SIGNED]
        if b"from" not in names:
            raise ValueError("the mail has no From header, and DKIM must sign From")
        include = [*names, b"from"]
        body_hash = hashlib.sha256(_relaxed_body(message[end + 4 :])).digest()
        fields = [
            (b"v", b"1"),
            (b"a", self.algorithm),
            (b"c", _CANON),
            (b"d", self.domain.encode("ascii")),
            (b"s", self.selector.encode("ascii")),
            (b"t", str(int(time.time())).encode("ascii")),
            (b"h", b" : ".join(include)),
            (b"bh", base64.b64encode(body_hash)),
            # A stand-in as long as a signature folds b= onto lines of its own, so writing the
            # real one in leaves the whitespace of every tag before it as it was hashed.
            (b"b", b"0" * 60),
        ]
        draft = dkim.fold(_joined(fields), namelen=len(_HEADER), linesep=b"\r\n")
        draft = dkim.RE_BTAG.sub(b"\\1", draft)
        hasher = hashlib.sha256()
        canonical = _POLICY.canonicalize_headers(headers)
        dkim.hash_headers(hasher, _POLICY, canonical, include, (_HEADER, b" " + draft), None)
        fields[-1] = (b"b", base64.b64encode(self._signature(hasher.digest())))
        value = dkim.fold(_joined(fields) + b"\r\n", namelen=len(_HEADER), linesep=b"\r\n")
        return b"".join((_HEADER, b": ", value, message))

    def _signature(self, digest: bytes) -> bytes:
        if isinstance(self.key, ed25519.Ed25519PrivateKey):
            return self.key.sign(digest)  # RFC 8463 signs the SHA-256 of the header hash input
        return self.key.sign(digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))

    def dns_record(self) -> tuple[str, str]:
        """The TXT record receivers look the key up in: (name, value) to publish in DNS."""
        public = self.key.public_key()
        if isinstance(public, ed25519.Ed25519PublicKey):
            kind = "ed25519"  # RFC 8463: the raw 32-byte key
            data = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        else:
            kind = "rsa"  # RFC 6376: the SubjectPublicKeyInfo, DER
            data = public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        value = f"v=DKIM1; k={kind}; p={base64.b64encode(data).decode('ascii')}"
        return f"{self.selector}._domainkey.{self.domain}", value

    def verify(self, message: bytes) -> str | None:
        """None when the top DKIM-Signature of `message` verifies against this signer's own
        public key (as a receiver would, with the TXT record `dns_record` gives); else why not."""
        name, value = self.dns_record()
        asked: list[str] = []

        def txt(qname: bytes, timeout: int = 5) -> bytes | None:
            asked.append(qname.decode("ascii", "replace").rstrip(".").lower())
            return value.encode("ascii") if asked[-1] == name.lower() else None

        try:
            received = dkim.DKIM(message)
            if not received.present():
                return "the mail has no DKIM-Signature header"
            valid = received.verify(dnsfunc=txt)
        except dkim.DKIMException as exc:
            if "body hash mismatch" in str(exc):
                return "body hash mismatch: the body changed after signing"
            return f"not readable as a signed mail ({exc})"
        if valid is True:
            return None
        if asked and asked[-1] != name.lower():
            return f"signed for {asked[-1]}, not for {name}"
        return "signature mismatch: a signed header changed after signing, or another key signed"


def _load_key(path: Path) -> _Key:
    """The private key in PEM file `path`; ValueError naming the file, never its contents."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ValueError(
            f"DIGEST_DKIM_KEY_FILE {path}: cannot read it ({exc.strerror or exc}); "
            "it must be a PEM private key file digest may read"
        ) from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography: a password was needed
        raise ValueError(
            f"DIGEST_DKIM_KEY_FILE {path}: the key is encrypted; digest needs it unencrypted "
            "(openssl pkey -in KEY -out dkim.pem)"
        ) from None
    except (ValueError, UnsupportedAlgorithm):
        raise ValueError(
            f"DIGEST_DKIM_KEY_FILE {path} is not a PEM private key (make one with "
            "`openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out dkim.pem`)"
        ) from None
    if isinstance(key, ed25519.Ed25519PrivateKey):
        return key
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError(
            f"DIGEST_DKIM_KEY_FILE {path} holds a {type(key).__name__.removeprefix('_')} key; "
            "DKIM signs with RSA (2048 bits) or Ed25519"
        )
    if key.key_size < _MIN_RSA_BITS:
        raise ValueError(
            f"DIGEST_DKIM_KEY_FILE {path} holds a {key.key_size}-bit RSA key; receivers ignore "
            f"signatures by keys under {_MIN_RSA_BITS} bits: make a 2048-bit one"
        )
    return key


def sample_check(settings: Settings, *, now: datetime) -> tuple[bool, list[str]]:
    """What `digest check` says of DKIM: (ok, lines to print). Nothing when it is not configured.

    A sample mail written as the send writes it is signed and verified; on success the lines
    give the TXT record to publish, on failure they say why (a broken key file is a failure
    with its reason, not a traceback).
    """
    try:
        signer = DkimSigner.from_settings(settings)
    except ValueError as exc:
        return False, [f"DKIM: {exc}"]
    if signer is None:
        return True, []
    unsubscribe = f"<{settings.base_url}/unsubscribe/dkim-check>"
    sample = Message(
        subject=f"{settings.newsletter_name}: DKIM check",
        html="<p>A sample mail signed by <code>digest check</code>.</p>",
        text="A sample mail signed by digest check.",
        recipients=(),
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
        headers={"List-Unsubscribe": unsubscribe, "List-Unsubscribe-Post": _ONE_CLICK},
    )
    try:
        signed = signer.sign(mime_bytes(sample, Recipient(email=settings.sender_email), now=now))
    except ValueError as exc:
        return False, [f"DKIM: cannot sign a sample mail: {exc}"]
    why = signer.verify(signed)
    where = f"d={signer.domain}, s={signer.selector}, {signer.algorithm.decode()}"
    if why is not None:
        return False, [f"DKIM: the sample mail's signature ({where}) does not verify: {why}"]
    name, value = signer.dns_record()
    return True, [
        f"DKIM: a sample mail signed and verified ({where})",
        "DKIM: publish this TXT record (receivers look the key up there):",
        f"  {name}",
        f"  {value}",
    ]


_ONE_CLICK = "List-Unsubscribe=One-Click"


def _relaxed_body(body: bytes) -> bytes:
    """The relaxed body (RFC 6376 3.4.4) as dkimpy computes it, skipping the regex passes that
    would change nothing: a quoted-printable or base64 body has no trailing spaces, and a
    text without tabs or double spaces has nothing to compress."""
    if b" \r\n" in body or b"\t\r\n" in body:
        body = strip_trailing_whitespace(body)
    if b"\t" in body or b"  " in body:
        body = compress_whitespace(body)
    result: bytes = correct_empty_body(strip_trailing_lines(body))
    return result


def _joined(fields: list[tuple[bytes, bytes]]) -> bytes:
    return b"; ".join(b"=".join(pair) for pair in fields)


def _checked_selector(selector: str) -> str:
    """A selector is DNS labels; anything else would also end up inside the signature header."""
    text = selector.strip()
    if not _SELECTOR_RE.fullmatch(text):
        raise ValueError(f"DIGEST_DKIM_SELECTOR {selector!r} is not a DNS label such as 'digest1'")
    return text


def _ascii_domain(domain: str) -> str:
    """The signing domain as d= and DNS have it: lower case, an IDN in punycode (IDNA 2008)."""
    text = domain.strip().rstrip(".").lower()
    try:
        ascii_domain = ascii_address(f"postmaster@{text}").rpartition("@")[2].lower()
    except ValueError as exc:
        raise ValueError(f"DKIM signing domain {domain!r} is not a domain ({exc})") from None
    if not _DOMAIN_RE.fullmatch(ascii_domain):
        raise ValueError(f"DKIM signing domain {domain!r} is not a domain such as example.org")
    return ascii_domain
