"""Each desk page and action through the TestClient, on SQLite and PostgreSQL."""

from __future__ import annotations

import re
from pathlib import Path

from digest.model.weeks import current_week
from digest.store import audit, db
from digest.store.issues import get_issue
from digest.store.queue import list_queue
from digest.store.subscribers import add_confirmed, get_subscriber
from tests.desk_client import NOW, desk_client, log_in, make_editor


def test_dashboard_shows_the_next_issue_glossary_readers_and_audit(settings_env, engine):
    make_editor(engine)
    add_confirmed(engine, "reader@example.org", now=NOW)
    with desk_client() as client:
        log_in(client)
        page = client.get("/admin/")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "nonce-" in page.headers["content-security-policy"]
    for section in ('id="next-issue"', 'id="glossary-health"', 'id="subscribers"', 'id="audit"'):
        assert section in page.text
    assert "terms, all valid" in page.text
    assert "<td>active</td><td>1</td>" in page.text
    assert "editor.login" in page.text  # the audit log, newest first


def test_queue_add_pin_move_remove_with_the_clis_messages_and_audit(settings_env, engine):
    make_editor(engine)
    week = str(current_week(db.utcnow(), get_settings_zone()) + 2)
    with desk_client() as client:
        token = log_in(client)
        assert 'list="term-names"' in client.get("/admin/queue").text
        added = client.post("/admin/queue", data={"slug": "transformer", "csrf_token": token})
        assert "Queued transformer at position 1." in added.text
        client.post("/admin/queue", data={"slug": "Attention Mechanism", "csrf_token": token})
        unknown = client.post("/admin/queue", data={"slug": "transfromer", "csrf_token": token})
        assert (
            unknown.status_code == 422
            and "No term &#39;transfromer&#39; in the glossary" in unknown.text
        )
        again = client.post("/admin/queue", data={"slug": "transformer", "csrf_token": token})
        assert "already in the queue at position 1" in again.text
        pinned = client.post(
            "/admin/queue/pin", data={"slug": "transformer", "week": week, "csrf_token": token}
        )
        assert f"Pinned transformer to {week}." in pinned.text
        bad_week = client.post(
            "/admin/queue/pin",
            data={"slug": "transformer", "week": "2026-W99", "csrf_token": token},
        )
        assert bad_week.status_code == 422
        moved = client.post(
            "/admin/queue/move",
            data={"slug": "attention", "direction": "up", "csrf_token": token},
        )
        assert "Moved attention to position 1." in moved.text
        assert [e.slug for e in list_queue(engine)] == ["attention", "transformer"]
        assert str(list_queue(engine)[1].week) == week
        removed = client.post(
            "/admin/queue/remove", data={"slug": "attention", "csrf_token": token}
        )
        assert "Removed attention from the queue." in removed.text
    actions = [e.action for e in audit.recent(engine, action_prefix="queue.")]
    assert actions == ["queue.remove", "queue.move", "queue.pin", "queue.add", "queue.add"]


def get_settings_zone():  # type: ignore[no-untyped-def]
    from digest.config import get_settings

    return get_settings().zone


def test_an_issue_is_built_previewed_edited_test_sent_approved_and_held(settings_env, engine):

    from digest.config import get_settings
    from digest.core.reader_links import preferences_url
    from digest.core.tokens import read_token

    make_editor(engine)
    reader, _ = add_confirmed(engine, "reader@example.org", now=NOW)
    week = str(current_week(db.utcnow(), get_settings_zone()) + 1)
    outbox = Path(settings_env["DIGEST_OUTBOX_DIR"])
    with desk_client() as client:
        token = log_in(client)
        assert "Build it now" in client.get(f"/admin/issues/{week}").text
        built = client.post(f"/admin/issues/{week}/build", data={"csrf_token": token})
        assert built.status_code == 200 and f"Built {week}" in built.text
        assert "srcdoc=" in built.text and "%%preferences_url%%" not in built.text
        # Links filled for a stand-in reader, never a real reader's own links. The tokens carry
        # the second they were signed in, so they are read back, not compared as strings.
        conf = get_settings()
        prefix = re.escape(preferences_url(conf, 0, "x@example.org").rsplit("/", 1)[0] + "/")
        tokens = set(re.findall(prefix + r"([A-Za-z0-9_\-.]+)", built.text))
        assert tokens, "the preview has no preferences link"
        for found in tokens:
            data = read_token(conf, "preferences", found)
            assert data.subscriber_id == 0 and data.matches("sample@example.org")
            assert not data.matches(reader.email)
        phone = client.get(f"/admin/issues/{week}?view=phone")
        assert "width: 375px" in phone.text
        subject = client.post(
            f"/admin/issues/{week}/subject",
            data={"subject": "A better subject", "preheader": "", "csrf_token": token},
        )
        assert "Saved the subject" in subject.text
        assert (
            get_issue(engine, current_week(db.utcnow(), get_settings_zone()) + 1).subject
            == "A better subject"
        )
        bad = client.post(
            f"/admin/issues/{week}/subject",
            data={"subject": "   ", "preheader": "", "csrf_token": token},
        )
        assert bad.status_code == 422
        tested = client.post(f"/admin/issues/{week}/test", data={"csrf_token": token})
        assert "A test copy of" in tested.text and "test copy to ann@example.org" in tested.text
        assert len(list(outbox.glob("*.eml"))) == 1
        approved = client.post(f"/admin/issues/{week}/approve", data={"csrf_token": token})
        assert "Approved" in approved.text
        assert (
            get_issue(engine, current_week(db.utcnow(), get_settings_zone()) + 1).approved_by
            == "ann@example.org"
        )
        held = client.post(
            f"/admin/issues/{week}/hold", data={"csrf_token": token, "reason": "typo"}
        )
        assert "Held" in held.text
        assert (
            get_issue(engine, current_week(db.utcnow(), get_settings_zone()) + 1).status == "held"
        )
        listing = client.get("/admin/issues")
        assert week in listing.text and "held" in listing.text
    actions = {e.action for e in audit.recent(engine, target=week, limit=50)}
    assert {
        "issue.build",
        "issue.subject",
        "issue.test_send",
        "issue.approve",
        "issue.hold",
    } <= actions


def test_send_now_asks_first_then_sends_in_the_background(settings_env, engine):
    make_editor(engine)
    add_confirmed(engine, "reader@example.org", now=NOW)
    this = current_week(db.utcnow(), get_settings_zone())
    with desk_client() as client:
        token = log_in(client)
        client.post(f"/admin/issues/{this}/build", data={"csrf_token": token})
        asked = client.post(f"/admin/issues/{this}/send", data={"csrf_token": token})
        assert "Yes, send" in asked.text and "future week" not in asked.text
        early = this + 1
        client.post(f"/admin/issues/{early}/build", data={"csrf_token": token})
        warned = client.post(f"/admin/issues/{early}/send", data={"csrf_token": token})
        assert "a future week's issue" in warned.text
        assert get_issue(engine, this).status == "built"
        started = client.post(
            f"/admin/issues/{this}/send", data={"csrf_token": token, "confirm": "yes"}
        )
        assert "has started" in started.text
        client.app.state.desk_sends.wait(60)
        assert get_issue(engine, this).status == "sent"
        assert "ended: sent" in client.get(f"/admin/issues/{this}").text


def test_send_now_is_refused_without_approval_when_it_is_required(settings_env, engine):
    make_editor(engine)
    this = current_week(db.utcnow(), get_settings_zone())
    with desk_client(require_approval=True) as client:
        token = log_in(client)
        client.post(f"/admin/issues/{this}/build", data={"csrf_token": token})
        refused = client.post(
            f"/admin/issues/{this}/send", data={"csrf_token": token, "confirm": "yes"}
        )
        assert refused.status_code == 422 and "needs approval" in refused.text
        assert get_issue(engine, this).status == "built"


def test_terms_browse_search_and_history(settings_env, engine):
    make_editor(engine)
    with desk_client() as client:
        log_in(client)
        found = client.get("/admin/terms?q=attention")
        assert ">Attention</a>" in found.text and ">FlashAttention</a>" in found.text
        assert ">Transformer</a>" not in found.text
        term = client.get("/admin/terms/transformer")
        assert term.status_code == 200 and "Never featured yet." in term.text
        assert client.get("/admin/terms/no-such-term").status_code == 404


def test_subscribers_search_export_and_erase_with_confirmation(settings_env, engine):
    make_editor(engine, role="admin")
    add_confirmed(engine, "reader@example.org", name="Rea", now=NOW)
    with desk_client() as client:
        token = log_in(client)
        found = client.get("/admin/subscribers?q=READER")
        assert "reader@example.org" in found.text
        export = client.get("/admin/subscribers/export.csv")
        assert export.headers["content-type"].startswith("text/csv")
        assert export.text.splitlines()[1].startswith("reader@example.org,Rea,active")
        asked = client.post(
            "/admin/subscribers/erase", data={"csrf_token": token, "email": "reader@example.org"}
        )
        assert "Yes, erase them" in asked.text
        assert get_subscriber(engine, "reader@example.org") is not None
        erased = client.post(
            "/admin/subscribers/erase",
            data={"csrf_token": token, "email": "reader@example.org", "confirm": "yes"},
        )
        assert "Erased r…@example.org" in erased.text
        assert get_subscriber(engine, "reader@example.org") is None
        bad = client.post(
            "/admin/subscribers/import",
            data={"csrf_token": token},
            files={"file": ("p.csv", b"email\nnot-an-address\nok@example.org\n", "text/csv")},
        )
        assert "line 2:" in bad.text
    entries = audit.recent(engine)
    erase = next(e for e in entries if e.action == "subscriber.erase")
    assert "reader@example.org" not in f"{erase.target} {erase.detail}"  # erased means erased
    assert {"subscribers.export", "subscribers.import"} <= {e.action for e in entries}


def test_a_broken_term_shows_on_the_dashboard_and_terms_page_and_stops_nothing(
    settings_env, engine, make_terms
):
    from tests.conftest import term_text

    folder = make_terms(
        {
            "good-term": term_text("Good Term"),
            "broken-term": term_text("Broken Term", difficulty="impossible"),
        }
    )
    make_editor(engine)
    with desk_client(terms_dir=folder) as client:
        log_in(client)
        dashboard = client.get("/admin/")
        assert dashboard.status_code == 200
        assert "1 usable term; 1 problem" in dashboard.text
        assert "broken-term.md:" in dashboard.text and "difficulty" in dashboard.text
        assert "Good Term" in dashboard.text  # the next issue still has a term
        terms = client.get("/admin/terms")
        assert "Left out: 1 problem" in terms.text and ">Good Term</a>" in terms.text
        assert "broken-term.md:" in client.get("/admin/terms/broken-term").text


def test_pages_still_answer_when_no_term_is_usable(settings_env, engine, make_terms):
    from tests.conftest import term_text

    folder = make_terms({"only-term": term_text("Only", difficulty="impossible")})
    make_editor(engine)
    with desk_client(terms_dir=folder) as client:
        log_in(client)
        for path in ("/admin/", "/admin/queue", "/admin/issues", "/admin/terms"):
            assert client.get(path).status_code == 200, path
        assert "Nothing is planned" in client.get("/admin/").text


def test_every_desk_page_answers_head_like_get_and_neither_changes_anything(settings_env, engine):
    from tests.test_web_hardening import get_routes

    make_editor(engine)
    add_confirmed(engine, "reader@example.org", now=NOW)
    week = current_week(db.utcnow(), get_settings_zone()) + 1
    with desk_client() as client:
        token = log_in(client)
        client.post(f"/admin/issues/{week}/build", data={"csrf_token": token})
        urls = {
            "/admin/login": "/admin/login",
            "/admin/": "/admin/",
            "/admin/queue": "/admin/queue",
            "/admin/issues": "/admin/issues",
            "/admin/issues/{week}": f"/admin/issues/{week}",
            "/admin/terms": "/admin/terms",
            "/admin/terms/{slug}": "/admin/terms/transformer",
            "/admin/subscribers": "/admin/subscribers?q=reader",
            "/admin/subscribers/export.csv": "/admin/subscribers/export.csv",
            "/admin/stats": "/admin/stats",
        }
        assert {r for r in get_routes(client.app) if r.startswith("/admin")} == set(urls)
        before = len(audit.recent(engine, limit=100))
        for url in urls.values():
            get, head = client.get(url), client.head(url)
            assert get.status_code == 200, url
            assert head.status_code == 200 and head.content == b"", url
            assert head.headers["content-type"] == get.headers["content-type"], url
        assert len(audit.recent(engine, limit=100)) == before + 1  # the one GET export


def test_with_local_time_delivery_the_dashboard_names_the_first_and_last_zone(settings_env, engine):
    make_editor(engine)
    for email, zone in (("a@example.org", "Asia/Tokyo"), ("b@example.org", "America/Chicago")):
        add_confirmed(engine, email, timezone=zone, now=NOW)
    with desk_client(local_time_delivery=True) as client:
        log_in(client)
        page = client.get("/admin/").text
    assert "<dt>First zone</dt><dd>Asia/Tokyo: " in page
    assert "<dt>Last zone</dt><dd>America/Chicago: " in page


def test_one_desk_send_at_a_time(monkeypatch, settings_env):
    import threading

    from digest.campaign.lifecycle import WeeklyResult
    from digest.config import get_settings
    from digest.model.weeks import IsoWeek
    from digest.web.desk import sending

    release = threading.Event()
    calls: list[tuple[IsoWeek, bool]] = []

    def send_week(settings, week, *, force=False):  # type: ignore[no-untyped-def]
        calls.append((week, force))
        release.wait(30)
        return WeeklyResult(week, "sent")

    monkeypatch.setattr(sending, "send_week", send_week)
    runner = sending.SendRunner()
    week = IsoWeek(2026, 50)
    assert runner.start(get_settings(), week, actor="ann@example.org", force=True)
    assert not runner.start(get_settings(), week + 1, actor="bob@example.org", force=True)
    assert runner.latest is not None and runner.latest.running
    release.set()
    runner.wait(30)
    assert calls == [(week, True)]
    assert runner.latest == sending.DeskSend(week, "ann@example.org", running=False, outcome="sent")
    assert runner.start(get_settings(), week + 1, actor="bob@example.org", force=False)
    runner.wait(30)
