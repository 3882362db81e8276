"""The language each reader reads in: their choice, what a sign-up's browser said, and which
languages the audience of a send is in (the renditions a build makes).

NULL in `subscribers.language` is the newsletter's own language (DIGEST_LOCALE), so a reader
who never chose follows the newsletter should it change.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, select, update

from digest.model.subscriber import Subscriber
from digest.store.db import subscribers
from digest.store.subscribers import get_subscriber

__all__ = ["adopt_language", "languages_in_use", "set_language"]


def set_language(
    engine: Engine, subscriber_id: int, language: str | None, *, now: datetime
) -> Subscriber | None:
    """Store the reader's language (None: the newsletter's own), already checked by the
    caller against the available locales; None when the subscriber is gone."""
    with engine.begin() as conn:
        conn.execute(
            update(subscribers)
            .where(subscribers.c.id == subscriber_id)
            .values(language=language, updated_at=now)
        )
        return get_subscriber(conn, subscriber_id)


def adopt_language(engine: Engine, subscriber_id: int, language: str) -> bool:
    """Take a sign-up's browser language for a reader who has chosen none: a choice made in
    the preference centre is never overwritten by a header. True when it was stored."""
    with engine.begin() as conn:
        done = conn.execute(
            update(subscribers)
            .where(subscribers.c.id == subscriber_id, subscribers.c.language.is_(None))
            .values(language=language)
        )
    return done.rowcount == 1


def languages_in_use(engine: Engine) -> set[str]:
    """The languages readers who may get the next issue chose (active or pending; NULL, the
    newsletter's own, left out)."""
    query = (
        select(subscribers.c.language)
        .where(subscribers.c.language.is_not(None), subscribers.c.status.in_(("active", "pending")))
        .distinct()
    )
    with engine.connect() as conn:
        return {str(language) for language in conn.execute(query).scalars()}
