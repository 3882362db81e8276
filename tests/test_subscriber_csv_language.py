"""The subscriber CSV's `language` column: export writes each reader's language, import reads it
(any case, a regional tag for its language), an unknown one is refused for its row alone, and an
empty cell keeps what the reader chose."""

from __future__ import annotations

import io

from sqlalchemy import Engine, select

from digest.store.db import subscribers, utcnow
from digest.store.subscriber_csv import export_csv, import_csv


def _import(engine: Engine, text: str):  # type: ignore[no-untyped-def]
    return import_csv(engine, io.StringIO(text).readlines(), confirmed=True, now=utcnow())


def _languages(engine: Engine) -> dict[str, str | None]:
    with engine.connect() as conn:
        rows = conn.execute(select(subscribers.c.email, subscribers.c.language)).all()
    return {email: language for email, language in rows}


def test_import_reads_languages_and_refuses_an_unknown_one_by_its_line(engine: Engine) -> None:
    report = _import(
        engine,
        "email,name,language\n"
        "ann@example.org,Ann,nl\n"
        "bob@example.org,Bob,NL-be\n"
        "cy@example.org,Cy,fr\n"
        "dee@example.org,Dee,\n"
        "eve@example.org,Eve,EN\n",
    )
    assert report.added == 4
    assert [(e.line, str(e)) for e in report.errors] == [
        (4, "line 4: language: no catalogue for 'fr'; one of en, nl")
    ]
    assert _languages(engine) == {
        "ann@example.org": "nl",
        "bob@example.org": "nl",
        "dee@example.org": None,
        "eve@example.org": "en",
    }


def test_an_empty_cell_keeps_the_readers_choice_and_a_new_one_replaces_it(engine: Engine) -> None:
    _import(engine, "email,language\nann@example.org,nl\nbob@example.org,nl\n")
    report = _import(engine, "email,language\nann@example.org,\nbob@example.org,en\n")
    assert (report.updated, report.unchanged) == (1, 1)
    assert _languages(engine) == {"ann@example.org": "nl", "bob@example.org": "en"}


def test_export_writes_the_language_and_the_file_round_trips(engine: Engine) -> None:
    _import(engine, "email,name,timezone,language\nann@example.org,Ann,Europe/Amsterdam,nl\n")
    _import(engine, "email\nbob@example.org\n")
    out = io.StringIO()
    export_csv(engine, out)
    assert out.getvalue() == (
        "email,name,status,timezone,language\n"
        "ann@example.org,Ann,active,Europe/Amsterdam,nl\n"
        "bob@example.org,,active,,\n"
    )
    with engine.begin() as conn:
        conn.execute(subscribers.delete())
    report = _import(engine, out.getvalue())
    assert report.added == 2 and not report.errors
    assert _languages(engine) == {"ann@example.org": "nl", "bob@example.org": None}
