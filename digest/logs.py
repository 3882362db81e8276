"""Structured logging: one line per event, as logfmt `key=value` pairs or JSON lines.

Modules call `log_event(logger, "issue_built", week=..., slug=...)`; the formatter masks secrets
and email addresses, so an INFO log can be pasted into a ticket without leaking subscribers.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import IO, Any, Literal

__all__ = [
    "LogFormat",
    "StructuredFormatter",
    "configure_logging",
    "get_logger",
    "log_event",
    "mask_email",
    "parse_level",
]

LogFormat = Literal["logfmt", "json"]

_EVENT_ATTR = "digest_event"
_FIELDS_ATTR = "digest_fields"
_HANDLER_ATTR = "digest_handler"

# Field names whose values are never written, whatever the level.
_SECRET_KEY_RE = re.compile(r"(secret|password|passwd|api_?key|token|authorization)", re.I)
_EMAIL_RE = re.compile(r"([A-Za-z0-9._%+\-]+)@([A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)+)")
# SendGrid keys look like SG.<22 chars>.<43 chars>; masked even inside free text.
_SENDGRID_KEY_RE = re.compile(r"SG\.[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}")
_LOGFMT_BARE_RE = re.compile(r"^[^\s=\"\\]+$")

# Libraries whose INFO chatter would drown the events; they still speak at WARNING and above.
_CHATTY = ("apscheduler", "uvicorn.access", "httpx", "alembic")


def get_logger(name: str) -> logging.Logger:
    """A logger under `digest.`, so one level setting governs every module of ours."""
    return logging.getLogger(
        name if name == "digest" or name.startswith("digest.") else f"digest.{name}"
    )


def log_event(
    logger: logging.Logger, event: str, /, *, level: int = logging.INFO, **fields: Any
) -> None:
    """Log `event` with `fields` as one structured line (`level` is the only reserved name)."""
    if not logger.isEnabledFor(level):
        return
    exc_info = fields.pop("exc_info", None)
    logger.log(
        level,
        event,
        extra={_EVENT_ATTR: event, _FIELDS_ATTR: fields},
        exc_info=exc_info,
        stacklevel=2,
    )


def mask_email(text: str) -> str:
    """`jane.doe@example.org` → `j***@example.org`: enough to tell domains apart, not people."""
    return _EMAIL_RE.sub(lambda m: f"{m.group(1)[:1]}***@{m.group(2)}", text)


def parse_level(level: str | int) -> int:
    """A level name (`info`, `DEBUG`) or number; ValueError naming the choices otherwise."""
    if isinstance(level, int):
        return level
    names = logging.getLevelNamesMapping()
    value = names.get(level.strip().upper())
    if value is None:
        choices = ", ".join(n for n in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"))
        raise ValueError(f"unknown log level {level!r}; use one of {choices}")
    return value


class StructuredFormatter(logging.Formatter):
    """Renders any record (ours or a library's) as one line of logfmt or JSON.

    Below INFO (debugging on a developer's machine) addresses are shown in full; at INFO and up
    they are masked, and secret-looking fields are always replaced by `***`.
    """

    def __init__(self, fmt: LogFormat = "logfmt") -> None:
        super().__init__()
        if fmt not in ("logfmt", "json"):
            raise ValueError(f"unknown log format {fmt!r}; use logfmt or json")
        self.style_name: LogFormat = fmt

    def format(self, record: logging.LogRecord) -> str:
        data = self._fields(record)
        if self.style_name == "json":
            return json.dumps(data, ensure_ascii=False, default=str)
        return " ".join(f"{key}={_logfmt_value(value)}" for key, value in data.items())

    def _fields(self, record: logging.LogRecord) -> dict[str, Any]:
        reveal = record.levelno < logging.INFO
        event = getattr(record, _EVENT_ATTR, None)
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        if event is not None:
            data["event"] = event
            fields: Mapping[str, Any] = getattr(record, _FIELDS_ATTR, {}) or {}
            for key, value in fields.items():
                data[_field_key(key)] = _clean(key, value, reveal)
        else:
            data["msg"] = _clean("msg", record.getMessage(), reveal)
        if record.exc_info:
            data["exc"] = _clean("exc", self.formatException(record.exc_info), reveal)
        return data


def configure_logging(
    level: str | int = "INFO", fmt: LogFormat = "logfmt", stream: IO[str] | None = None
) -> None:
    """Send every log record through one structured handler on the root logger.

    Idempotent: calling it again (tests, a second CLI command in one process) replaces the
    handler it installed before instead of stacking a second one.
    """
    numeric = parse_level(level)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(StructuredFormatter(fmt))
    setattr(handler, _HANDLER_ATTR, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_ATTR, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(numeric)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(numeric if numeric < logging.INFO else logging.WARNING)


def _field_key(key: str) -> str:
    # logfmt keys cannot hold spaces or '='; keep them readable rather than quoting them.
    return re.sub(r"[\s=\"]+", "_", key) or "_"


def _clean(key: str, value: Any, reveal: bool) -> Any:
    if value is None or isinstance(value, bool | int | float):
        return value
    if _SECRET_KEY_RE.search(key):
        return "***"
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(k): _clean(str(k), v, reveal) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(key, v, reveal) for v in value]
    text = _SENDGRID_KEY_RE.sub("SG.***", str(value))
    return text if reveal else mask_email(text)


def _logfmt_value(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    text = (
        value
        if isinstance(value, str)
        else json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    )
    if _LOGFMT_BARE_RE.match(text):
        return text
    # JSON string quoting escapes quotes, backslashes and newlines: one event stays one line.
    return json.dumps(text, ensure_ascii=False)
