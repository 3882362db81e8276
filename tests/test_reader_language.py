"""A reader's own language: chosen in the preference centre, taken from the browser at sign-up,
and the weekly issue delivered to each reader in theirs, once, across crashes and shared sends.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from html import unescape
from pathlib import Path

import pytest
from sqlalchemy import select, update

from digest.campaign.build import build_issue as build_real_issue
from digest.config import Settings
from digest.core.i18n import accepted_locale
from digest.core.tokens import make_token
from digest.core.tracking import tracked_links
from digest.delivery.outbox import OutboxTransport
from digest.delivery.runner import send_issue
from digest.model.issue import IssueRecord
from digest.model.subscriber import InvalidSubscriber, Subscriber
from digest.model.weeks import IsoWeek
from digest.readers.preferences import choose_language
from digest.store.db import deliveries, issues, subscribers, utcnow
from digest.store.reader_language import adopt_language, languages_in_use
from digest.store.renditions import Rendition, get_renditions, replace_renditions
from digest.store.subscribers import add_confirmed, get_subscriber
from tests.sendgrid_server import SendGridTestServer
from tests.sending import (
    HTML,
    NOW,
    TEXT,
    WEEK,
    build_issue,
    cli_env,
    lease_runs_out,
    ledger,
    mails_per_address,
    run_send,
    seed_subscribers,
    sendgrid_transport,
    start_send,
    wait_for,
)

ANN = "ann@example.org"


@pytest.fixture
def ann(engine) -> Subscriber:  # type: ignore[no-untyped-def]
    sub, _ = add_confirmed(engine, ANN, name="Ann", now=NOW - timedelta(days=30))
    return sub


def page_of(settings: Settings, sub: Subscriber) -> str:
    return f"/preferences/{make_token(settings, 'preferences', sub.id, sub.email)}"


def notice(html: str) -> str:
    found = re.search(r'id="(?:notice|error)"[^>]*>([^<]*)<', html)
    assert found, html
    return unescape(found.group(1))


# --------------------------------------------------------------------------- choosing


def test_a_reader_chooses_dutch_in_the_preference_centre(client, settings, engine, ann):
    page = client.get(page_of(settings, ann)).text
    assert '<option value="nl" lang="nl">Nederlands</option>' in page
    assert "The newsletter's own (English)</option>" in page

    saved = client.post(f"{page_of(settings, ann)}/language", data={"language": "nl"})
    assert saved.status_code == 200
    # Said, as the whole page now is, in the language just chosen.
    assert notice(saved.text) == "Opgeslagen: de volgende edities komen in het Nederlands."
    assert '<option value="nl" lang="nl" selected>Nederlands</option>' in saved.text
    assert get_subscriber(engine, ANN).language == "nl"  # type: ignore[union-attr]


def test_the_newsletters_own_language_is_stored_as_no_choice(client, settings, engine, ann):
    choose_language(engine, ann.id, "nl", now=NOW)
    saved = client.post(f"{page_of(settings, ann)}/language", data={"language": ""})
    assert notice(saved.text) == "Saved: the next issues come in English."
    assert get_subscriber(engine, ANN).language is None  # type: ignore[union-attr]


def test_a_language_digest_has_no_catalogue_for_is_refused(client, settings, engine, ann):
    refused = client.post(f"{page_of(settings, ann)}/language", data={"language": "fr"})
    assert refused.status_code == 422
    assert "en, nl" in notice(refused.text)
    assert get_subscriber(engine, ANN).language is None  # type: ignore[union-attr]
    with pytest.raises(InvalidSubscriber, match="language"):
        choose_language(engine, ann.id, "klingon", now=NOW)


def test_the_languages_in_use_are_those_readers_chose(engine, ann):
    assert languages_in_use(engine) == set()
    choose_language(engine, ann.id, "nl", now=NOW)
    assert languages_in_use(engine) == {"nl"}


# --------------------------------------------------------------------------- signing up


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("nl-NL,nl;q=0.9,en-US;q=0.8,en;q=0.7", "nl"),
        ("en-GB,en;q=0.9,nl;q=0.8", "en"),
        ("fr-FR, de;q=0.8, nl;q=0.1", "nl"),
        ("fr-FR, de;q=0.8", None),
        ("nl;q=0, en;q=0.5", "en"),
        ("", None),
        ("nl;q=nonsense, *", None),
    ],
)
def test_the_browsers_language_is_taken_when_digest_has_it(header, expected):
    assert accepted_locale(header) == expected


def test_a_sign_up_keeps_the_browsers_dutch(client, engine):
    answer = client.post(
        "/subscribe", data={"email": ANN}, headers={"Accept-Language": "nl-BE,nl;q=0.9,en;q=0.5"}
    )
    assert answer.status_code in (200, 303)
    assert get_subscriber(engine, ANN).language == "nl"  # type: ignore[union-attr]


def test_a_sign_up_in_the_newsletters_own_language_stores_no_choice(client, engine):
    client.post("/subscribe", data={"email": ANN}, headers={"Accept-Language": "en-US,en"})
    assert get_subscriber(engine, ANN).language is None  # type: ignore[union-attr]


def test_a_browser_header_never_overwrites_a_readers_choice(client, engine, ann):
    choose_language(engine, ann.id, "en", now=NOW)
    client.post("/subscribe", data={"email": ANN}, headers={"Accept-Language": "nl"})
    assert get_subscriber(engine, ANN).language == "en"  # type: ignore[union-attr]
    assert adopt_language(engine, ann.id, "nl") is False


# --------------------------------------------------------------------------- delivery

READERS = 300  # every third reads Dutch, every ninth chose English explicitly
BATCH = 20
NL_SUBJECT = "Aandacht, %%name%%"
NL_HTML = HTML.replace("<p>This week:", "<p>Deze week:").replace("lang='en'", "lang='nl'")
NL_TEXT = TEXT.replace("This week:", "Deze week:")


def language_of(i: int) -> str | None:
    return "nl" if i % 3 == 0 else ("en" if i % 9 == 1 else None)


def dutch_readers() -> set[str]:
    return {f"reader{i}@example.org" for i in range(READERS) if language_of(i) == "nl"}


@pytest.fixture
def two_language_readers(engine) -> list[int]:  # type: ignore[no-untyped-def]
    ids = seed_subscribers(engine, READERS)
    with engine.begin() as conn:
        for i, sid in enumerate(ids):
            if language_of(i):
                conn.execute(
                    update(subscribers)
                    .where(subscribers.c.id == sid)
                    .values(language=language_of(i))
                )
    return ids


def build_two_language_issue(engine, week: IsoWeek = WEEK) -> IssueRecord:  # type: ignore[no-untyped-def]
    """`tests.sending.build_issue` with a Dutch rendition beside it."""
    built = build_issue(engine, week)
    nl = Rendition("nl", NL_SUBJECT, "De term van de week", NL_HTML, NL_TEXT, None)
    with engine.begin() as conn:
        replace_renditions(conn, built.id, [nl])
    return built


def subjects_per_reader(server: SendGridTestServer) -> dict[str, list[str]]:
    """Each address's subjects as SendGrid received them, batch by batch."""
    got: dict[str, list[str]] = {}
    for batch in server.state.batches.values():
        for address in batch["emails"]:
            got.setdefault(address, []).append(batch["subject"])
    return got


def assert_each_reader_got_their_language_once(server: SendGridTestServer) -> None:
    got = subjects_per_reader(server)
    dutch = dutch_readers()
    assert set(got) == {f"reader{i}@example.org" for i in range(READERS)}
    wrong = {
        address: subjects
        for address, subjects in got.items()
        if subjects != [NL_SUBJECT if address in dutch else "Attention, %%name%%"]
    }
    assert wrong == {}
    assert server.stats()["duplicates"] == 0


def test_a_build_renders_the_issue_in_each_language_readers_chose(
    engine, settings, starter_glossary
):
    add_confirmed(engine, ANN, now=NOW - timedelta(days=3))
    plain = build_real_issue(engine, settings, starter_glossary, WEEK, now=NOW, news=[])
    assert get_renditions(engine, plain.id) == {}  # nobody chose: one rendition, as before

    dutch, _ = add_confirmed(engine, "bea@example.org", now=NOW - timedelta(days=3))
    choose_language(engine, dutch.id, "nl", now=NOW)
    rebuilt = build_real_issue(
        engine, settings, starter_glossary, WEEK, now=NOW, news=[], rebuild=True
    )
    renditions = get_renditions(engine, rebuilt.id)
    assert set(renditions) == {"nl"}
    nl = renditions["nl"]
    assert nl.html.startswith('<!doctype html><html lang="nl"')
    assert rebuilt.html is not None and rebuilt.html.startswith('<!doctype html><html lang="en"')
    assert "%%unsubscribe_url%%" in nl.html and "%%preferences_url%%" in nl.text
    assert rebuilt.links is not None
    assert set(tracked_links(nl.html, nl.text)) <= set(rebuilt.links)


def test_a_send_gives_each_reader_their_languages_rendition_once(
    engine, settings, two_language_readers
):
    build_two_language_issue(engine)
    with SendGridTestServer() as server:
        run = send_issue(
            engine,
            settings.model_copy(update={"batch_size": BATCH}),
            sendgrid_transport(server),
            WEEK,
            now=NOW,
        )
        assert run.status == "sent", run.reason
        assert_each_reader_got_their_language_once(server)
    assert ledger(engine) == {"sent": READERS}
    with engine.connect() as conn:
        locales = dict(
            conn.execute(
                select(subscribers.c.email, deliveries.c.locale).join(
                    deliveries, deliveries.c.subscriber_id == subscribers.c.id
                )
            ).all()
        )
    assert {e for e, locale in locales.items() if locale == "nl"} == dutch_readers()
    assert set(locales.values()) == {None, "nl"}


def test_an_issue_without_renditions_walks_its_readers_once_as_before(
    engine, settings, two_language_readers
):
    build_issue(engine)  # readers chose Dutch, but this issue was built in English only
    with SendGridTestServer() as server:
        run = send_issue(
            engine,
            settings.model_copy(update={"batch_size": BATCH}),
            sendgrid_transport(server),
            WEEK,
            now=NOW,
        )
        assert run.status == "sent"
        assert {b["subject"] for b in server.state.batches.values()} == {"Attention, %%name%%"}
        assert server.stats()["batches"] == READERS // BATCH  # no batch split by language


def test_a_reader_who_changes_language_mid_send_still_gets_one_mail(
    engine, settings, two_language_readers
):
    # A Dutch reader, not claimed yet, moves to English once the English walk has passed them:
    # neither walk finds them, and the send walks again before it calls the issue sent.
    build_two_language_issue(engine)
    moved: list[str] = []

    class Switching(OutboxTransport):
        def send(self, message):  # type: ignore[no-untyped-def]
            if not moved:
                with engine.begin() as conn:
                    conn.execute(
                        update(subscribers)
                        .where(subscribers.c.email == "reader3@example.org")
                        .values(language="en")
                    )
                moved.append("reader3@example.org")
            return super().send(message)

    outbox = settings.outbox_dir
    run = send_issue(
        engine,
        settings.model_copy(update={"batch_size": BATCH}),
        Switching(outbox, clock=utcnow),
        WEEK,
        now=NOW,
    )
    assert run.status == "sent"
    assert ledger(engine) == {"sent": READERS}
    counts = mails_per_address(Path(outbox))
    assert set(counts.values()) == {1} and len(counts) == READERS
    assert moved == ["reader3@example.org"]
    (mail,) = [
        m
        for m in (
            message_from_bytes(p.read_bytes(), policy=policy.default)
            for p in Path(outbox).glob("*.eml")
        )
        if m["To"].addresses[0].addr_spec == "reader3@example.org"
    ]
    assert str(mail["Subject"]).startswith("Attention")  # claimed after the move: English


# --------------------------------------------------------------------------- crashes


@pytest.fixture
def sendgrid() -> Iterator[SendGridTestServer]:
    with SendGridTestServer() as server:
        server.state.keep_payloads = 0
        yield server


@pytest.fixture
def env(settings_env: dict[str, str], sendgrid: SendGridTestServer) -> dict[str, str]:
    return cli_env(
        settings_env,
        sendgrid,
        DIGEST_BATCH_SIZE=str(BATCH),
        DIGEST_SENDGRID_TIMEOUT="1",
        DIGEST_SEND_LEASE="1",
        DIGEST_BATCHES_IN_FLIGHT="4",
    )


def _open_locales(engine, week: IsoWeek) -> set[str | None]:  # type: ignore[no-untyped-def]
    """The renditions of the batches a kill left claimed (in flight)."""
    with engine.connect() as conn:
        return set(
            conn.execute(
                select(deliveries.c.locale)
                .select_from(deliveries.join(issues))
                .where(issues.c.week == str(week), deliveries.c.status == "claimed")
            ).scalars()
        )


@pytest.mark.slow
def test_a_two_language_send_killed_mid_send_resumes_each_reader_once_in_their_language(
    engine, env, sendgrid, two_language_readers
):
    # 200 readers of the issue's own language are 10 batches, then 100 Dutch ones 5 more: a kill
    # after 3 accepted batches lands in the English walk, one after 12 in the Dutch walk.
    rng = random.Random(f"languages-{engine.dialect.name}")
    left_open: list[set[str | None]] = []
    for trial, kill_after in enumerate([3, 12, rng.randrange(1, 15)]):
        week = WEEK + trial
        build_two_language_issue(engine, week)
        sendgrid.state.reset()
        sendgrid.state.delay = 0.1  # a request spends a moment at SendGrid: kills land inside
        proc = start_send(env, week)
        wait_for(lambda: sendgrid.stats()["accepted"] >= kill_after, 60)  # noqa: B023
        time.sleep(rng.uniform(0.0, 0.05))
        assert proc.poll() is None, "the send finished before it could be killed"
        proc.kill()
        proc.wait(timeout=10)
        left_open.append(_open_locales(engine, week))
        # The lease's lapse stands for minutes, in which SendGrid has long finished the killed
        # sender's request (the test server records it only after its 0.1 s delay): a resumed
        # run asking sooner would be told "not found" about a batch on its way in.
        wait_for(lambda: sendgrid.state.open_requests == 0, 10, "SendGrid's open requests")
        lease_runs_out(engine, week)
        done = run_send(env, week)
        assert done.returncode == 0, done.stdout + done.stderr
        assert ledger(engine, week) == {"sent": READERS}
        assert_each_reader_got_their_language_once(sendgrid)
    # The kills left batches of both languages to settle (looked up, or given up as uncertain:
    # with SendGrid's lookup, none here).
    assert None in left_open[0] and "nl" in left_open[1], left_open


@pytest.mark.slow
def test_two_senders_share_a_two_language_send_on_postgresql(
    engine, env, sendgrid, two_language_readers
):
    if engine.dialect.name != "postgresql":
        pytest.skip("shared sends are PostgreSQL's (SQLite sends alone: the crash test)")
    build_two_language_issue(engine)
    sendgrid.state.delay = 0.05
    pair = [start_send(env), start_send(env)]
    outputs = [(p.wait(timeout=180), p.communicate()[0].decode()) for p in pair]
    assert [code for code, _ in outputs] == [0, 0], outputs
    assert ledger(engine) == {"sent": READERS}
    assert_each_reader_got_their_language_once(sendgrid)
