"""The desk's login, sessions and CSRF: what an attacker tries, and what a person gets."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from digest.campaign.editors import remove_editor
from digest.store import db
from digest.store.db import editor_sessions
from digest.store.queue import list_queue
from tests.desk_client import NOW, PASSWORD, csrf, desk_client, log_in, login_form, make_editor


def test_every_desk_page_sends_a_visitor_without_a_session_to_login(settings_env, engine):
    with desk_client() as client:
        for path in ("/admin/", "/admin/queue", "/admin/issues", "/admin/issues/2026-W50",
                     "/admin/terms", "/admin/subscribers", "/admin/subscribers/export.csv"):  # fmt: skip
            answer = client.get(path)
            assert answer.status_code == 303, path
            assert answer.headers["location"].startswith("/admin/login?next=/admin/"), path
        posted = client.post("/admin/queue", data={"slug": "transformer"})
        assert posted.status_code == 303 and list_queue(engine) == []


def test_login_sets_a_hardened_session_cookie_and_goes_back_to_next(settings_env, engine):
    make_editor(engine)
    with desk_client() as client:
        token = csrf(client.get("/admin/login?next=/admin/queue"))
        answer = client.post(
            "/admin/login",
            data={"email": "ANN@example.org", "password": PASSWORD, "csrf_token": token,
                  "next": "/admin/queue"},
        )  # fmt: skip
        assert answer.status_code == 303
        assert answer.headers["location"] == "/admin/queue"
        cookie = next(
            c for c in answer.headers.get_list("set-cookie") if c.startswith("digest_desk=")
        )
        for part in (
            "HttpOnly",
            "SameSite=lax",
            "Secure",
            "Path=/admin",
            "Max-Age=43200",
            "expires=",
        ):
            assert part.lower() in cookie.lower(), cookie
        assert client.get("/admin/queue").status_code == 200


def test_no_open_redirect_after_login(settings_env, engine):
    make_editor(engine)
    for evil in ("https://evil.example/admin/", "//evil.example/admin/", "/\\evil.example",
                 "/issues/", "/admin/../x"):  # fmt: skip
        with desk_client() as client:
            token = csrf(client.get("/admin/login"))
            answer = client.post(
                "/admin/login",
                data={"email": "ann@example.org", "password": PASSWORD, "csrf_token": token,
                      "next": evil},
            )  # fmt: skip
            assert answer.headers["location"] == "/admin/", evil


def test_wrong_password_and_unknown_address_answer_identically(settings_env, engine):
    make_editor(engine)
    with desk_client() as client:
        wrong = login_form(client, "ann@example.org", "not the password at all")
        unknown = login_form(client, "nobody@example.org", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert "do not match an editor account" in wrong.text
    assert wrong.text.replace("ann@", "X@") == unknown.text.replace("nobody@", "X@")
    assert "digest_desk=" not in str(wrong.headers.get_list("set-cookie"))


def test_failed_logins_are_throttled_per_account_and_per_client(settings_env, engine):
    make_editor(engine)
    with desk_client(desk_login_rate_limit=3) as client:
        for _ in range(3):
            assert login_form(client, "ann@example.org", "wrong password!").status_code == 401
        throttled = login_form(client, "ann@example.org", PASSWORD)  # even the right one
        assert throttled.status_code == 429
        assert "Too many failed logins" in throttled.text and "Retry-After" in throttled.headers
        # The client address is throttled too: another account from it waits as well.
        other = login_form(client, "bob@example.org", PASSWORD)
        assert other.status_code == 429
        assert other.text.replace("bob@", "X@") == throttled.text.replace("ann@", "X@")


def test_a_new_session_id_at_every_login_and_the_old_one_ends(settings_env, engine):
    make_editor(engine)
    with desk_client() as client:
        log_in(client)
        first = (
            client.cookies.get("digest_desk", domain="testserver.local")
            or client.cookies["digest_desk"]
        )
        log_in(client)
        second = client.cookies["digest_desk"]
        assert first != second
    with desk_client() as planted:
        planted.cookies.set("digest_desk", first, domain="testserver.local", path="/admin")
        assert planted.get("/admin/").status_code == 303  # the replaced session is gone


def test_the_session_cookie_is_signed_and_a_bare_or_forged_one_is_refused(settings_env, engine):
    make_editor(engine)
    with desk_client() as client:
        log_in(client)
        signed = client.cookies["digest_desk"]
        assert client.get("/admin/").status_code == 200
    session_id, _, signature = signed.rpartition(".")
    assert session_id and signature  # id.signature, as itsdangerous signs it
    for cookie in (session_id, f"{session_id}.{'A' * len(signature)}", signed + "x"):
        with desk_client() as forged:
            forged.cookies.set("digest_desk", cookie, domain="testserver.local", path="/admin")
            assert forged.get("/admin/").status_code == 303, cookie
    with desk_client() as again:  # the session itself is still alive
        again.cookies.set("digest_desk", signed, domain="testserver.local", path="/admin")
        assert again.get("/admin/").status_code == 200


def test_a_session_expires_after_max_age_without_activity(settings_env, engine):
    make_editor(engine)
    with desk_client() as client:
        log_in(client)
        assert client.get("/admin/").status_code == 200
        with engine.begin() as conn:
            conn.execute(update(editor_sessions).values(expires_at=NOW - timedelta(seconds=1)))
        answer = client.get("/admin/queue")
        assert answer.status_code == 303
        with engine.connect() as conn:
            assert conn.execute(select(editor_sessions)).all() == []


def test_logout_ends_the_session(settings_env, engine):
    make_editor(engine)
    with desk_client() as client:
        token = log_in(client)
        session = client.cookies["digest_desk"]
        assert client.post("/admin/logout", data={}).status_code == 403  # no token: still in
        assert client.get("/admin/").status_code == 200
        out = client.post("/admin/logout", data={"csrf_token": token})
        assert out.status_code == 303 and out.headers["location"] == "/admin/login"
    with desk_client() as again:
        again.cookies.set("digest_desk", session, domain="testserver.local", path="/admin")
        assert again.get("/admin/").status_code == 303


def test_a_removed_editor_is_logged_out_at_once(settings_env, engine):
    make_editor(engine)
    with desk_client() as client:
        log_in(client)
        remove_editor(engine, "ann@example.org", actor="test", now=NOW)
        assert client.get("/admin/").status_code == 303


def test_an_editor_gets_403_where_only_an_admin_may_act(settings_env, engine):
    make_editor(engine)
    make_editor(engine, "root@example.org", role="admin")
    csv = ("people.csv", b"email\nnew@example.org\n", "text/csv")
    with desk_client() as client:
        token = log_in(client)
        page = client.get("/admin/subscribers")
        assert "Import a CSV" not in page.text
        imported = client.post(
            "/admin/subscribers/import", data={"csrf_token": token}, files={"file": csv}
        )
        assert imported.status_code == 403 and "Only an admin" in imported.text
        erased = client.post(
            "/admin/subscribers/erase", data={"csrf_token": token, "email": "x@example.org"}
        )
        assert erased.status_code == 403
    with desk_client() as admin:
        token = log_in(admin, "root@example.org")
        ok = admin.post(
            "/admin/subscribers/import",
            data={"csrf_token": token, "confirmed": "yes"},
            files={"file": csv},
        )
        assert ok.status_code == 200 and "added 1" in ok.text


def test_a_post_without_the_sessions_csrf_token_is_refused_and_changes_nothing(
    settings_env, engine
):
    make_editor(engine)
    make_editor(engine, "bob@example.org")
    with desk_client() as other:
        bobs = log_in(other, "bob@example.org")
    with desk_client() as client:
        token = log_in(client)
        for data in ({}, {"csrf_token": "forged"}, {"csrf_token": bobs}):
            added = client.post("/admin/queue", data={"slug": "transformer", **data})
            assert added.status_code == 403 and "Nothing was changed" in added.text
            approved = client.post("/admin/issues/2026-W50/approve", data=data)
            assert approved.status_code == 403
            built = client.post("/admin/issues/2026-W50/build", data=data)
            assert built.status_code == 403
        assert list_queue(engine) == []
        assert (
            client.post(
                "/admin/queue", data={"slug": "transformer", "csrf_token": token}
            ).status_code
            == 200
        )
        assert [e.slug for e in list_queue(engine)] == ["transformer"]


def test_the_login_form_needs_its_own_csrf_pair(settings_env, engine):
    make_editor(engine)
    with desk_client() as client:
        no_cookie = client.post(
            "/admin/login",
            data={"email": "ann@example.org", "password": PASSWORD, "csrf_token": "x"},
        )
        assert no_cookie.status_code == 403
        token = csrf(client.get("/admin/login"))
    with desk_client() as attacker:  # a token from another browser, without its cookie
        attacker.get("/admin/login")
        answer = attacker.post(
            "/admin/login",
            data={"email": "ann@example.org", "password": PASSWORD, "csrf_token": token},
        )
        assert answer.status_code == 403
        assert "digest_desk=" not in str(answer.headers.get_list("set-cookie"))


def test_each_request_moves_the_sessions_expiry_on(settings_env, engine):
    make_editor(engine)
    with desk_client(desk_session_max_age=600) as client:
        log_in(client)
        with engine.begin() as conn:
            conn.execute(
                update(editor_sessions).values(expires_at=db.utcnow() + timedelta(seconds=5))
            )
        page = client.get("/admin/terms")
        assert "Max-Age=600" in page.headers["set-cookie"]
        with engine.connect() as conn:
            expires = conn.execute(select(editor_sessions.c.expires_at)).scalar_one()
        assert expires > db.utcnow() + timedelta(seconds=590)


def test_bodies_are_bounded_the_import_more_generously_than_the_forms(settings_env, engine):
    from digest.web.desk import MAX_IMPORT_BYTES

    make_editor(engine, role="admin")
    with desk_client() as client:
        token = log_in(client)
        form = client.post("/admin/queue", data={"csrf_token": token, "note": "x" * 20_000})
        assert form.status_code == 413
        small = b"email\n" + b"".join(f"r{i}@example.org\n".encode() for i in range(1500))
        assert len(small) > 16 * 1024
        ok = client.post(
            "/admin/subscribers/import",
            data={"csrf_token": token, "confirmed": "yes"},
            files={"file": ("r.csv", small, "text/csv")},
        )
        assert ok.status_code == 200 and "added 1500" in ok.text
        huge = client.post(
            "/admin/subscribers/import",
            data={"csrf_token": token},
            files={"file": ("r.csv", b"x" * (MAX_IMPORT_BYTES + 1), "text/csv")},
        )
        assert huge.status_code == 413


def test_a_failed_login_keeps_where_it_was_going(settings_env, engine):
    make_editor(engine)
    with desk_client() as client:
        token = csrf(client.get("/admin/login?next=/admin/terms?q=lora"))
        failed = client.post(
            "/admin/login",
            data={"email": "ann@example.org", "password": "nope nope nope", "csrf_token": token,
                  "next": "/admin/terms?q=lora"},
        )  # fmt: skip
        assert 'name="next" value="/admin/terms?q=lora"' in failed.text
        again = client.post(
            "/admin/login",
            data={"email": "ann@example.org", "password": PASSWORD, "csrf_token": csrf(failed),
                  "next": "/admin/terms?q=lora"},
        )  # fmt: skip
        assert again.headers["location"] == "/admin/terms?q=lora"
