"""Structured logs: one line per event, parseable, and never a secret or a full address at INFO."""

from __future__ import annotations

import io
import json
import logging
import shlex

import pytest

from digest.logs import configure_logging, get_logger, log_event, mask_email, parse_level


@pytest.fixture
def capture():
    """Configure logging into a buffer; return a function giving the lines written so far."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    buffer = io.StringIO()

    def setup(level: str = "INFO", fmt: str = "logfmt"):
        configure_logging(level, fmt, stream=buffer)  # type: ignore[arg-type]
        return lambda: buffer.getvalue().splitlines()

    yield setup
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])


def _logfmt(line: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in shlex.split(line))


def test_an_event_is_one_logfmt_line_with_its_fields(capture):
    lines = capture()
    log_event(get_logger("schedule"), "issue_built", week="2026-W17", featured="rag", count=3)
    [line] = lines()
    fields = _logfmt(line)
    assert fields["event"] == "issue_built"
    assert fields["logger"] == "digest.schedule"
    assert fields["level"] == "info"
    assert (fields["week"], fields["featured"], fields["count"]) == ("2026-W17", "rag", "3")
    assert fields["ts"].endswith("+00:00")


def test_json_lines_parse_back_to_the_fields(capture):
    lines = capture(fmt="json")
    log_event(get_logger("digest.delivery"), "batch_sent", batch=2, sent=1000, paused=False)
    record = json.loads(lines()[0])
    assert record["event"] == "batch_sent"
    assert (record["batch"], record["sent"], record["paused"]) == (2, 1000, False)


def test_values_with_spaces_quotes_and_newlines_stay_on_one_line(capture):
    lines = capture()
    log_event(get_logger("x"), "send_paused", reason='SendGrid said "slow down"\nretry later')
    [line] = lines()
    quoted = line.split("reason=", 1)[1]
    assert json.loads(quoted) == 'SendGrid said "slow down"\nretry later'


def test_addresses_are_masked_at_info_and_shown_when_debugging(capture):
    lines = capture(level="DEBUG")
    logger = get_logger("subscribers")
    log_event(logger, "subscribed", email="jane.doe@example.org")
    log_event(logger, "subscribed", level=logging.DEBUG, email="jane.doe@example.org")
    info, debug = lines()
    assert "jane.doe" not in info
    assert _logfmt(info)["email"] == "j***@example.org"
    assert _logfmt(debug)["email"] == "jane.doe@example.org"


def test_library_messages_are_masked_too(capture):
    lines = capture()
    logging.getLogger("some.library").warning("bounce from bob@example.com: mailbox full")
    [line] = lines()
    assert _logfmt(line)["msg"] == "bounce from b***@example.com: mailbox full"


def test_secrets_are_never_written_whatever_the_level(capture):
    lines = capture(level="DEBUG")
    logger = get_logger("delivery")
    key = "SG.abcdefghijklmnopqrstuv.abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
    log_event(logger, "configured", level=logging.DEBUG, sendgrid_api_key=key, token="abc")
    log_event(logger, "request_failed", error=f"401 for key {key}")
    configured, failed = lines()
    assert key not in configured and key not in failed
    assert _logfmt(configured)["sendgrid_api_key"] == "***"
    assert _logfmt(configured)["token"] == "***"
    assert _logfmt(failed)["error"] == "401 for key SG.***"


def test_an_exception_is_kept_on_the_same_line(capture):
    lines = capture()
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log_event(get_logger("schedule"), "job_failed", level=logging.ERROR, exc_info=True)
    [line] = lines()
    assert "RuntimeError: boom" in _logfmt(line)["exc"]


def test_level_setting_filters_events(capture):
    lines = capture(level="warning")
    log_event(get_logger("x"), "quiet")
    log_event(get_logger("x"), "loud", level=logging.WARNING)
    assert [_logfmt(line)["event"] for line in lines()] == ["loud"]


def test_configuring_twice_does_not_double_every_line(capture):
    capture()
    lines = capture()
    log_event(get_logger("x"), "once")
    assert len(lines()) == 1


def test_unknown_levels_and_formats_are_refused_by_name():
    with pytest.raises(ValueError, match="unknown log level 'LOUD'; use one of DEBUG, INFO"):
        parse_level("LOUD")
    with pytest.raises(ValueError, match="unknown log format 'xml'"):
        configure_logging("INFO", "xml", stream=io.StringIO())  # type: ignore[arg-type]
    assert parse_level("debug") == logging.DEBUG


def test_mask_email_keeps_the_domain():
    assert mask_email("write to a.b+c@mail.example.co.uk or x@y.org") == (
        "write to a***@mail.example.co.uk or x***@y.org"
    )
