"""DKIM signing: real keys made with `cryptography`, real digest mails from `mime_bytes`, and
dkimpy's own verifier answering the DNS look-up from the record `digest check` tells you to publish.
"""

from __future__ import annotations

import base64
import re
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

import dkim  # type: ignore[import-untyped]
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from pydantic import ValidationError
from sqlalchemy import Engine
from typer.testing import CliRunner

from digest.cli import app
from digest.config import Settings
from digest.core.mails import Message
from digest.delivery.dkim import DkimSigner, sample_check
from digest.delivery.outbox import mime_bytes
from digest.delivery.personalise import subscriber_recipient
from tests.sending import HTML, NOW, TEXT, WEEK, build_issue, seed_subscribers

runner = CliRunner()
SELECTOR = "digest1"


def write_key(path: Path, key: rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(params=["rsa", "ed25519"])
def key_file(request: pytest.FixtureRequest, tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    if request.param == "rsa":
        return write_key(tmp_path / "dkim.pem", rsa_key)
    return write_key(tmp_path / "dkim.pem", ed25519.Ed25519PrivateKey.generate())


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings from these tests' values alone (no digest.toml, no database: none is needed)."""
    monkeypatch.setenv("DIGEST_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.setenv("DIGEST_SECRET_KEY", "test-secret-key-not-for-production")
    monkeypatch.setenv("DIGEST_BASE_URL", "https://digest.example.org")
    monkeypatch.chdir(tmp_path)


def dkim_settings(key_file: Path, **changes: Any) -> Settings:
    values: dict[str, Any] = {
        "dkim_key_file": key_file,
        "dkim_selector": SELECTOR,
        "sender_email": "digest@News.Example.org",
        "reply_to": "editors@example.org",
    }
    return Settings(**(values | changes))


def signer_for(settings: Settings) -> DkimSigner:
    signer = DkimSigner.from_settings(settings)
    assert signer is not None
    return signer


def reader_mail(settings: Settings) -> bytes:
    """The weekly mail one reader gets, with their own unsubscribe links and one-click headers."""
    recipient = subscriber_recipient(settings, 7, "reader@bücher.example", "Zoë <& Co>")
    message = Message(
        subject="Attention, %%name%%",
        html=HTML,
        text=TEXT,
        recipients=[recipient],
        from_email=settings.sender_email,
        from_name=settings.sender_name,
        reply_to=settings.reply_to,
    )
    return mime_bytes(message, recipient, now=NOW)


def dkimpy_verifies(signer: DkimSigner, mail: bytes) -> bool:
    """dkimpy's own verify, its DNS answered by the record `dns_record` says to publish."""
    name, value = signer.dns_record()

    def txt(qname: bytes, timeout: int = 5) -> bytes | None:
        return value.encode() if qname.decode().rstrip(".") == name else None

    return dkim.verify(mail, dnsfunc=txt) is True


def signature_tags(mail: bytes) -> dict[str, str]:
    parsed = BytesParser(policy=default_policy).parsebytes(mail)
    header = re.sub(r"\s+", "", str(parsed["DKIM-Signature"]))
    return dict(tag.split("=", 1) for tag in header.split(";") if tag)


# --------------------------------------------------------------------------- signing


def test_a_signed_reader_mail_verifies_with_dkimpy(env: None, key_file: Path) -> None:
    settings = dkim_settings(key_file)
    signer = signer_for(settings)
    mail = reader_mail(settings)

    signed = signer.sign(mail)

    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(mail)
    assert dkimpy_verifies(signer, signed)
    assert signer.verify(signed) is None
    tags = signature_tags(signed)
    assert tags["c"] == "relaxed/relaxed" and tags["d"] == "news.example.org"
    assert tags["s"] == SELECTOR
    assert tags["a"] == ("ed25519-sha256" if "ed25519" in signer.dns_record()[1] else "rsa-sha256")
    signed_headers = tags["h"].split(":")
    assert signed_headers.count("from") == 2  # signed once more: an added From breaks it
    for name in ("to", "subject", "date", "message-id", "reply-to", "mime-version"):
        assert name in signed_headers
    for name in ("content-type", "list-unsubscribe", "list-unsubscribe-post"):
        assert name in signed_headers


def test_a_changed_body_or_subject_no_longer_verifies(env: None, key_file: Path) -> None:
    signer = signer_for(dkim_settings(key_file))
    signed = signer.sign(reader_mail(dkim_settings(key_file)))
    body = signed.replace(b"Read the whole entry", b"Read the full entry")
    subject = re.sub(rb"\r\nSubject: [^\r]*", b"\r\nSubject: You won", signed)
    assert body != signed and subject != signed

    assert not dkimpy_verifies(signer, body)
    assert "body hash mismatch" in (signer.verify(body) or "")
    assert not dkimpy_verifies(signer, subject)
    assert "signed header changed" in (signer.verify(subject) or "")


def test_what_relays_do_on_the_way_keeps_it_valid_but_a_second_from_does_not(
    env: None, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    signer = signer_for(dkim_settings(write_key(tmp_path / "k.pem", rsa_key)))
    signed = signer.sign(reader_mail(dkim_settings(tmp_path / "k.pem")))
    received = (
        b"Received: from digest (localhost [127.0.0.1])\r\n by relay; " + NOW.ctime().encode()
    )
    refolded = signed.replace(b"\r\nSubject: ", b"\r\nSubject:   \r\n\t", 1)

    assert signer.verify(received + b"\r\n" + signed) is None
    assert signer.verify(refolded) is None  # relaxed: whitespace in headers may change
    head, _, body = signed.partition(b"\r\n\r\n")
    forged = head + b"\r\nFrom: Someone else <ceo@example.org>\r\n\r\n" + body
    assert signer.verify(forged) is not None
    assert not dkimpy_verifies(signer, forged)


def test_another_signers_mail_is_not_valid_for_this_one(
    env: None, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    ours = signer_for(dkim_settings(write_key(tmp_path / "ours.pem", rsa_key)))
    other_key = write_key(tmp_path / "other.pem", ed25519.Ed25519PrivateKey.generate())
    same_name = signer_for(dkim_settings(other_key))
    elsewhere = signer_for(dkim_settings(other_key, dkim_domain="other.example"))
    mail = reader_mail(dkim_settings(other_key))

    assert ours.verify(mail) == "the mail has no DKIM-Signature header"
    assert "another key signed" in (ours.verify(same_name.sign(mail)) or "")
    assert ours.verify(elsewhere.sign(mail)) == (
        f"signed for {SELECTOR}._domainkey.other.example, "
        f"not for {SELECTOR}._domainkey.news.example.org"
    )


def test_the_signed_mail_parses_and_its_signature_has_only_crlf_lines_of_78_or_less(
    env: None, key_file: Path
) -> None:
    signer = signer_for(dkim_settings(key_file))
    signed = signer.sign(reader_mail(dkim_settings(key_file)))

    parsed = BytesParser(policy=default_policy).parsebytes(signed)
    assert isinstance(parsed, EmailMessage) and not parsed.defects
    assert parsed["From"].addresses[0].addr_spec == "digest@News.Example.org"
    assert parsed.get_body(("plain",)) is not None
    header = signed[: signed.index(b"\r\nFrom: ") + 2]
    assert b"\n" not in header.replace(b"\r\n", b"") and b"\r" not in header.replace(b"\r\n", b"")
    lines = header.split(b"\r\n")[:-1]
    assert all(len(line) <= 78 for line in lines)
    assert all(line[:1] in b" \t" for line in lines[1:])  # folded, one header


def test_the_key_is_read_once(env: None, key_file: Path) -> None:
    settings = dkim_settings(key_file)
    signer = signer_for(settings)
    key_file.unlink()

    assert signer.verify(signer.sign(reader_mail(settings))) is None


def test_sign_refuses_what_is_not_a_crlf_mail_with_a_from(
    env: None, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    settings = dkim_settings(write_key(tmp_path / "k.pem", rsa_key))
    signer, mail = signer_for(settings), reader_mail(settings)

    with pytest.raises(ValueError, match="bare LF"):
        signer.sign(mail.replace(b"\r\n", b"\n"))
    with pytest.raises(ValueError, match="no empty line"):
        signer.sign(b"From: a@example.org\r\nSubject: x")
    with pytest.raises(ValueError, match="no From header"):
        signer.sign(re.sub(rb"^From: [^\r]*\r\n", b"", mail, flags=re.MULTILINE))


# --------------------------------------------------------------------------- the DNS record


def test_the_dns_record_holds_the_public_key_of_the_file(
    env: None, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    signer = signer_for(dkim_settings(write_key(tmp_path / "k.pem", rsa_key)))

    name, value = signer.dns_record()

    assert name == "digest1._domainkey.news.example.org"
    assert value.startswith("v=DKIM1; k=rsa; p=")
    published = serialization.load_der_public_key(base64.b64decode(value.partition("p=")[2]))
    assert published.public_numbers() == rsa_key.public_key().public_numbers()  # type: ignore[union-attr]


def test_an_ed25519_record_is_the_raw_key(env: None, tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    signer = signer_for(dkim_settings(write_key(tmp_path / "k.pem", key)))

    kind, _, p = signer.dns_record()[1].removeprefix("v=DKIM1; ").partition("; p=")

    assert kind == "k=ed25519"
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert base64.b64decode(p) == raw


def test_the_signing_domain_is_the_setting_or_the_senders_in_punycode(
    env: None, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    key = write_key(tmp_path / "k.pem", rsa_key)

    assert signer_for(dkim_settings(key, sender_email="digest@Bücher.Example")).domain == (
        "xn--bcher-kva.example"
    )
    assert signer_for(dkim_settings(key, dkim_domain="Example.ORG.")).domain == "example.org"
    with pytest.raises(ValueError, match="not a domain"):
        DkimSigner.from_settings(dkim_settings(key, dkim_domain="not a domain"))
    with pytest.raises(ValueError, match="DIGEST_DKIM_SELECTOR 'two words'"):
        DkimSigner.from_settings(dkim_settings(key, dkim_selector="two words"))


# --------------------------------------------------------------------------- key files


def test_no_key_file_means_no_signer(env: None) -> None:
    assert DkimSigner.from_settings(Settings()) is None
    assert sample_check(Settings(), now=NOW) == (True, [])


def test_key_file_and_selector_come_together(env: None, tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="needs both DIGEST_DKIM_KEY_FILE and"):
        Settings(dkim_key_file=tmp_path / "dkim.pem")
    with pytest.raises(ValidationError, match="needs both DIGEST_DKIM_KEY_FILE and"):
        Settings(dkim_selector=SELECTOR)


def test_a_missing_or_unreadable_key_file_is_named(env: None, tmp_path: Path) -> None:
    missing = tmp_path / "absent.pem"
    folder = tmp_path / "folder.pem"
    folder.mkdir()

    with pytest.raises(ValueError, match=f"DIGEST_DKIM_KEY_FILE {missing}: cannot read it"):
        DkimSigner.from_settings(dkim_settings(missing))
    with pytest.raises(ValueError, match=f"DIGEST_DKIM_KEY_FILE {folder}: cannot read it"):
        DkimSigner.from_settings(dkim_settings(folder))


def test_a_file_that_is_no_private_key_is_named_without_its_contents(
    env: None, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    pem = write_key(tmp_path / "good.pem", rsa_key).read_text()
    lines = pem.splitlines()
    damaged = tmp_path / "damaged.pem"  # a real key's text with its middle cut out
    damaged.write_text("\n".join([*lines[:3], *lines[-3:]]) + "\n")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a key\n")
    public = tmp_path / "public.pem"
    public.write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )

    for path in (damaged, garbage, public):
        with pytest.raises(ValueError, match=f"{path} is not a PEM private key") as refused:
            DkimSigner.from_settings(dkim_settings(path))
        message = str(refused.value)
        assert not any(line in message for line in lines[1:-1])
        assert "not a key" not in message


def test_an_encrypted_or_ec_key_is_refused_with_what_to_do(
    env: None, rsa_key: rsa.RSAPrivateKey, tmp_path: Path
) -> None:
    encrypted = tmp_path / "encrypted.pem"
    encrypted.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    curve = tmp_path / "ec.pem"
    curve.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )

    with pytest.raises(ValueError, match=f"{encrypted}: the key is encrypted"):
        DkimSigner.from_settings(dkim_settings(encrypted))
    with pytest.raises(ValueError, match=r"DKIM signs with RSA \(2048 bits\) or Ed25519"):
        DkimSigner.from_settings(dkim_settings(curve))


# --------------------------------------------------------------------------- digest check


def test_digest_check_signs_a_sample_and_prints_the_record(
    engine: Engine,
    settings_env: dict[str, str],
    key_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_subscribers(engine, 3)
    build_issue(engine)
    monkeypatch.setenv("DIGEST_DKIM_KEY_FILE", str(key_file))
    monkeypatch.setenv("DIGEST_DKIM_SELECTOR", SELECTOR)
    monkeypatch.setenv("DIGEST_SENDER_EMAIL", "digest@example.org")
    name, value = signer_for(
        dkim_settings(key_file, sender_email="digest@example.org")
    ).dns_record()

    result = runner.invoke(app, ["check", "--week", str(WEEK)])

    assert result.exit_code == 0, result.output
    assert "DKIM: a sample mail signed and verified (d=example.org, s=digest1, " in result.output
    assert f"\n  {name}\n  {value}\n" in result.output
    assert result.output.endswith(f"{WEEK}: no problems found\n")


def test_digest_check_fails_on_a_broken_key_and_says_why(
    engine: Engine,
    settings_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seed_subscribers(engine, 3)
    build_issue(engine)
    broken = tmp_path / "dkim.pem"
    broken.write_text("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n")
    monkeypatch.setenv("DIGEST_DKIM_KEY_FILE", str(broken))
    monkeypatch.setenv("DIGEST_DKIM_SELECTOR", SELECTOR)

    result = runner.invoke(app, ["check", "--week", str(WEEK)])

    assert result.exit_code == 1
    assert f"- DKIM: DIGEST_DKIM_KEY_FILE {broken} is not a PEM private key" in result.output
    assert f"{WEEK}: 1 problem" in result.output
    assert "Traceback" not in result.output and "bm90IGEga2V5" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


_LINE = st.text(alphabet="ab \t=.", max_size=30)


@hypothesis_settings(max_examples=150)
@given(lines=st.lists(_LINE, max_size=12), blank_lines_at_end=st.integers(0, 3))
def test_any_body_verifies_as_dkimpy_canonicalises_it(
    rsa_key: rsa.RSAPrivateKey, lines: list[str], blank_lines_at_end: int
) -> None:
    """Trailing spaces, tabs, runs of spaces, empty lines at the end, an empty body: the relaxed
    body hash `sign` writes is the one dkimpy's verify computes."""
    body = "".join(f"{line}\r\n" for line in [*lines, *[""] * blank_lines_at_end])
    mail = b"From: Digest <digest@example.org>\r\nSubject: x\r\n\r\n" + body.encode()

    signer = DkimSigner(selector=SELECTOR, domain="example.org", key=rsa_key)

    assert dkimpy_verifies(signer, signer.sign(mail))


def test_bytes_that_are_no_mail_are_a_reason_not_an_exception(env: None, key_file: Path) -> None:
    signer = signer_for(dkim_settings(key_file))

    assert "not readable as a signed mail" in (signer.verify(b"\x00 no header here") or "")
    assert signer.verify(b"") == "the mail has no DKIM-Signature header"
