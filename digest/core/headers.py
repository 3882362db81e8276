"""Mail headers: the one set of rules for what may go into a header, and how digest writes them.

Every header value digest sends is built here from already-checked parts, encoded to ASCII by
digest itself (RFC 2047 for text, punycode for domains) and never re-parsed, so no stored value
can turn into a line break: Python's own header registry decodes encoded-words on assignment
and, in 3.11 before 3.11.10, writes a decoded CR/LF back raw (CVE-2024-6923). `verify_header_block`
then checks the serialised block as a mail client would read it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from email.header import Header

from email_validator import EmailNotValidError, validate_email

from digest.core.characters import BIDI_CONTROLS, first_refused, refusal
from digest.core.i18n import N_

__all__ = [
    "NAME_MAX",
    "HeaderError",
    "UnsupportedAddress",
    "address_header",
    "ascii_address",
    "check_header_value",
    "display_name_problem",
    "list_unsubscribe_header",
    "safe_display_name",
    "text_header",
    "verify_header_block",
]

NAME_MAX = 200
# RFC 5322 §2.1.1: a line MUST be at most 998 characters (78 is only a SHOULD).
_LINE_MAX = 998
# An RFC 2047 encoded-word: =?charset?encoding?text?= (the text may be empty).
_ENCODED_WORD_RE = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
# What needs quoting in a display name sent as a plain ASCII phrase (RFC 5322 specials).
_SPECIALS_RE = re.compile(r'[][\\()<>@,:;".]')
_LIST_SEPARATOR_RE = re.compile(r">\s*,\s*<")
# Not printable ASCII or tab: a control byte or a byte above 127 (one regex, not a loop a byte).
_UNPRINTABLE_RE = re.compile(rb"[\x00-\x08\x0a-\x1f\x80-\xff]")
_HEADER_NAME_RE = re.compile(r"^[!-9;-~]+$")  # printable ASCII but the colon (RFC 5322 §2.2)


class HeaderError(ValueError):
    """A value that cannot go into a mail header as it is; the message says which and why."""


class UnsupportedAddress(HeaderError):
    """An address no transport of digest can deliver to (a non-ASCII local part)."""


def check_header_value(name: str, value: str) -> str:
    """Refuse CR, LF and NUL in anything that becomes a mail header: no header injection."""
    # Three `in` tests, not any() over a generator: this runs for every header of every
    # recipient of a send, several per reader.
    if "\r" in value or "\n" in value or "\0" in value:
        raise HeaderError(f"{name}: line breaks are not allowed in a mail header value")
    return value


def _unsafe_character(text: str) -> str | None:
    char = first_refused(text, one_line=True)
    if char is None:
        return None
    if char in BIDI_CONTROLS:
        return f"bidirectional override characters are not allowed (found U+{ord(char):04X})"
    if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
        return N_("line breaks and control characters are not allowed")
    return refusal(char)


def display_name_problem(name: str) -> str | None:
    """Why `name` cannot be a reader's display name, or None when it can.

    A name is shown in `To:`, subjects and greetings, so what would break a header or hide
    text is refused: controls, line breaks, bidi overrides — and RFC 2047 encoded-word syntax
    (`=?utf-8?q?…?=`), because mail software decodes it, so a name made of harmless ASCII can
    still carry a CR/LF. No real name is written that way; refusing it says so plainly.
    """
    if len(name) > NAME_MAX:
        return f"at most {NAME_MAX} characters (got {len(name)})"
    problem = _unsafe_character(name)
    if problem is not None:
        return problem
    if _ENCODED_WORD_RE.search(name):
        return N_("encoded-word syntax (=?charset?q?…?=) is not allowed; type the name itself")
    return None


def safe_display_name(name: str | None) -> str | None:
    """The name to put in a header, or None when a stored name fails today's rules.

    Names stored before a rule existed are neutralised (left out of the header: the reader
    still gets the mail, addressed by address alone) rather than refused, so one old record
    can never stop a send.
    """
    if not name:
        return None
    # Printable ASCII without "=?" passes every rule below (no control, line break, bidi
    # character or encoded-word can be in it); a send asks this twice per reader.
    if len(name) <= NAME_MAX and name.isascii() and name.isprintable() and "=?" not in name:
        return name
    if display_name_problem(name) is not None:
        return None
    return name


def ascii_address(email: str) -> str:
    """`email` as it goes on the wire: an internationalised domain in punycode (IDNA 2008).

    A non-ASCII local part needs SMTPUTF8 end to end, which SendGrid and many relays do not
    offer (SendGrid drops such mail silently), so it is refused with `UnsupportedAddress`.
    """
    check_header_value("address", email)
    if email.isascii():
        return email
    try:
        checked = validate_email(email, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise UnsupportedAddress(f"cannot send to this address: {exc}") from None
    return checked.ascii_email or email


def _phrase(name: str) -> str:
    """A display name as an RFC 5322 phrase: plain, quoted, or RFC 2047 encoded-words."""
    if name.isascii() and "=?" not in name:
        if _SPECIALS_RE.search(name) is None:
            return name
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    # Non-ASCII (or text that looks like an encoded-word, shown literally): encode it all.
    return Header(name, "utf-8").encode(linesep="\r\n")


def address_header(email: str, name: str | None = None) -> str:
    """`Name <address>` for From, To and Reply-To, in ASCII, with the address in punycode."""
    address = ascii_address(email.strip())
    display = safe_display_name(name)
    if display is None:
        return address
    return f"{_phrase(display)} <{address}>"


def text_header(name: str, value: str) -> str:
    """An unstructured header value (Subject, X-…): folded, RFC 2047-encoded when needed.

    ASCII text holding `=?` is encoded too, so a subject with a reader's name in it is shown
    exactly as written instead of being decoded by the mail client.
    """
    check_header_value(name, value)
    if value.isascii() and "=?" not in value:
        return Header(value, "us-ascii", header_name=name).encode(linesep="\r\n")
    return Header(value, "utf-8", header_name=name).encode(linesep="\r\n")


def list_unsubscribe_header(value: str) -> str:
    """`<https://…>, <mailto:…>` (RFC 2369) checked, folded between entries, never encoded.

    An encoded List-Unsubscribe (what Python writes for a value over 78 characters) holds no
    `<URI>` for a mail client to find, and one-click unsubscribe silently stops working.
    """
    check_header_value("List-Unsubscribe", value)
    text = value.strip()
    if not (text.startswith("<") and text.endswith(">")):
        raise HeaderError(f"List-Unsubscribe: {value!r} is not a list of <URI>s")
    uris = _LIST_SEPARATOR_RE.split(text[1:-1])
    for uri in uris:
        if not uri or not uri.isascii() or any(ch in uri for ch in " \t<>"):
            raise HeaderError(f"List-Unsubscribe: {uri!r} is not a plain ASCII URI")
    return ",\r\n ".join(f"<{uri}>" for uri in uris)


def verify_header_block(raw: bytes, names: Sequence[str]) -> None:
    """Check a serialised message's top-level header block as a mail client reads it.

    Exactly the headers in `names`, in order, each on lines of printable ASCII no longer than
    RFC 5322 allows, continuation lines starting with white space, no bare CR or LF: so no
    value, whatever it held, added a header, ended the block early or reached the body.
    """
    head, sep, _body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise HeaderError("the message has no blank line between its headers and body")
    seen: list[str] = []
    for line in head.split(b"\r\n"):
        if b"\r" in line or b"\n" in line:
            raise HeaderError("a header holds a bare CR or LF")
        if len(line) > _LINE_MAX:
            raise HeaderError(f"a header line is {len(line)} characters (at most {_LINE_MAX})")
        if _UNPRINTABLE_RE.search(line):
            raise HeaderError("a header holds a non-ASCII or control byte")
        if line[:1] in (b" ", b"\t"):
            if not seen:
                raise HeaderError("the header block starts with a continuation line")
            continue
        field, colon, _value = line.partition(b":")
        if not colon or not _HEADER_NAME_RE.match(field.decode("ascii")):
            raise HeaderError(f"header line {line[:40]!r} is not 'Name: value'")
        seen.append(field.decode("ascii"))
    if [n.lower() for n in seen] != [n.lower() for n in names]:
        raise HeaderError(f"the headers written were {seen}, expected {list(names)}")
