"""Settings: one typed object read from `DIGEST_*` environment variables and an optional `digest.toml`.

Everything has an embedded default that works on a fresh checkout (SQLite under `subscribers/`,
the outbox transport), so `digest run` needs no configuration to try out.
"""

from __future__ import annotations

import os
import re
import secrets
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AliasChoices,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from digest.model.colour import luminance_ratio, relative_luminance
from digest.model.relay import Relay, parse_relay_url
from digest.model.schedule import parse_schedule
from digest.packaged import available_locales

__all__ = ["GLOSSARY_PATH", "MIN_CONTRAST", "Settings", "get_settings", "language_tag"]

CONFIG_FILE_ENV = "DIGEST_CONFIG"
# Where digest serves (and `digest build` writes) its own glossary pages, below `base_url`.
GLOSSARY_PATH = "/glossary"

# The settings file `get_settings(config_file=...)` names, for the one Settings() it builds: the
# sources are chosen on the class, so an explicit file reaches them here instead of via os.environ.
_config_file: ContextVar[Path | None] = ContextVar("digest_config_file", default=None)


# WCAG AA's minimum contrast for normal text.
MIN_CONTRAST = 4.5
_HEX_COLOUR_RE = re.compile(r"#(?:[0-9a-f]{3}|[0-9a-f]{6})")


def _contrast_with_white(colour: str) -> float:
    """WCAG contrast of the `#rrggbb` colour with white: a brand colour that fails is refused
    when the settings are read, before anything is built with it (the formula is the model's,
    shared with `digest check`)."""
    red, green, blue = (int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5))
    return luminance_ratio(relative_luminance(red, green, blue), 1.0)


class Settings(BaseSettings):
    """All of digest's knobs. Environment wins over `digest.toml`, which wins over defaults."""

    model_config = SettingsConfigDict(
        env_prefix="DIGEST_",
        extra="ignore",
        toml_file="digest.toml",
        # A value that fails validation is not repeated in the error: DIGEST_SMTP_URL and
        # DIGEST_REDIS_URL carry passwords. Each validator's message names what is wrong.
        hide_input_in_errors=True,
    )

    # Content
    terms_dir: Path = Field(
        default=Path("terms"), description="the glossary: one Markdown file per term"
    )
    # The default theme ships inside the package (digest.packaged.default_theme_dir); this is the
    # project's own folder of overrides, used file by file, and need not exist.
    templates_dir: Path = Field(
        default=Path("templates"),
        description="your templates, each replacing the default theme's file of the same name",
    )

    # Storage
    database_url: str = "sqlite:///subscribers/digest.db"
    secret_key: SecretStr | None = None
    secret_key_file: Path = Path("subscribers/.secret_key")
    # Old keys still accepted when verifying tokens, so rotating `secret_key` keeps old links alive.
    old_secret_keys: list[SecretStr] = Field(default_factory=list)

    # Public addresses
    base_url: str = "http://localhost:8000"
    # Where the mail's term links point. By default digest's own glossary pages
    # (`{base_url}/glossary`, docs/glossary-site.md), which it serves and builds and so can
    # check; an existing glossary site instead gets the links, and digest still serves its own.
    site_url: str = Field(
        default="",
        validate_default=True,
        description="the glossary site term links point to (default: {base_url}/glossary)",
    )
    newsletter_name: str = "AI Term of the Week"
    # The language mails, pages and feeds are written in (a catalogue of digest/locale, see
    # docs/translating.md), and each reader's default; a reader may choose another one.
    locale: str = Field(default="", description="the newsletter's language: en or nl")
    # Its BCP 47 tag (`<html lang>`), derived from `locale`. DIGEST_LANGUAGE, the setting's
    # old name, still sets the locale when DIGEST_LOCALE is not given.
    language: str = ""

    # Sender identity
    sender_email: str = "digest@example.com"
    sender_name: str = "AI Term of the Week"
    reply_to: str | None = None
    postal_address: str = "digest · Example Street 1 · 1234 AB Amsterdam · The Netherlands"
    unsubscribe_mailto: str | None = None

    # Delivery
    transport: Literal["outbox", "sendgrid", "smtp"] = "outbox"
    outbox_dir: Path = Path("outbox")
    # Any relay that speaks SMTP (docs/delivery.md "SMTP"): smtp://user:pass@host:587 upgrades
    # with STARTTLS, smtps://…:465 is TLS from the first byte; the certificate is always
    # verified (against the system's CAs, or DIGEST_SMTP_CA_FILE for a private relay).
    smtp_url: SecretStr | None = None
    smtp_ca_file: Path | None = None
    # Connections kept open to the relay, each carrying many messages (RSET between).
    smtp_connections: int = Field(default=4, ge=1, le=32)
    # Messages a second, over all connections, for relays that meter (SES sandbox: 1); 0: none.
    smtp_rate: float = Field(default=0.0, ge=0)
    smtp_timeout: float = Field(default=30.0, gt=0)
    # The envelope sender (MAIL FROM, the Return-Path bounces go to), when the relay wants a
    # bounce address of its own (a VERP or bounce subdomain); default: DIGEST_SENDER_EMAIL.
    smtp_envelope_from: str | None = None
    # DKIM for a relay that does not sign (docs/delivery.md "DKIM"): the private key (PEM),
    # its DNS selector, and the signing domain (default: the sender address's domain).
    dkim_key_file: Path | None = None
    dkim_selector: str | None = None
    dkim_domain: str | None = None
    sendgrid_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("SENDGRID_API_KEY", "DIGEST_SENDGRID_API_KEY")
    )
    sendgrid_host: str = "https://api.sendgrid.com"
    sendgrid_webhook_public_key: str | None = None
    sendgrid_timeout: float = 30.0
    batch_size: int = Field(default=1000, ge=1, le=1000)
    max_retries: int = Field(default=5, ge=0)
    retry_base_delay: float = Field(default=1.0, ge=0)
    retry_max_delay: float = Field(default=60.0, ge=0)
    # A batch the provider may or may not have accepted (crash or timeout mid-request, and the
    # transport cannot tell): "skip" never risks a duplicate, "resend" never risks a gap.
    # See docs/delivery.md for why "skip" is the default.
    ambiguous_batches: Literal["skip", "resend"] = "skip"
    send_lease: float = Field(default=300.0, gt=0, description="seconds a sender's claim lives")
    # Batches handed to the provider at once by one sender: a provider that takes 0.25 s a
    # request then costs a quarter of the wall time, not the sum. SendGrid accepts many
    # concurrent connections per key; a 429 slows every batch in flight down together.
    batches_in_flight: int = Field(default=4, ge=1, le=16)
    # Replicas (docs/operations.md). On PostgreSQL every `digest run` replica looks this often
    # for a send another replica is running, and joins it; `digest send` joins at once.
    send_join_interval: float = Field(
        default=5.0, gt=0, le=300, description="seconds between a replica's looks for a send"
    )
    # How often a `digest run` replica that is not the scheduler's leader tries to become it:
    # the bound on how long a dead leader's weekly job waits (within the misfire grace).
    leader_retry_interval: float = Field(
        default=2.0, gt=0, le=60, description="seconds between tries for the scheduler lead"
    )
    # Redis for what replicas must share: the subscribe rate limit and the desk's login
    # throttle (the `limits` library's Redis storage). None: each process counts in memory.
    redis_url: SecretStr | None = None
    # While Redis is unreachable: "open" lets requests through uncounted (sign-ups keep
    # working; logged once), "closed" refuses them with 503. See docs/operations.md.
    redis_failure: Literal["open", "closed"] = "open"

    # Selection and rendering
    related_count: int = Field(default=4, ge=0, le=12)
    feed_items: int = Field(default=20, ge=1)
    logo_url: str | None = Field(
        default=None, description="absolute URL of the newsletter's logo (the feeds' image)"
    )
    # The mail shows the logo at the top, as an image that most inboxes block until the reader
    # allows it: the alt text stands in for it (default: the newsletter's name).
    logo_alt: str | None = Field(default=None, description="the logo's alt text in the mail")
    logo_width: int = Field(default=160, ge=16, le=552, description="the logo's width in px")
    # The mail's kicker, links and buttons. White button text sits on it and it sits as text
    # on white, so it must reach WCAG AA's 4.5:1 against white (refused at start-up otherwise).
    brand_color: str = Field(
        default="#1d4ed8", description="hex colour of the mail's kicker, links and buttons"
    )
    news_feeds: list[str] = Field(default_factory=list)
    news_items: int = Field(default=5, ge=0)
    news_timeout: float = 5.0

    # Subscribers
    confirm_max_age: int = Field(default=7 * 24 * 3600, description="seconds a confirm link lives")
    confirm_resend_interval: int = Field(default=3600, description="seconds between confirm mails")
    subscribe_rate_limit: int = Field(default=10, description="subscribe requests per IP a minute")

    # Web request bodies, refused with 413 before they are read (docs/operations.md). The largest
    # form a page sends (a 320-character address and a 200-character name, percent-encoded) is
    # under 3 KB, so 16 KB never refuses a person and keeps a 200 MB post from filling memory.
    max_request_bytes: int = Field(
        default=16 * 1024, ge=4096, description="largest request body a web page accepts, bytes"
    )
    # SendGrid posts its Event Webhook batches "within approximately 30 seconds or when the batch
    # size reaches 768 kilobytes": a batch refused here is retried for a day and then lost, so the
    # webhook's own limit stays above that size, with room for the event that crosses it.
    max_webhook_request_bytes: int = Field(
        default=1024 * 1024, ge=768 * 1024, description="largest SendGrid webhook batch, bytes"
    )

    # Schedule
    schedule: str = Field(default="mon 09:00", description="'<day_of_week> HH:MM', cron style")
    timezone: str = "UTC"
    misfire_grace_time: int = Field(default=6 * 3600, ge=1)
    # Send at the schedule's weekday and hour in each reader's own time zone (docs/reader-
    # experience.md); off: everyone at once, at the schedule's time in `timezone`.
    local_time_delivery: bool = False

    # The editors' desk (docs/desk.md). With approval required, the weekly job builds each issue
    # `approval_lead_hours` before its send, mails the editors a preview link, and sends only an
    # approved issue; an unapproved one is held at send time (not sent, not failed).
    require_approval: bool = False
    approval_lead_hours: float = Field(
        default=48.0, ge=0, le=24 * 6, description="hours before the send an issue is built"
    )
    # A subject longer than this is flagged by `digest check` (mail clients cut around 60-70).
    subject_warn_length: int = Field(default=70, ge=20)
    desk_session_max_age: int = Field(
        default=12 * 3600, ge=60, description="seconds a desk login lasts without activity"
    )
    desk_login_rate_limit: int = Field(
        default=5, ge=1, description="failed desk logins per account (and per IP) in 15 minutes"
    )

    # Honest numbers (docs/engagement.md). Off by default: no rewritten link, no pixel. When on,
    # the reader is told in plain words and may opt out; uniques are counted with a keyed hash of
    # (issue, reader) unless `tracking_detail` is "per-reader" (a per-reader history, erased with
    # the reader).
    track_clicks: bool = False
    track_opens: bool = False
    tracking_detail: Literal["aggregate", "per-reader"] = "aggregate"
    # Links of one reader fetched within this many seconds of each other count as a machine
    # (a link scanner opening every link), never as the reader.
    click_burst_seconds: float = Field(default=2.0, ge=0)
    # Production refuses unsigned SendGrid webhook posts when no public key is configured.
    environment: Literal["development", "production"] = "development"

    log_level: str = "INFO"

    # Read once per Settings object: a send signs two tokens per recipient.
    _generated_key: str | None = PrivateAttr(default=None)
    log_format: Literal["logfmt", "json"] = "logfmt"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _config_file.get() or Path(os.environ.get(CONFIG_FILE_ENV, "digest.toml"))
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )

    @field_validator("timezone")
    @classmethod
    def _known_timezone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown IANA time zone {value!r}") from exc
        return value

    @field_validator("schedule")
    @classmethod
    def _readable_schedule(cls, value: str) -> str:
        parse_schedule(value, "UTC")  # raises ScheduleError (a ValueError) saying what is accepted
        return value

    @field_validator("log_level")
    @classmethod
    def _known_log_level(cls, value: str) -> str:
        from digest.logs import parse_level

        parse_level(value)
        return value.strip().upper()

    @field_validator(
        "sender_email", "sender_name", "reply_to", "newsletter_name", "unsubscribe_mailto"
    )
    @classmethod
    def _one_header_line(cls, value: str | None) -> str | None:
        # These end up in From, Reply-To, Subject and List-Unsubscribe headers: refused here, at
        # start-up, rather than by the first Message built from them (every subscribe a 500).
        if value is not None and any(ch in value for ch in "\r\n\0"):
            raise ValueError("line breaks are not allowed: the value goes into mail headers")
        return value

    @field_validator("site_url", mode="before")
    @classmethod
    def _own_glossary_by_default(cls, value: object, info: ValidationInfo) -> object:
        # Unset (or set empty): digest's own pages under base_url, validated before this field.
        # A base_url that failed its own check is not in `info.data`; the empty value then
        # fails below as well, and pydantic reports both.
        if value in (None, "") and "base_url" in info.data:
            return f"{info.data['base_url']}{GLOSSARY_PATH}"
        return value

    @field_validator("logo_url")
    @classmethod
    def _absolute_logo(cls, value: str | None) -> str | None:
        # A mail's images must be absolute http(s) URLs (the build's quality gate); said here,
        # at start-up, instead of by every build.
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an absolute http(s) URL (got {value!r})")
        return value

    @field_validator("logo_alt")
    @classmethod
    def _one_line_alt(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = " ".join(value.split())
        if not value:
            raise ValueError("must contain visible text (leave it unset for the newsletter's name)")
        return value

    @field_validator("brand_color")
    @classmethod
    def _readable_brand(cls, value: str) -> str:
        colour = value.strip().lower()
        if not _HEX_COLOUR_RE.fullmatch(colour):
            raise ValueError(f"must be a hex colour like #1d4ed8 (got {value!r})")
        if len(colour) == 4:
            colour = "#" + "".join(ch * 2 for ch in colour[1:])
        ratio = _contrast_with_white(colour)
        if ratio < MIN_CONTRAST:
            raise ValueError(
                f"{colour} has {ratio:.2f}:1 contrast with white; the mail's buttons (white text "
                f"on it) and links (it on white) need at least {MIN_CONTRAST}:1 (WCAG AA): "
                "choose a darker colour"
            )
        return colour

    @field_validator("smtp_url")
    @classmethod
    def _readable_relay(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().strip():
            parse_relay_url(value.get_secret_value())
            return value
        return None

    @field_validator("smtp_envelope_from")
    @classmethod
    def _envelope_address(cls, value: str | None) -> str | None:
        text = (value or "").strip()
        local, _at, domain = text.rpartition("@")
        if text and (not (local and domain) or not text.isprintable() or " " in text):
            raise ValueError("DIGEST_SMTP_ENVELOPE_FROM must be one address: bounces@example.org")
        return text or None

    @model_validator(mode="after")
    def _relay_for_smtp(self) -> Settings:
        if self.transport == "smtp" and self.smtp_url is None:
            raise ValueError(
                "DIGEST_TRANSPORT=smtp needs DIGEST_SMTP_URL (smtp://user:password@host:587 "
                "for STARTTLS, smtps://user:password@host:465 for TLS from the start)"
            )
        if (self.dkim_key_file is None) != (self.dkim_selector is None):
            raise ValueError(
                "DKIM signing needs both DIGEST_DKIM_KEY_FILE and DIGEST_DKIM_SELECTOR "
                "(or neither, for a relay that signs itself)"
            )
        return self

    @property
    def relay(self) -> Relay | None:
        """The SMTP relay DIGEST_SMTP_URL names (None: not set)."""
        return parse_relay_url(self.smtp_url.get_secret_value()) if self.smtp_url else None

    @field_validator("base_url", "site_url", "sendgrid_host")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"must be an absolute http(s) URL (got {value!r})")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _known_locale(self) -> Settings:
        chosen = (self.locale or self.language or "en").strip().replace("-", "_")
        if chosen not in available_locales():
            raise ValueError(
                f"DIGEST_LOCALE: there is no catalogue for {chosen!r}; available: "
                f"{', '.join(available_locales())} (docs/translating.md says how to add one)"
            )
        self.locale, self.language = chosen, language_tag(chosen)
        return self

    def for_locale(self, locale: str | None) -> Settings:
        """These settings written in `locale` (None: as they are): what a rendition in a
        reader's language renders with, so every template and helper sees that locale."""
        if locale is None or locale == self.locale:
            return self
        if locale not in available_locales():
            raise ValueError(f"there is no catalogue for {locale!r}")
        return self.model_copy(update={"locale": locale, "language": language_tag(locale)})

    def signing_key(self) -> str:
        """The key tokens are signed with.

        Without `DIGEST_SECRET_KEY` a random key is created once and kept beside the database,
        so a fresh checkout is secure by default and links stay valid across restarts.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        if self._generated_key is None:
            self._generated_key = self._read_or_create_key_file()
        return self._generated_key

    def _read_or_create_key_file(self) -> str:
        path = self.secret_key_file
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            # Another process (or an earlier run) made it first: everyone signs with that one.
            return path.read_text().strip()
        with os.fdopen(fd, "w") as fh:
            fh.write(key + "\n")
        return key

    def verification_keys(self) -> list[str]:
        """The current key first, then retired ones still honoured for old links."""
        return [self.signing_key(), *(k.get_secret_value() for k in self.old_secret_keys)]

    def existing_verification_keys(self) -> list[str]:
        """`verification_keys` without ever creating a key: the current key only when it is
        configured, already loaded or already in its file, then the retired ones.

        For code that only verifies links (the quality checks): running it must not leave a
        key file behind, and a link no existing key signed cannot verify anyway.
        """
        if self.secret_key is not None:
            current: str | None = self.secret_key.get_secret_value()
        else:
            if self._generated_key is None and self.secret_key_file.is_file():
                self._generated_key = self.secret_key_file.read_text().strip()
            current = self._generated_key
        retired = [k.get_secret_value() for k in self.old_secret_keys]
        return [current, *retired] if current is not None else retired

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)


def language_tag(locale: str) -> str:
    """A gettext locale name as a BCP 47 language tag (`pt_BR` → `pt-BR`), for `lang=`."""
    return locale.replace("_", "-")


class _ProcessSettings:
    """`get_settings`: the process's one Settings object (a class, so `cache_clear` stays typed)."""

    def __init__(self) -> None:
        self._settings: Settings | None = None

    def __call__(self, config_file: Path | None = None, **overrides: Any) -> Settings:
        """The process-wide settings, built from env and the settings file on first use.

        With arguments (the `digest` command's global options) they are built afresh: the file
        named replaces `DIGEST_CONFIG`, and `overrides` (field values) beat the environment.
        They then stay the process's settings, so code that asks later without arguments (the
        weekly job `digest run` schedules) sees what the command was started with.
        Tests call `get_settings.cache_clear()` after changing env.
        """
        if config_file is not None or overrides or self._settings is None:
            token = _config_file.set(config_file)
            try:
                self._settings = Settings(**overrides)
            finally:
                _config_file.reset(token)
        return self._settings

    def cache_clear(self) -> None:
        """Forget the settings: the next call reads env and the settings file again."""
        self._settings = None


get_settings = _ProcessSettings()
