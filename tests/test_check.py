"""`digest check`: a built issue is checked as the send will see it, and a failing one is not sent.

Real builds from the starter glossary, real subscribers in SQLite and PostgreSQL, the messages
the sender itself builds, the feed through feedparser.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from typer.testing import CliRunner

from digest.campaign.build import build_issue as build_real_issue
from digest.campaign.build import build_site
from digest.campaign.lifecycle import run_weekly
from digest.campaign.preflight import check_issue, send_gate
from digest.cli import app
from digest.config import Settings
from digest.core.checks import GMAIL_CLIP_BYTES, QualityError, check_feed, check_message
from digest.core.mails import Message, Recipient
from digest.delivery.outbox import OutboxTransport
from digest.delivery.personalise import subscriber_recipient
from digest.delivery.runner import send_issue
from digest.delivery.samples import sample_message
from digest.model.glossary import Glossary
from digest.store.db import utcnow
from digest.store.issues import get_issue, save_built
from tests.sending import HTML, NOW, TEXT, WEEK, build_issue, ledger, seed_subscribers

runner = CliRunner()


@pytest.fixture
def settings(settings_env: dict[str, str]) -> Settings:
    return Settings(unsubscribe_mailto="unsubscribe@digest.example.org")


def store(engine: Engine, **changes: str) -> None:
    """Store the small test issue with some of its parts replaced."""
    parts = {"subject": "Attention, %%name%%", "html": HTML, "text": TEXT}
    parts |= changes
    save_built(
        engine,
        week=WEEK,
        featured_slug="attention",
        related_slugs=[],
        pick_source="queue",
        preheader="The term of the week",
        archive_html="<!doctype html><html lang='en'><body><p>Attention</p></body></html>",
        snapshot={},
        now=NOW,
        **parts,
    )


# --------------------------------------------------------------------------- what passes


def test_a_real_build_with_subscribers_passes_the_check(
    engine: Engine, settings: Settings, starter_glossary: Glossary
) -> None:
    seed_subscribers(engine, 30, name="Zoë <& Co>")
    build_real_issue(engine, settings, starter_glossary, WEEK, now=NOW, news=[])

    assert check_issue(engine, settings, WEEK, now=NOW) == []


def test_the_check_reads_the_real_messages_of_the_first_batch(
    engine: Engine, settings: Settings
) -> None:
    ids = seed_subscribers(engine, 30)
    seed_subscribers(engine, 2, prefix="resting", paused_until=NOW + timedelta(days=7))
    build_issue(engine)

    message = sample_message(engine, settings, WEEK, limit=5, now=NOW)

    assert [r.custom_args["subscriber_id"] for r in message.recipients] == [str(i) for i in ids[:5]]
    assert message.batch_key is not None and message.batch_key.endswith("-000001")
    assert check_message(settings, message) == []


def test_with_nobody_to_send_to_a_stand_in_recipient_is_checked(
    engine: Engine, settings: Settings
) -> None:
    build_issue(engine)

    message = sample_message(engine, settings, WEEK, now=NOW)

    assert [(r.email, r.custom_args) for r in message.recipients] == [
        ("sample@example.org", {"subscriber_id": "0"})
    ]
    assert check_issue(engine, settings, WEEK, now=NOW) == []


# --------------------------------------------------------------------------- what fails


def test_plain_http_unsubscribe_links_fail_for_a_public_host(
    engine: Engine, settings: Settings
) -> None:
    ids = seed_subscribers(engine, 3)
    build_issue(engine)
    public_http = settings.model_copy(update={"base_url": "http://digest.example.org"})

    problems = check_issue(engine, public_http, WEEK, now=NOW)

    assert problems == [
        f"recipient {sid}: List-Unsubscribe URL is not https (RFC 8058): http://…" for sid in ids
    ]


def test_plain_http_is_fine_for_a_local_trial_run(engine: Engine, settings: Settings) -> None:
    seed_subscribers(engine, 2)
    build_issue(engine)
    local = settings.model_copy(update={"base_url": "http://localhost:8000"})

    assert check_issue(engine, local, WEEK, now=NOW) == []


def test_every_problem_of_a_bad_mail_is_listed(engine: Engine, settings: Settings) -> None:
    seed_subscribers(engine, 1)
    html = (
        "<!doctype html><html><body><p>Hi %%name_html%% %%first_name%%</p>"
        "<img src='https://cdn.example.org/a.png'><a href='/issues/2026-W10'>web</a>"
        "<a href='%%unsubscribe_url%%'>Unsubscribe</a>"
        + "<p>" + "x" * GMAIL_CLIP_BYTES + "</p></body></html>"
    )  # fmt: skip
    store(engine, html=html, text="Unsubscribe: %%unsubscribe_url%%")

    problems = check_issue(engine, settings, WEEK, now=NOW)

    assert "html: <html> has no lang attribute" in problems
    assert "html: <a href='/issues/2026-W10'> is not an absolute http(s) URL" in problems
    assert "html: <img src='https://cdn.example.org/a.png'> has no alt text" in problems
    assert "html: unknown placeholder %%first_name%%" in problems
    assert "text: plain-text part is missing or too short (2 words)" in problems
    assert any(p.startswith("html: ") and "Gmail clips" in p for p in problems)
    sid = sample_message(engine, settings, WEEK, now=NOW).recipients[0].custom_args["subscriber_id"]
    assert f"recipient {sid}: html: no value for %%first_name%%" in problems
    assert any(p.startswith(f"recipient {sid}: html is ") and "Gmail clips" in p for p in problems)


def test_a_message_without_one_click_headers_or_with_a_forged_link_fails(
    settings: Settings,
) -> None:
    good = subscriber_recipient(settings, 7, "ann@example.org", "Ann")
    forged_settings = settings.model_copy(update={"secret_key": SecretStr("someone-elses-key")})
    forged = subscriber_recipient(forged_settings, 8, "bob@example.org", "Bob")
    borrowed = Recipient(  # Ann's links in Bob's mail
        email="bob@example.org",
        substitutions=good.substitutions,
        headers=good.headers,
        custom_args={"subscriber_id": "9"},
    )
    bare = Recipient(
        email="cy@example.org",
        substitutions=good.substitutions,
        custom_args={"subscriber_id": "10"},
    )
    message = Message(
        subject="Attention",
        html=HTML,
        text=TEXT,
        recipients=[good, forged, borrowed, bare],
        from_email="digest@example.org",
    )

    problems = check_message(settings, message)

    assert not [p for p in problems if p.startswith("recipient 7:")]
    assert "recipient 8: unsubscribe link does not verify: this link is not valid" in problems
    assert "recipient 8: preferences link does not verify: this link is not valid" in problems
    assert "recipient 9: unsubscribe link names subscriber 7" in problems
    assert "recipient 9: unsubscribe link was signed for another address" in problems
    assert "recipient 10: no List-Unsubscribe header" in problems


def test_checking_links_never_creates_a_signing_key(settings: Settings, tmp_path: Path) -> None:
    signed = subscriber_recipient(settings, 7, "ann@example.org", "Ann")
    message = Message(
        subject="s", html=HTML, text=TEXT, recipients=[signed], from_email="d@example.org"
    )
    key_file = tmp_path / "subscribers" / ".secret_key"
    keyless = settings.model_copy(update={"secret_key": None, "secret_key_file": key_file})

    problems = check_message(keyless, message)

    assert not key_file.exists() and not key_file.parent.exists()
    assert (
        "recipient 7: unsubscribe link does not verify: "
        "no signing key exists yet, so no link can verify"
    ) in problems
    # A key already on disk is the one the links are checked against.
    key_file.parent.mkdir()
    key_file.write_text(settings.signing_key() + "\n")
    on_disk = settings.model_copy(update={"secret_key": None, "secret_key_file": key_file})
    assert check_message(on_disk, message) == []


def test_a_malformed_list_unsubscribe_header_fails(settings: Settings) -> None:
    good = subscriber_recipient(settings, 7, "ann@example.org", "Ann")
    url = good.substitutions["%%unsubscribe_url%%"]
    odd = Recipient(
        email="ann@example.org",
        substitutions=good.substitutions,
        headers={"List-Unsubscribe": f"{url}", "List-Unsubscribe-Post": "One-Click"},
        custom_args={"subscriber_id": "7"},
    )
    message = Message(
        subject="s", html=HTML, text=TEXT, recipients=[odd], from_email="d@example.org"
    )

    assert check_message(settings, message) == [
        f"recipient 7: List-Unsubscribe is not a list of <URI>s: {url!r}",
        "recipient 7: List-Unsubscribe has no http(s) URL (one-click needs one)",
        "recipient 7: List-Unsubscribe-Post is not 'List-Unsubscribe=One-Click'",
    ]


def test_a_feed_must_parse_and_keep_its_guids_unique() -> None:
    item = "<item><title>A</title><link>{0}</link><guid>{0}</guid></item>"
    feed = (
        "<?xml version='1.0' encoding='utf-8'?><rss version='2.0'><channel><title>t</title>"
        "<link>https://d.example.org/</link><description>d</description>{}</channel></rss>"
    )
    twice = feed.format(item.format("https://d.example.org/issues/2026-W10") * 2)
    broken = feed.format("<item><title>A & B</title></item>")

    assert check_feed(twice) == [
        "feed: guid https://d.example.org/issues/2026-W10 appears more than once"
    ]
    problems = check_feed(broken)
    assert problems[0].startswith("feed: not well-formed: ")
    assert "feed: item 1 has no guid" in problems


# --------------------------------------------------------------------------- the send refuses


def test_send_refuses_an_issue_that_fails_the_check_and_leaves_it_built(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    seed_subscribers(engine, 5)
    store(engine, text="Too short: %%unsubscribe_url%%")
    outbox = OutboxTransport(tmp_path / "outbox", clock=utcnow)

    gate = send_gate(engine, settings)
    refused = send_issue(engine, settings, outbox, WEEK, now=NOW, preflight=gate)

    assert (refused.status, refused.sent, refused.api_calls) == ("failed", 0, 0)
    assert refused.reason is not None
    assert refused.reason.startswith("the issue check found 1 problem: text: plain-text part")
    assert refused.reason.endswith(f"(run `digest check --week {WEEK}`)")
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "built" and issue.send_started_at is None
    assert issue.status_reason == refused.reason and issue.claimed_by is None
    assert ledger(engine) == {} and not list((tmp_path / "outbox").glob("*.eml"))

    store(engine)  # the editor fixes the issue and rebuilds it
    fixed = send_issue(engine, settings, outbox, WEEK, now=NOW, preflight=gate)

    assert (fixed.status, fixed.sent) == ("sent", 5)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 5


def test_a_send_that_has_started_is_not_checked_again(
    engine: Engine, settings: Settings, tmp_path: Path
) -> None:
    import threading

    seed_subscribers(engine, 20)
    build_issue(engine)
    # One batch in flight, so the stop after the first batch comes before the second is sent.
    small = settings.model_copy(update={"batch_size": 10, "batches_in_flight": 1})
    stop = threading.Event()
    outbox = OutboxTransport(tmp_path / "outbox", clock=utcnow)

    def stop_after_a_batch(done: int, total: int) -> None:
        if done >= 10:
            stop.set()

    first = send_issue(
        engine, small, outbox, WEEK, now=NOW, preflight=send_gate(engine, small),
        stop=stop, progress=stop_after_a_batch,
    )  # fmt: skip
    assert (first.status, first.sent) == ("paused", 10)

    # Its content is frozen: the rest of the list gets what the first half got, even though
    # the check would now refuse to start it.
    later = small.model_copy(update={"base_url": "http://digest.example.org"})
    assert check_issue(engine, later, WEEK, now=NOW) != []
    second = send_issue(engine, later, outbox, WEEK, now=NOW, preflight=send_gate(engine, later))

    assert (second.status, second.total_sent) == ("sent", 20)


def test_digest_build_refuses_an_issue_the_send_would_refuse(
    engine: Engine, settings: Settings, starter_glossary: Glossary, tmp_path: Path
) -> None:
    seed_subscribers(engine, 2)
    public_http = settings.model_copy(update={"base_url": "http://digest.example.org"})

    with pytest.raises(QualityError) as refused:
        build_site(engine, public_http, starter_glossary, WEEK, tmp_path / "out", now=NOW)

    assert "stored as built; `digest send` refuses it" in str(refused.value)
    assert len(refused.value.problems) == 2
    assert not (tmp_path / "out").exists()
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status == "built"


def test_the_weekly_job_builds_but_does_not_send_an_issue_that_fails_the_check(
    engine: Engine, settings_env: dict[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    seed_subscribers(engine, 3)
    public_http = Settings(base_url="http://digest.example.org")

    result = run_weekly(public_http, WEEK, now=NOW)

    assert result.status == "built"
    assert result.summary is not None and result.summary.status == "failed"
    assert "List-Unsubscribe URL is not https" in (result.summary.reason or "")
    issue = get_issue(engine, WEEK)
    assert issue is not None and issue.status_reason == result.summary.reason
    assert ledger(engine) == {} and not (tmp_path / "outbox").exists()
    assert [r.levelname for r in caplog.records if r.getMessage() == "send_refused"] == ["WARNING"]


# --------------------------------------------------------------------------- digest check


def test_cli_check_says_no_problems_and_exits_0(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    seed_subscribers(engine, 3)
    build_issue(engine)

    result = runner.invoke(app, ["check", "--week", str(WEEK)])

    assert result.exit_code == 0, result.output
    assert result.output == f"{WEEK}: no problems found\n"


def test_cli_check_lists_every_problem_and_exits_1(
    engine: Engine, settings_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = seed_subscribers(engine, 2)
    build_issue(engine)
    monkeypatch.setenv("DIGEST_BASE_URL", "http://digest.example.org")

    result = runner.invoke(app, ["check", "--week", str(WEEK)])

    assert result.exit_code == 1
    for sid in ids:
        assert f"- recipient {sid}: List-Unsubscribe URL is not https (RFC 8058)" in result.output
    assert f"{WEEK}: 2 problems" in result.output


def test_cli_check_of_a_week_without_an_issue_fails(
    engine: Engine, settings_env: dict[str, str]
) -> None:
    result = runner.invoke(app, ["check", "--week", "2026-W11"])

    assert result.exit_code == 1
    assert "there is no issue for 2026-W11; build it first" in result.output
